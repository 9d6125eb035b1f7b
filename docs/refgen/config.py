"""The data-plane config reference, generated from the TypedDicts that describe the document
(``meshctl.dataplane_config``): each section's fields, types, whether the decoder requires them, and
what the ``#:`` comment above each field (or the class docstring) says about it.

Which keys are required comes from the classes at run time (``__required_keys__``, which a test
holds to the Rust decoder); the prose and the field order come from the source.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from refgen.markdown import anchor, code, table, text

ROOT = "DataPlaneConfig"


@dataclass
class Field:
    name: str
    annotation: str
    doc: str


@dataclass
class Section:
    name: str
    doc: str
    bases: list[str]
    fields: list[Field] = field(default_factory=list)


@dataclass
class Alias:
    name: str
    value: str
    doc: str


def _module() -> ModuleType:
    from meshctl import dataplane_config

    return dataplane_config


def _comment_above(lines: list[str], lineno: int) -> str:
    """The `#:` comment lines right above 1-based line `lineno`, joined."""
    out: list[str] = []
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith("#:"):
        out.insert(0, lines[i].strip()[2:].strip())
        i -= 1
    return " ".join(out)


def parse(module: ModuleType | None = None) -> tuple[dict[str, Section], list[Alias]]:
    """Every TypedDict of the module (by name, in source order) and every type alias."""
    module = module or _module()
    source = inspect.getsource(module)
    lines = source.splitlines()
    tree = ast.parse(source)
    sections: dict[str, Section] = {}
    aliases: list[Alias] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b) for b in node.bases]
            section = Section(node.name, ast.get_docstring(node) or "", [b for b in bases if b != "TypedDict"])
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    doc = _comment_above(lines, stmt.lineno)
                    section.fields.append(Field(stmt.target.id, ast.unparse(stmt.annotation), doc))
            sections[node.name] = section
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            aliases.append(Alias(node.targets[0].id, ast.unparse(node.value), _comment_above(lines, node.lineno)))
    return sections, aliases


def all_fields(sections: dict[str, Section], name: str) -> list[tuple[Field, str]]:
    """A section's fields with the section each comes from, inherited ones first."""
    section = sections[name]
    out: list[tuple[Field, str]] = []
    for base in section.bases:
        if base in sections:
            out += all_fields(sections, base)
    return out + [(f, name) for f in section.fields]


def reachable(sections: dict[str, Section]) -> list[str]:
    """The document's sections top down: breadth first from the root, through field types and
    base classes."""
    seen = [ROOT]
    for name in seen:
        refs = list(sections[name].bases) + [r for f, _ in all_fields(sections, name) for r in _names(f.annotation)]
        seen += [r for r in dict.fromkeys(refs) if r in sections and r not in seen]
    return seen


def _names(annotation: str) -> list[str]:
    return re.findall(r"[A-Za-z_][A-Za-z0-9_]*", annotation)


def render() -> str:
    module = _module()
    sections, aliases = parse(module)
    alias_names = {a.name for a in aliases}
    document = reachable(sections)
    out = [
        "# Data-plane config reference\n\n",
        "Generated from `meshctl.dataplane_config` when this site was built. The document is YAML or "
        "JSON; `meshctl proxy --config` reads it from a file, and a sidecar gets it from the control "
        "plane's compiler.\n\n",
    ]
    if module.__doc__:
        out.append(_paragraphs(module.__doc__))
    out.append("## The document\n\n")
    out += [_section(module, sections, name, alias_names) for name in document]
    rest = [name for name in sections if name not in document]
    if rest:
        out.append(
            "## What the data plane answers explain with\n\n"
            "`_core.match_route` and `_core.authorize` (which `meshctl explain` calls) return these.\n\n"
        )
        out += [_section(module, sections, name, alias_names) for name in rest]
    out.append("## Value types {#value-types}\n\n")
    rows = [[code(a.name), _type(a.value, sections, alias_names), text(a.doc)] for a in aliases]
    out.append(table(["name", "values", "meaning"], rows))
    return "".join(out)


def _section(module: ModuleType, sections: dict[str, Section], name: str, aliases: set[str]) -> str:
    cls: Any = getattr(module, name)
    required: frozenset[str] = getattr(cls, "__required_keys__", frozenset())
    parts = [f"### {name} {{#{anchor('config', name)}}}\n\n"]
    if sections[name].doc:
        parts.append(_paragraphs(sections[name].doc))
    rows = []
    for f, owner in all_fields(sections, name):
        doc = text(f.doc)
        if owner != name:
            doc = (doc + " " if doc else "") + f"(from [{owner}](#{anchor('config', owner)}))"
        rows.append([code(f.name), _type(f.annotation, sections, aliases), "yes" if f.name in required else "", doc])
    if rows:
        parts.append(table(["field", "type", "required", "description"], rows) + "\n")
    return "".join(parts)


def _type(annotation: str, sections: dict[str, Section], aliases: set[str]) -> str:
    """The annotation as Markdown, `Required[...]` dropped, section and alias names linked."""
    inner = re.fullmatch(r"Required\[(.*)\]", annotation)
    annotation = (inner.group(1) if inner else annotation).replace(" | ", " or ")
    out = []
    for piece in re.split(r"([A-Za-z_][A-Za-z0-9_]*)", annotation):
        if piece in sections:
            out.append(f"[{piece}](#{anchor('config', piece)})")
        elif piece in aliases:
            out.append(f"[{piece}](#value-types)")
        else:
            out.append(text(piece) if piece.strip() else piece)
    return "".join(out)


def _paragraphs(value: str) -> str:
    return "".join(text(p) + "\n\n" for p in inspect.cleandoc(value).split("\n\n") if p.strip())
