"""What ``GET /api/v1/check`` answers: the checks that ran and what they found."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from meshctl.control.analysis.codes import BY_CODE, Severity


class Resource(BaseModel):
    """What a finding is about."""

    #: A resource kind ("HTTPRoute", "Service"), or "Sidecar" or "CA".
    kind: str
    #: "namespace/name" for resources, the id for a sidecar, "root"/"issuer" for the CA.
    name: str
    #: Where in it, when a part of it ("spec.rules[1]").
    field: str | None = None


class Finding(BaseModel):
    code: str
    severity: Severity
    category: str
    resource: Resource
    message: str
    #: How to fix it.
    hint: str


class CheckInfo(BaseModel):
    """One check that ran: it passed unless a finding has its code."""

    code: str
    category: str
    severity: Severity
    title: str


class CheckReport(BaseModel):
    #: The meshctl version of the control plane.
    server_version: str
    #: The mesh generation the analysis read.
    generation: int
    checked_at: datetime
    checks: list[CheckInfo]
    #: By category (in `codes.CATEGORIES` order), then code, then resource.
    findings: list[Finding]
    errors: int
    warnings: int


def finding(code: str, kind: str, name: str, message: str, *, field: str | None = None, hint: str = "") -> Finding:
    """A finding of check `code` (its severity, category and, unless given, hint from the catalogue)."""
    check = BY_CODE[code]
    return Finding(
        code=code,
        severity=check.severity,
        category=check.category,
        resource=Resource(kind=kind, name=name, field=field),
        message=message,
        hint=hint or check.hint,
    )


def field_path(loc: list[Any]) -> str:
    """A loc within a resource (["spec", "rules", 0, "backendRefs", 1]) as `spec.rules[0].backendRefs[1]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
