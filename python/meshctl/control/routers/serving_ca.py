"""The CA of the API's own HTTPS certificate: what a client pinning it with
``--ca-hash`` fetches before it sends anything secret. Public (no token), as
kubeadm's cluster-info is: a CA certificate is no secret, and the pin is what
makes it trusted."""

from __future__ import annotations

from fastapi import APIRouter

from meshctl.control.ca.serving import serving_ca_pem
from meshctl.control.deps import SettingsDep
from meshctl.control.models import ServingCa
from meshctl.trust import ca_pin

router = APIRouter(prefix="/api/v1/ca", tags=["identity"])


@router.get("/serving", response_model=ServingCa)
def serving_ca(settings: SettingsDep) -> ServingCa:
    """The serving certificate's CA and its pin (`--ca-hash`); no token needed."""
    if not settings.serves_tls:
        return ServingCa(tls=False, ca_pem=None, ca_hash=None)
    ca = serving_ca_pem(settings.data_dir)
    return ServingCa(tls=True, ca_pem=ca, ca_hash=ca_pin(ca) if ca else None)
