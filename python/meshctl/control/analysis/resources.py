"""Resource findings, from the stored rows of every kind:

- MC0403: a stored spec that no longer validates (the compiler cannot read it:
  the mesh analyses are then skipped, and sidecars get no new config);
- MC0401 / MC0402: a reference (a policy's targetRef, a route's parentRefs or
  backendRefs, a RateLimitPolicy's clientRefs, a Telemetry's targetRefs, a
  Gateway's own Service) to a resource that does not exist, or to a Gateway
  listener that does not. Writes refuse these; they come from changes made
  around the API (the database edited, a restored backup);
- MC0404: a PERMISSIVE service.

References are what each kind says it makes (``Kind.references``), checked
against the stored resources of the kind they name."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlmodel import Session

from meshctl.control import crud
from meshctl.control.analysis.report import Finding, field_path, finding
from meshctl.control.kinds.common import key
from meshctl.control.kinds.registry import KINDS, kind
from meshctl.control.kinds.service import Service


def _rows(session: Session) -> dict[str, list[Any]]:
    return {k.name: crud.list_all(session, k.table) for k in KINDS}


def analyse(session: Session) -> tuple[list[Finding], bool]:
    """(findings, whether every stored spec validates)."""
    rows = _rows(session)
    out: list[Finding] = []
    # "ns/name" -> the sections references may pick, per kind.
    stored = {k.name: {key(r): k.sections(k.recorded(r)) for r in rows[k.name]} for k in KINDS}
    valid = True
    for k in KINDS:
        for row in rows[k.name]:
            try:
                spec = k.parse(row)
            except ValidationError as e:
                valid = False
                first = e.errors()[0]
                where = field_path(["spec", *first["loc"]])
                message = f"the stored spec no longer validates: {where}: {first['msg']}"
                out.append(finding("MC0403", k.name, key(row), message, field=where))
                continue
            for ref in k.references(spec, row.namespace, row.name):
                target = kind(ref.kind)
                field = field_path(ref.loc if ref.why else ["spec", *ref.loc])
                what = f"{ref.kind} {ref.target}"
                if ref.target not in stored[ref.kind]:
                    reason = f" ({ref.why})" if ref.why else ""
                    out.append(finding("MC0401", k.name, key(row), f"{what} does not exist{reason}", field=field))
                elif ref.section is not None and ref.section not in stored[ref.kind][ref.target]:
                    message = f"{what} has no {target.section_noun} {ref.section!r}"
                    out.append(finding("MC0402", k.name, key(row), message, field=f"{field}.sectionName"))
    for svc in rows["Service"]:
        assert isinstance(svc, Service)
        if svc.mtls == "PERMISSIVE":
            message = "mtls is PERMISSIVE: its sidecars also take plaintext callers, who have no mesh identity"
            out.append(finding("MC0404", "Service", key(svc), message, field="spec.mtls"))
    return out, valid
