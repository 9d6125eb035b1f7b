"""The exported API contract (``api/openapi.json``) as the API tests read it:
its operations, the statuses each documents, and whether an error answer is
the documented ``{"detail": ...}``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx

DOCUMENT = Path(__file__).resolve().parent.parent / "api" / "openapi.json"


@cache
def document() -> dict[str, Any]:
    return dict(json.loads(DOCUMENT.read_text()))


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    path: str  # the template: /api/v1/services/{namespace}/{name}
    spec: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def secured(self) -> bool:
        return bool(self.spec.get("security"))

    @property
    def statuses(self) -> set[int]:
        return {int(code) for code in self.spec["responses"] if code.isdigit()}

    @property
    def has_body(self) -> bool:
        return "requestBody" in self.spec

    def url(self, **values: Any) -> str:
        """The path with each `{param}` filled from `values` (default: 1 for ids, "x" otherwise)."""

        def fill(m: re.Match[str]) -> str:
            name = m.group(1)
            return str(values.get(name, 1 if name.endswith("_id") or name in ("revision", "before", "after") else "x"))

        return re.sub(r"\{(\w+)\}", fill, self.path)


def operations() -> Iterator[Operation]:
    for path, methods in document()["paths"].items():
        for method, spec in methods.items():
            yield Operation(method.upper(), path, spec)


def operation(method: str, path: str) -> Operation:
    return Operation(method.upper(), path, document()["paths"][path][method.lower()])


def assert_documented(op: Operation, response: httpx.Response) -> None:
    """The answer's status is one `op` documents, and an error answer (but 422) is `{"detail": str}`."""
    assert response.status_code in op.statuses, (
        f"{op}: {response.status_code} is not documented ({sorted(op.statuses)}): {response.text[:300]}"
    )
    if response.status_code >= 400 and response.status_code != 422:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("detail"), str), f"{op}: {body}"
        content = op.spec["responses"][str(response.status_code)].get("content", {})
        assert content.get("application/json", {}).get("schema") == {"$ref": "#/components/schemas/ErrorDetail"}
