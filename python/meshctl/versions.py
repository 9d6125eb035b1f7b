"""What this install is: the meshctl package, its data plane (the Rust
extension ``meshctl._core``) and the Python running them. ``meshctl version``
prints it, ``GET /api/v1/version`` answers it, and every sidecar and gateway
reports ``agent()`` in its registration (``SidecarPublic.version``), so that
``meshctl check`` can find a mesh running mixed versions.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

from meshctl import _core


def beside(package_dir: Path) -> str | None:
    """The version in the dist-info beside `package_dir` (a wheel install): what importlib.metadata
    reads, without importing it (zipfile, email, csv...: ~2.4 MB of every sidecar's memory)."""
    for dist in package_dir.parent.glob("meshctl-*.dist-info"):
        try:
            with (dist / "METADATA").open(encoding="utf-8") as f:
                for line in f:
                    if line.startswith("Version:"):
                        return line.partition(":")[2].strip()
                    if not line.strip():  # the headers end
                        break
        except OSError:
            continue
    return None


@functools.cache
def package_version() -> str:
    """The meshctl package's installed version (read once: a sidecar reports it at every heartbeat)."""
    found = beside(Path(__file__).resolve().parent)
    if found is not None:
        return found
    from importlib import metadata  # an editable install: the dist-info is elsewhere

    try:
        return metadata.version("meshctl")
    except metadata.PackageNotFoundError:  # run from a source tree without an install
        return _core.__version__


def versions() -> dict[str, str]:
    """{"meshctl", "data_plane", "python"}. The two differ only in an editable install whose
    extension was not rebuilt: the package's from its metadata, the data plane's from the extension."""
    return {"meshctl": package_version(), "data_plane": _core.__version__, "python": platform.python_version()}


def agent() -> str:
    """What a sidecar reports: `meshctl 0.1.0 / data plane 0.1.0`."""
    v = versions()
    return f"meshctl {v['meshctl']} / data plane {v['data_plane']}"
