"""mkdocs hooks: the reference pages are generated at build time (see ``refgen``) and handed to mkdocs
as in-memory files, so nothing generated is written into ``docs/`` or committed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from refgen.pages import PAGES  # found through the path above


def on_files(files: Any, config: Any, **_: Any) -> Any:
    from mkdocs.structure.files import File

    for src_uri, generate in PAGES.items():
        files.append(File.generated(config, src_uri, content=generate()))
    return files
