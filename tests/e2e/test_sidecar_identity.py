"""The sidecar side of identity against a real control plane: its own key,
a certificate for its SPIFFE ID, renewal ~70 % through the lifetime."""

from __future__ import annotations

import datetime as dt
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from helpers import wait_until
from meshctl.client import ApiClient, ApiError
from meshctl.sidecar.identity import Identity, IdentityKeeper, request_identity
from meshproc import ControlPlane, service


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("cp"))
    plane.start()
    plane.apply(service("pricing"))
    yield plane
    plane.stop()


def test_the_keeper_writes_a_matching_key_and_chain_and_installs_it(cp: ControlPlane, tmp_path: Path) -> None:
    api = ApiClient(cp.url, cp.join_token("pricing"))
    installed: list[Identity] = []
    keeper = IdentityKeeper(
        api, tmp_path / "id", namespace="default", service="pricing", install=installed.append, ttl_seconds=60
    )
    keeper.start()
    try:
        wait_until(lambda: installed, timeout=10, what="the first identity")
    finally:
        keeper.stop()
    first = installed[0]
    assert first.spiffe_id == "spiffe://cluster.local/ns/default/sa/pricing" and first.usable()
    assert stat.S_IMODE((tmp_path / "id" / "svid.pem").stat().st_mode) == 0o600
    key = serialization.load_pem_private_key((tmp_path / "id" / "svid.pem").read_bytes(), password=None)
    leaf = x509.load_pem_x509_certificates((tmp_path / "id" / "svid.pem").read_bytes())[0]
    assert leaf.public_key() == key.public_key()  # the chain is for the key that never left us
    # A renewal brings a new key, and the old one stays valid meanwhile.
    second = keeper.renew()
    assert second.key_pem != first.key_pem and first.usable()


def test_renewal_is_due_at_70_percent_with_jitter() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ident = Identity("spiffe://x/ns/a/sa/b", "", "", [], t0, t0 + dt.timedelta(seconds=1000))
    rng = random.Random(7)
    due = [(ident.renew_at(rng) - t0).total_seconds() for _ in range(200)]
    assert 650 <= min(due) < 690 and 710 < max(due) <= 750  # spread, so a fleet does not renew at once
    assert not ident.usable(t0 - dt.timedelta(seconds=1)) and not ident.usable(t0 + dt.timedelta(seconds=1000))


def test_a_token_for_another_service_gets_no_identity(cp: ControlPlane) -> None:
    cp.apply(service("cart"))
    api = ApiClient(cp.url, cp.join_token("cart"))
    with pytest.raises(ApiError) as refused:
        # The CSR names pricing; the token is cart's.
        request_identity(api, namespace="default", service="pricing")
    assert refused.value.status == 403
