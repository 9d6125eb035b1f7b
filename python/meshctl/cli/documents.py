"""Reading the documents ``apply -f``, ``delete -f`` and ``diff -f`` take: YAML
or JSON files, directories of them, or stdin, each document remembering where
it came from for error messages.

Bounded and fast: files over the control plane's request-size limit are
refused before they are read (stdin: as soon as it passes it), and so are more
documents than one apply takes (``meshctl.control.limits``; the same
``MESHCTL_*`` variables raise both). JSON is read by the json module, YAML by
libyaml when PyYAML has it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshctl.cli.api import fail
from meshctl.control import limits

if TYPE_CHECKING:
    import yaml


@dataclass(frozen=True)
class Origin:
    """Where a document came from, to point at it in errors: `mesh.yaml[2]` is the file's third
    YAML document, `list.yaml[0][4]` the fifth item of a list document (`get -o json` of a list),
    `list.yaml[0].items[4]` of a `kind: List`. Indices count from 0, as in the API's field paths
    (`documents[3].spec`), so that the two read alike side by side."""

    file: str
    number: int  # among the file's YAML documents, from 0
    item: int | None = None  # within a list document, from 0
    listed: bool = False  # the list is a `kind: List`'s items

    def __str__(self) -> str:
        if self.item is None:
            return f"{self.file}[{self.number}]"
        return f"{self.file}[{self.number}]" + (".items" if self.listed else "") + f"[{self.item}]"


# === files ===


def _paths(paths: list[str]) -> list[Path | None]:
    """Each file to read (None: stdin); a directory gives its *.yaml, *.yml and *.json files."""
    out: list[Path | None] = []
    for p in paths:
        path = Path(p)
        if p == "-":
            out.append(None)
        elif path.is_dir():
            out += sorted(f for f in path.iterdir() if f.suffix in (".yaml", ".yml", ".json") and f.is_file())
        else:
            out.append(path)
    return out


def _too_large(what: str, given: int | None, limit: int) -> None:
    fail(f"{what}: {limits.too_many_bytes(given, limit, 'input')}")


def _files(paths: list[str]) -> list[tuple[str, str]]:
    """(display name, text) of each file, refused past the request-size limit before reading."""
    limit = limits.configured(limits.BYTES_VARIABLE, limits.MAX_REQUEST_BYTES)
    files = _paths(paths)
    sizes = {}
    for f in files:
        if f is not None:
            try:
                sizes[f] = f.stat().st_size
            except OSError as e:
                fail(f"cannot read {f}: {e.strerror or e}")
    if (total := sum(sizes.values())) > limit:
        _too_large(", ".join(map(str, sizes)), total, limit)
    out = []
    for f in files:
        if f is None:
            data = sys.stdin.buffer.read(limit - total + 1)  # a byte past what fits: too much
            if len(data) > limit - total:
                _too_large("<stdin>", None, limit)
            name = "<stdin>"
        else:
            try:
                data = f.read_bytes()
            except OSError as e:
                fail(f"cannot read {f}: {e.strerror or e}")
            name = str(f)
        try:
            out.append((name, data.decode("utf-8")))
        except UnicodeDecodeError as e:
            fail(f"cannot read {name}: {e}")
    return out


# === parsing ===


def _loader() -> type[yaml.SafeLoader]:
    """libyaml's safe loader when PyYAML has it (several times faster), reading what JSON cannot
    carry (timestamps, binary) as the text written, and sets as lists."""
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc]
        pass

    def text(loader: Any, node: Any) -> Any:
        return loader.construct_scalar(node)

    Loader.add_constructor("tag:yaml.org,2002:timestamp", text)
    Loader.add_constructor("tag:yaml.org,2002:binary", text)
    Loader.add_constructor("tag:yaml.org,2002:set", lambda loader, node: list(loader.construct_mapping(node)))
    return Loader


def _yaml_error(file: str, e: Exception) -> str:
    import yaml

    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        what = ": ".join(s for s in (e.context, e.problem) if s)
        return f"{file}: invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}"
    return f"{file}: invalid YAML: {e}"


def _load(file: str, text: str) -> list[Any]:
    """A file's documents: JSON (one value) by the json module when it reads as JSON, else YAML."""
    if file.endswith(".json") or text.lstrip()[:1] in ("{", "["):
        try:
            return [json.loads(text)]
        except ValueError:
            pass  # YAML then, which reads this too or says where it is wrong
    import yaml

    try:
        return list(yaml.load_all(text, Loader=_loader()))
    except yaml.YAMLError as e:
        fail(_yaml_error(file, e))


def read_documents(paths: list[str]) -> tuple[list[dict[str, Any]], list[Origin]]:
    """Every document of every file, empty ones skipped; a YAML list (or a `kind: List`) gives its items."""
    docs: list[dict[str, Any]] = []
    origins: list[Origin] = []
    for file, text in _files(paths):
        for number, doc in enumerate(_load(file, text)):
            if doc is None:
                continue
            listed = isinstance(doc, dict) and doc.get("kind") == "List"
            items = doc.get("items") if listed else doc
            if isinstance(items, list):
                entries = [(item, Origin(file, number, i, listed)) for i, item in enumerate(items)]
            else:
                entries = [(items, Origin(file, number))]
            for item, origin in entries:
                if not isinstance(item, dict):
                    fail(f"{origin}: expected a mapping with kind, metadata and spec, got {type(item).__name__}")
                docs.append(item)
                origins.append(origin)
    most = limits.configured(limits.DOCUMENTS_VARIABLE, limits.MAX_DOCUMENTS)
    if len(docs) > most:
        fail(f"{', '.join(paths)}: {limits.too_many_documents(len(docs), most)}")
    return docs, origins
