"""Identity: the trust bundle, SVIDs issued for CSRs sent with a join token,
and root rotation (admin only).

Every change of the bundle raises the mesh generation in the same request, so
watching sidecars get a new snapshot at once; the generation that first
carried a bundle is kept, and a rotation is activated only once every live
sidecar has ACKed it (or when forced)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session, col, func, select

from meshctl.control import crud
from meshctl.control.ca import CertificateAuthority, RotationRefused
from meshctl.control.deps import Admin, CaDep, MemberCaller, MetricsDep, Reader, SessionDep, SettingsDep
from meshctl.control.kinds.common import now
from meshctl.control.models import RotationStatus, Sidecar, Svid, SvidRequest, TrustBundle
from meshctl.spiffe import spiffe_id

router = APIRouter(prefix="/api/v1/identity", tags=["identity"])

_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "Not possible in this phase, or not safe yet (see the detail)"}
}


@router.get("/bundle", response_model=TrustBundle)
def bundle(ca: CaDep, _: MemberCaller) -> TrustBundle:
    ca.sync()  # another replica may have taken a rotation step
    return TrustBundle(trust_domain=ca.trust_domain, roots=ca.bundle(), digest=ca.bundle_digest())


@router.post("/svid", response_model=Svid, responses={403: {"description": "Not a join token, or not its identity"}})
async def issue_svid(
    ca: CaDep, settings: SettingsDep, metrics: MetricsDep, caller: MemberCaller, data: SvidRequest
) -> Svid:
    """Signs the CSR of a sidecar of the join token's service; its only URI SAN must be that
    service's SPIFFE ID (anything else is a 403). An expired join token gets SVIDs while a sidecar
    that registered with it is recorded (401 otherwise), before or after it heartbeats again."""
    if caller.role != "join" or caller.scope is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="SVIDs are issued to sidecars, with their join token")
    namespace, service = caller.scope.split("/", 1)
    expected = spiffe_id(ca.trust_domain, namespace, service)
    ttl = dt.timedelta(seconds=data.ttl_seconds or settings.svid_ttl_seconds)
    chain, expires = await run_in_threadpool(ca.issue, data.csr, expected=expected, ttl=ttl)
    metrics.svids.inc()
    return Svid(spiffe_id=expected, certificate_chain=chain, expires_at=expires)


# === root rotation ===


def _pending(session: Session, generation: int | None) -> int:
    """Live sidecars that have not ACKed `generation` (the one that first carried the bundle)."""
    if generation is None:
        return 0
    behind = (col(Sidecar.acked_version).is_(None)) | (col(Sidecar.acked_version) < generation)
    query = select(func.count()).select_from(Sidecar).where(col(Sidecar.expires_at) > now(), behind)
    return int(session.exec(query).one())


def _status(ca: CertificateAuthority, session: Session) -> RotationStatus:
    ca.sync()  # the database's state, whichever replica changed it
    info = ca.status()
    pending = _pending(session, info["bundle_generation"]) if info["phase"] == "bundled" else 0
    return RotationStatus.model_validate({**info, "sidecars_pending": pending})


def _step(ca: CertificateAuthority, session: Session, change: Callable[[int], None]) -> RotationStatus:
    """Raise the generation and make the change in one transaction (the CA's state is in the
    database): the commit (and with it the push to sidecars and the "ca" announcement to every
    replica) happens only if the change did; a refused one (RotationRefused, a 409) changes nothing."""
    generation = crud.bump(session)
    try:
        change(generation)
    except RotationRefused:
        session.rollback()
        session.info.pop("generation", None)  # nothing to publish
        raise
    session.commit()  # get_session then publishes the generation: sidecars are woken now
    return _status(ca, session)


@router.get("/rotation", response_model=RotationStatus)
def rotation(ca: CaDep, session: SessionDep, _: Reader) -> RotationStatus:
    """The root rotation's phase, the bundle's roots (fingerprints, never keys), the issuer that
    signs now, the sidecars yet to ACK the bundle, and when finishing becomes safe."""
    return _status(ca, session)


@router.post("/rotation", response_model=RotationStatus, responses=_CONFLICT)
def start_rotation(ca: CaDep, session: SessionDep, _: Admin) -> RotationStatus:
    """Phase 1: a new root (and issuer) joins the bundle; SVIDs still come from the current issuer.
    The operator's `next-root.pem` + `next-root.key` (or + `next-issuer.pem`/`.key`) in the CA
    directory of the replica taking the request are used if present (and taken into the database);
    otherwise both are made."""
    return _step(ca, session, lambda generation: ca.start_rotation(session, bundle_generation=generation))


@router.post("/rotation/activate", response_model=RotationStatus, responses=_CONFLICT)
def activate_rotation(
    ca: CaDep,
    session: SessionDep,
    _: Admin,
    force: bool = Query(default=False, description="Even though some live sidecars have not ACKed the new bundle."),
) -> RotationStatus:
    """Phase 2: SVIDs come from the new issuer; sidecars move to it as they renew. Refused while a
    live sidecar has not ACKed the generation carrying the new bundle, unless forced."""
    ca.sync()
    if ca.phase == "bundled" and not force:
        pending = _pending(session, ca.state.bundle_generation)
        if pending:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                detail=f"{pending} live sidecar(s) have not ACKed mesh generation {ca.state.bundle_generation}, which "
                "carries the new root, and would refuse peers' new certificates; activate once they have, or force it",
            )
    return _step(ca, session, lambda _generation: ca.activate_rotation(session))


@router.post("/rotation/finish", response_model=RotationStatus, responses=_CONFLICT)
def finish_rotation(
    ca: CaDep,
    session: SessionDep,
    _: Admin,
    force: bool = Query(default=False, description="Even though SVIDs from the old issuer may still be valid."),
) -> RotationStatus:
    """Phase 3: the old root leaves the bundle. Refused while an SVID from the old issuer may still
    be valid (`finish_safe_after`), unless forced."""
    return _step(ca, session, lambda generation: ca.finish_rotation(session, force=force, bundle_generation=generation))
