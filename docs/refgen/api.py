"""The REST API reference, rendered from the exported OpenAPI document (``api/openapi.json``, which a
test holds to the app): every path and method by tag, their parameters, request body and responses,
then every schema with its fields. Plain Markdown: the site fetches nothing at run time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from refgen.markdown import anchor, code, table, text

SPEC = Path(__file__).resolve().parents[2] / "api" / "openapi.json"
METHODS = ("get", "post", "put", "patch", "delete")


def load(path: Path = SPEC) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) for every operation, in the document's path order."""
    return [
        (method.upper(), path, item[method])
        for path, item in doc["paths"].items()
        for method in METHODS
        if method in item
    ]


def render(path: Path = SPEC) -> str:
    doc = load(path)
    info = doc.get("info", {})
    out = [
        "# REST API reference\n\n",
        f"Rendered from `api/openapi.json` ({text(info.get('title'))}, version {text(info.get('version'))}, "
        f"OpenAPI {text(doc.get('openapi'))}) when this site was built. Every endpoint marked *bearer token* "
        "needs `Authorization: Bearer <token>`; which token (admin, read-only, a join token) each one "
        "takes is in its description. Bad input is a 422 whose `detail` names each field path.\n\n",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for op in operations(doc):
        by_tag.setdefault((op[2].get("tags") or ["other"])[0], []).append(op)
    out.append("## Endpoints\n\n")
    rows = [
        [text(tag), "<br>".join(f"[{code(m + ' ' + p)}](#{_op_anchor(m, p)})" for m, p, _ in ops)]
        for tag, ops in by_tag.items()
    ]
    out.append(table(["tag", "operations"], rows) + "\n")
    for tag, ops in by_tag.items():
        out.append(f"### {text(tag)} {{#{anchor('api-tag', tag)}}}\n\n")
        out += [_operation(m, p, op) for m, p, op in ops]
    out.append("## Schemas\n\n")
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        out.append(_schema(name, schema))
    return "".join(out)


def _op_anchor(method: str, path: str) -> str:
    return anchor("api", f"{method} {path}")


def _operation(method: str, path: str, op: dict[str, Any]) -> str:
    parts = [f"#### {method} {code(path)} {{#{_op_anchor(method, path)}}}\n\n"]
    summary = op.get("summary")
    description = op.get("description")
    if summary:
        parts.append(f"**{text(summary)}**" + (" — *bearer token*" if op.get("security") else "") + "\n\n")
    if description:
        parts += [text(p) + "\n\n" for p in description.split("\n\n") if p.strip()]
    params = op.get("parameters") or []
    if params:
        rows = [
            [
                code(p["name"]),
                p.get("in", ""),
                "yes" if p.get("required") else "no",
                type_of(p.get("schema", {})),
                text(p.get("description") or p.get("schema", {}).get("description")),
            ]
            for p in params
        ]
        parts.append("Parameters:\n\n" + table(["name", "in", "required", "type", "description"], rows) + "\n")
    body = op.get("requestBody")
    if body:
        rows = [[code(ct), type_of(c.get("schema", {}))] for ct, c in body.get("content", {}).items()]
        required = "required" if body.get("required") else "optional"
        parts.append(f"Request body ({required}):\n\n" + table(["content type", "schema"], rows) + "\n")
    responses = op.get("responses") or {}
    if responses:
        rows = []
        for status, r in responses.items():
            content = r.get("content") or {}
            shape = "<br>".join(f"{code(ct)}: {type_of(c.get('schema', {}))}" for ct, c in content.items())
            rows.append([code(status), text(r.get("description")), shape])
        parts.append("Responses:\n\n" + table(["status", "meaning", "body"], rows) + "\n")
    return "".join(parts)


def _schema(name: str, schema: dict[str, Any]) -> str:
    parts = [f"### {text(name)} {{#{anchor('schema', name)}}}\n\n"]
    if schema.get("description"):
        parts.append(text(schema["description"]) + "\n\n")
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    if props:
        rows = [
            [code(field), type_of(s), "yes" if field in required else "no", _details(s)] for field, s in props.items()
        ]
        parts.append(table(["field", "type", "required", "description"], rows) + "\n")
    elif schema.get("type") or schema.get("enum"):
        parts.append(f"Type: {type_of({k: v for k, v in schema.items() if k != 'title'})}\n\n")
    if schema.get("additionalProperties") is False and props:
        parts.append("Other fields are refused.\n\n")
    return "".join(parts)


def _details(schema: dict[str, Any]) -> str:
    """A field's description, then its default and constraints."""
    bits = [text(schema.get("description"))] if schema.get("description") else []
    if "default" in schema:
        bits.append("Default " + code(json.dumps(schema["default"])) + ".")
    limits = {
        "minimum": ">=",
        "exclusiveMinimum": ">",
        "maximum": "<=",
        "exclusiveMaximum": "<",
        "minLength": "length >=",
        "maxLength": "length <=",
        "minItems": "items >=",
        "maxItems": "items <=",
    }
    shown = [text(f"{op} {schema[k]}") for k, op in limits.items() if k in schema]
    if "pattern" in schema:
        shown.append("matching " + code(schema["pattern"]))
    if shown:
        bits.append("; ".join(shown) + ".")
    return " ".join(b for b in bits if b)


def type_of(schema: dict[str, Any]) -> str:
    """A schema's type as linked Markdown: `[Name](#schema-name)`, `array of X`, `A or null`, ..."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{text(name)}](#{anchor('schema', name)})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(type_of(s) for s in schema[key])
    if "allOf" in schema:
        return " and ".join(type_of(s) for s in schema["allOf"])
    if "const" in schema:
        return code(json.dumps(schema["const"]))
    if "enum" in schema:
        return "one of " + ", ".join(code(json.dumps(v)) for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(type_of({**schema, "type": k}) for k in kind)
    if kind == "array":
        return "array of " + type_of(schema.get("items", {}))
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return "object (string to " + type_of(extra) + ")"
        return "object"
    if kind:
        return str(kind) + (f" ({schema['format']})" if "format" in schema else "")
    return "any"
