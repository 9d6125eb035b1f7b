"""API tokens through a real control plane: create (shown once), list (never
the token nor its hash), revoke; expiry (and the token cache not outliving
it); the last admin token kept; who may manage tokens; the token a sidecar
registered with, and what revoking it does to the sidecar."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from helpers import wait_until
from meshctl.client import ApiClient, ApiError
from meshctl.control.deps import TOKEN_CACHE_SECONDS
from meshctl.sidecar.identity import request_identity
from meshproc import ControlPlane, module_control_plane, service

cp = module_control_plane()


@pytest.fixture(scope="module", autouse=True)
def services(cp: ControlPlane) -> None:
    cp.apply(service("pricing"), service("cart"))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(cp: ControlPlane, **body: Any) -> dict[str, Any]:
    return dict(cp.ok("POST", "/api/v1/tokens", json=body))


def register(cp: ControlPlane, token: str, inbound_port: int, svc: str = "pricing") -> httpx.Response:
    body = {"service": svc, "address": "127.0.0.1", "inbound_port": inbound_port, "app_port": 8080}
    return httpx.put(f"{cp.url}/api/v1/sidecars", json=body, headers=bearer(token), timeout=10)


INFO = {"id", "name", "role", "service", "created_at", "expires_at", "expired"}


def test_a_join_token_is_shown_once_listed_without_secret_and_expires_in_a_day(cp: ControlPlane) -> None:
    made = create(cp, service="default/pricing", name="pricing-ci")
    assert set(made) == INFO | {"token"} and made["token"].startswith("mesh-join-")
    assert (made["role"], made["service"], made["name"], made["expired"]) == (
        "join",
        "default/pricing",
        "pricing-ci",
        False,
    )
    lasts = datetime.fromisoformat(made["expires_at"]) - datetime.fromisoformat(made["created_at"])
    assert abs(lasts.total_seconds() - 24 * 3600) < 5

    listed = cp.ok("GET", "/api/v1/tokens")
    row = next(t for t in listed if t["id"] == made["id"])
    assert set(row) == INFO and row == {k: v for k, v in made.items() if k != "token"}
    # Never the token nor its hash, for any token.
    text = cp.call("GET", "/api/v1/tokens").text
    assert made["token"] not in text and "sha256" not in text
    assert {t["role"] for t in listed} >= {"admin", "reader", "join"}
    assert [t["id"] for t in cp.ok("GET", "/api/v1/tokens", params={"service": "default/pricing"})] == [
        t["id"] for t in listed if t["service"] == "default/pricing"
    ]
    # The per-service endpoints see the same tokens, and their own still never expire.
    legacy = cp.ok("GET", "/api/v1/services/default/pricing/join-tokens")
    assert made["id"] in [t["id"] for t in legacy]
    old = cp.ok("POST", "/api/v1/services/default/cart/join-tokens")
    assert next(t for t in cp.ok("GET", "/api/v1/tokens") if t["id"] == old["id"])["expires_at"] is None


def test_admin_and_reader_tokens_with_names_and_expiry(cp: ControlPlane) -> None:
    reader = create(cp, role="reader", name="grafana")
    assert reader["expires_at"] is None and reader["service"] is None
    assert httpx.get(f"{cp.url}/api/v1/services", headers=bearer(reader["token"])).status_code == 200
    assert (
        httpx.post(f"{cp.url}/api/v1/apply", json={"documents": []}, headers=bearer(reader["token"])).status_code == 403
    )
    admin = create(cp, role="admin", name="ci-deploy", expires_in_seconds=3600)
    assert admin["expires_at"] is not None
    assert httpx.get(f"{cp.url}/api/v1/tokens", headers=bearer(admin["token"])).status_code == 200
    forever = create(cp, service="default/cart", expires_in_seconds=0)
    assert forever["expires_at"] is None


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"role": "join"}, ["body", "service"]),
        ({"service": "default/ghost"}, ["body", "service"]),
        ({"service": "Default/pricing"}, ["body", "service"]),
        ({"role": "admin", "service": "default/pricing"}, ["body", "service"]),
        ({"role": "root"}, ["body", "role"]),
        ({"role": "reader", "name": "has space"}, ["body", "name"]),
        ({"role": "reader", "expires_in_seconds": -1}, ["body", "expires_in_seconds"]),
        ({"role": "reader", "scope": "x"}, ["body", "scope"]),
    ],
)
def test_bad_input_is_422_naming_the_field_and_makes_nothing(
    cp: ControlPlane, body: dict[str, Any], loc: list[str]
) -> None:
    before = cp.ok("GET", "/api/v1/tokens")
    r = cp.call("POST", "/api/v1/tokens", json=body)
    assert r.status_code == 422, r.text
    assert loc in [e["loc"] for e in r.json()["detail"]], r.text
    assert cp.ok("GET", "/api/v1/tokens") == before


def test_only_admin_tokens_manage_tokens(cp: ControlPlane) -> None:
    join = create(cp, service="default/pricing")
    for headers in (cp.reader, bearer(join["token"])):
        assert httpx.get(f"{cp.url}/api/v1/tokens", headers=headers).status_code == 403
        r = httpx.post(f"{cp.url}/api/v1/tokens", json={"role": "admin"}, headers=headers)
        assert r.status_code == 403
        assert httpx.delete(f"{cp.url}/api/v1/tokens/{join['id']}", headers=headers).status_code == 403
    assert httpx.get(f"{cp.url}/api/v1/tokens").status_code == 401


def test_a_revoked_token_is_refused_at_once_and_revoking_again_is_404(cp: ControlPlane) -> None:
    reader = create(cp, role="reader")
    headers = bearer(reader["token"])
    assert httpx.get(f"{cp.url}/api/v1/services", headers=headers).status_code == 200  # now cached
    assert cp.call("DELETE", f"/api/v1/tokens/{reader['id']}").status_code == 204
    assert httpx.get(f"{cp.url}/api/v1/services", headers=headers).status_code == 401
    assert reader["id"] not in [t["id"] for t in cp.ok("GET", "/api/v1/tokens")]
    assert cp.call("DELETE", f"/api/v1/tokens/{reader['id']}").status_code == 404
    # The per-service endpoint revokes only that service's join tokens.
    other = create(cp, service="default/cart")
    assert cp.call("DELETE", f"/api/v1/services/default/pricing/join-tokens/{other['id']}").status_code == 404
    assert cp.call("DELETE", f"/api/v1/services/default/cart/join-tokens/{other['id']}").status_code == 204


def test_an_expired_token_is_refused_though_a_check_of_it_was_remembered(cp: ControlPlane) -> None:
    """Token checks are cached for TOKEN_CACHE_SECONDS, but never past the token's expiry."""
    started = time.monotonic()
    short = create(cp, role="reader", expires_in_seconds=1)
    headers = bearer(short["token"])
    assert httpx.get(f"{cp.url}/api/v1/services", headers=headers).status_code == 200  # remembered from here

    def refused() -> bool:
        return httpx.get(f"{cp.url}/api/v1/services", headers=headers).status_code == 401

    wait_until(refused, timeout=30, what="the expired token to be refused")
    # A cached check would have let it in until its first use + TOKEN_CACHE_SECONDS.
    assert time.monotonic() - started < TOKEN_CACHE_SECONDS
    row = next(t for t in cp.ok("GET", "/api/v1/tokens") if t["id"] == short["id"])
    assert row["expired"] is True


def test_a_sidecar_records_its_token_and_shows_it_revoked_and_its_svid_is_not_renewed(cp: ControlPlane) -> None:
    join = create(cp, service="default/pricing", name="pricing-fleet")
    r = register(cp, join["token"], 16001)
    assert r.status_code == 200, r.text
    assert r.json()["token_revoked"] is False
    api = ApiClient(cp.url, join["token"])
    assert request_identity(api, namespace="default", service="pricing").spiffe_id.endswith("/sa/pricing")

    admin_made = register(cp, cp.token("admin"), 16002)  # an admin token registers too: it is recorded
    assert admin_made.status_code == 200 and admin_made.json()["token_revoked"] is False

    assert cp.call("DELETE", f"/api/v1/tokens/{join['id']}").status_code == 204
    rows = {s["inbound_port"]: s for s in cp.sidecars()}
    assert rows[16001]["token_revoked"] is True
    assert rows[16002]["token_revoked"] is False
    # The sidecar's own renewal (the code its identity keeper runs) is refused from now on,
    # and so is its heartbeat.
    with pytest.raises(ApiError) as refused:
        request_identity(api, namespace="default", service="pricing")
    assert refused.value.status == 401
    assert register(cp, join["token"], 16001).status_code == 401


def expire(cp: ControlPlane, token_id: int) -> None:
    """Make the token's expiry a minute past, in the database (as `expires_in_seconds` would have)."""
    past = datetime.now(UTC) - timedelta(minutes=1)
    assert cp.sql("UPDATE apitoken SET expires_at = :at WHERE id = :id", {"at": past, "id": token_id}) == [(1,)]


def sidecar_call(cp: ControlPlane, token: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{cp.url}/api/v1/sidecars{path}", headers=bearer(token), timeout=10, **kw)


def test_an_expired_join_token_keeps_its_sidecars_working_but_joins_no_new_one(cp: ControlPlane) -> None:
    """kubeadm's meaning: a join token's expiry limits joining; revoking it is what stops its sidecars."""
    join = create(cp, service="default/cart", name="cart-fleet")
    first = register(cp, join["token"], 16003, "cart")
    assert first.status_code == 200, first.text
    mine = first.json()["id"]
    other = register(cp, create(cp, service="default/cart")["token"], 16004, "cart").json()["id"]
    api = ApiClient(cp.url, join["token"])
    started = time.monotonic()
    expire(cp, join["id"])

    # Once the remembered check of the token runs out (not later), it may no longer act for a sidecar
    # of its service that it did not register (asked with a call that creates nothing).
    def stranger_refused() -> bool:
        return sidecar_call(cp, join["token"], "GET", f"/{other}/snapshot", params={"wait": 0}).status_code == 401

    wait_until(stranger_refused, timeout=30, what="the expired token to be seen as expired")
    assert time.monotonic() - started < TOKEN_CACHE_SECONDS + 5
    # A new instance is refused.
    refused = register(cp, join["token"], 16005, "cart").json()["detail"]
    assert refused.startswith("join token expired at ") and "meshctl token create" in refused, refused
    assert 16005 not in [s["inbound_port"] for s in cp.sidecars()]

    # Its own sidecar heartbeats, follows its config, ACKs, taps, renews its SVID.
    beat = register(cp, join["token"], 16003, "cart")
    assert beat.status_code == 200, beat.text
    assert (beat.json()["token_expired"], beat.json()["token_revoked"]) == (True, False)
    snapshot = sidecar_call(cp, join["token"], "GET", f"/{mine}/snapshot", params={"wait": 0})
    assert snapshot.status_code == 200, snapshot.text
    ack = {"version": snapshot.json()["version"]}
    assert sidecar_call(cp, join["token"], "POST", f"/{mine}/status", json=ack).status_code == 204
    assert sidecar_call(cp, join["token"], "GET", f"/{mine}/tap", params={"wait": 0}).status_code in (200, 204)
    assert request_identity(api, namespace="default", service="cart").spiffe_id.endswith("/sa/cart")
    # ...but nothing it did not join: another sidecar of the same service.
    stranger = sidecar_call(cp, join["token"], "GET", f"/{other}/snapshot", params={"wait": 0})
    assert stranger.status_code == 401 and "join token expired at" in stranger.json()["detail"]
    assert sidecar_call(cp, join["token"], "DELETE", f"/{other}").status_code == 401

    # A clean restart of the same instance: it leaves, and comes back with the same token.
    assert sidecar_call(cp, join["token"], "DELETE", f"/{mine}").status_code == 204
    assert not next(s for s in cp.sidecars() if s["id"] == mine)["live"]
    assert request_identity(api, namespace="default", service="cart").spiffe_id.endswith("/sa/cart")
    back = register(cp, join["token"], 16003, "cart")
    assert back.status_code == 200 and back.json()["id"] == mine and back.json()["live"]

    # Revoked, it is cut off from everything.
    assert cp.call("DELETE", f"/api/v1/tokens/{join['id']}").status_code == 204
    assert next(s for s in cp.sidecars() if s["id"] == mine)["token_revoked"] is True
    assert register(cp, join["token"], 16003, "cart").status_code == 401
    assert sidecar_call(cp, join["token"], "GET", f"/{mine}/snapshot", params={"wait": 0}).status_code == 401
    with pytest.raises(ApiError) as gone:
        request_identity(api, namespace="default", service="cart")
    assert gone.value.status == 401


def test_an_expired_join_token_with_no_sidecar_gets_no_svid_and_other_tokens_expire_outright(
    cp: ControlPlane,
) -> None:
    unused = create(cp, service="default/pricing")
    expire(cp, unused["id"])
    with pytest.raises(ApiError) as refused:
        request_identity(ApiClient(cp.url, unused["token"]), namespace="default", service="pricing")
    assert refused.value.status == 401 and "join token expired at" in str(refused.value)
    for role in ("admin", "reader"):
        made = create(cp, role=role)
        expire(cp, made["id"])
        r = httpx.get(f"{cp.url}/api/v1/identity/bundle", headers=bearer(made["token"]), timeout=10)
        assert r.status_code == 401 and r.json()["detail"] == "a valid bearer token is required"


def test_the_last_live_admin_token_cannot_be_revoked(cp: ControlPlane) -> None:
    """On a control plane of its own: it revokes the bootstrap admin token."""
    plane = ControlPlane(cp.data_dir.parent / "last-admin")
    plane.data_dir.mkdir()
    plane.start()
    try:
        (boot,) = plane.ok("GET", "/api/v1/tokens", params={"role": "admin"})
        r = plane.call("DELETE", f"/api/v1/tokens/{boot['id']}")
        assert r.status_code == 409 and "last live admin token" in r.json()["detail"]
        # An expired admin token does not count.
        brief = dict(plane.ok("POST", "/api/v1/tokens", json={"role": "admin", "expires_in_seconds": 1}))
        wait_until(
            lambda: httpx.get(f"{plane.url}/api/v1/tokens", headers=bearer(brief["token"])).status_code == 401,
            timeout=30,
            what="the short admin token to expire",
        )
        assert plane.call("DELETE", f"/api/v1/tokens/{boot['id']}").status_code == 409
        # Rotation: a successor first, then the old one goes; the successor is then the last.
        new = dict(plane.ok("POST", "/api/v1/tokens", json={"role": "admin", "name": "ops"}))
        headers = bearer(new["token"])
        assert httpx.delete(f"{plane.url}/api/v1/tokens/{boot['id']}", headers=headers).status_code == 204
        assert plane.call("GET", "/api/v1/tokens").status_code == 401  # the old one
        r = httpx.delete(f"{plane.url}/api/v1/tokens/{new['id']}", headers=headers)
        assert r.status_code == 409
        assert httpx.get(f"{plane.url}/api/v1/tokens", headers=headers).status_code == 200
    finally:
        plane.stop()
