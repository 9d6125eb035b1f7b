"""The whole analysis over one database session: every server-side check of
the catalogue (``codes.SERVER_CODES``), its findings sorted for display."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session

from meshctl import __version__
from meshctl.control import crud, instances
from meshctl.control.analysis import identity, resources, routes, sidecars
from meshctl.control.analysis.codes import BY_CODE, CATEGORIES, SERVER_CODES
from meshctl.control.analysis.report import CheckInfo, CheckReport, Finding
from meshctl.control.ca import CertificateAuthority
from meshctl.control.kinds.common import now
from meshctl.control.push import load_mesh
from meshctl.control.settings import Settings

#: The checks that read the compiled mesh: skipped when a stored spec does not validate.
MESH_CODES = ("MC0301", "MC0302", "MC0303", "MC0304", "MC0305")


def analyse(
    session: Session,
    *,
    ca: CertificateAuthority,
    settings: Settings,
    stayed_behind: set[int] | None = None,
    grace: float = 0.0,
) -> CheckReport:
    """Every check on the mesh as stored now. `stayed_behind`: the sidecars that stayed behind
    through the `grace` seconds the caller waited (None: judge every behind sidecar now)."""
    generation = crud.generation(session)
    found, valid = resources.analyse(session)
    found += sidecars.analyse(
        session,
        server_version=__version__,
        svid_ttl=timedelta(seconds=settings.svid_ttl_seconds),
        stayed_behind=stayed_behind,
        grace=grace,
    )
    found += identity.analyse(ca, [sc for sc, _ in instances.list_sidecars(session)])
    ran = [c for c in SERVER_CODES if valid or c not in MESH_CODES]
    if valid:
        mesh = load_mesh(session, trust_domain=settings.trust_domain, authz_default=settings.authz_default)
        found += routes.analyse(mesh)
    return report(found, ran, generation)


def _order(f: Finding) -> tuple[int, str]:
    # A stable sort: within a code, findings keep the order each module found them in.
    return (list(CATEGORIES).index(f.category), f.code)


def report(found: list[Finding], ran: list[str], generation: int) -> CheckReport:
    checks = [
        CheckInfo(code=c.code, category=c.category, severity=c.severity, title=c.title)
        for c in (BY_CODE[code] for code in ran)
    ]
    findings = sorted(found, key=_order)
    return CheckReport(
        server_version=__version__,
        generation=generation,
        checked_at=now(),
        checks=checks,
        findings=findings,
        errors=sum(f.severity == "error" for f in findings),
        warnings=sum(f.severity == "warning" for f in findings),
    )
