"""Identity: the trust bundle, and SVIDs issued for CSRs sent with a join token."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool

from meshctl.control.ca import CertificateAuthority, CsrRefused, spiffe_id
from meshctl.control.deps import AnyCaller
from meshctl.control.models import Svid, SvidRequest, TrustBundle

router = APIRouter(prefix="/api/v1/identity", tags=["identity"])


@router.get("/bundle", response_model=TrustBundle)
def bundle(request: Request, _: AnyCaller) -> TrustBundle:
    ca: CertificateAuthority = request.app.state.ca
    return TrustBundle(trust_domain=ca.trust_domain, roots=ca.bundle())


@router.post("/svid", response_model=Svid)
async def issue_svid(request: Request, caller: AnyCaller, data: SvidRequest) -> Svid:
    """Signs the CSR of a sidecar of the join token's service; its only URI SAN must be that
    service's SPIFFE ID (anything else is a 403)."""
    if caller.role != "join" or caller.scope is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="SVIDs are issued to sidecars, with their join token")
    ca: CertificateAuthority = request.app.state.ca
    namespace, service = caller.scope.split("/", 1)
    expected = spiffe_id(ca.trust_domain, namespace, service)
    ttl = dt.timedelta(seconds=data.ttl_seconds or request.app.state.settings.svid_ttl_seconds)
    try:
        chain, expires = await run_in_threadpool(ca.issue, data.csr, expected=expected, ttl=ttl)
    except CsrRefused as e:
        code = status.HTTP_403_FORBIDDEN if e.forbidden else status.HTTP_422_UNPROCESSABLE_ENTITY
        raise HTTPException(code, detail=str(e)) from None
    return Svid(spiffe_id=expected, certificate_chain=chain, expires_at=expires)
