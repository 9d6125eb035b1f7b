"""Ids and versions past what the databases hold (PostgreSQL's signed 32-bit
INTEGER, SQLite's 64-bit one) are a 422 naming the field, not the driver's 500: in a path (revision,
token, sidecar, endpoint ids) and in a sidecar's ACK or NACK, where one bogus
ACK used to make the whole batch of ACKs written with it fail (schemathesis
found the 500s; the lost batch followed from them)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from helpers import wait_until
from meshproc import ControlPlane, module_control_plane, service

cp = module_control_plane()

HUGE = 2**70
#: Past PostgreSQL's INTEGER, within SQLite's: a 422 on both, as the API does not depend on the database.
PAST_INT32 = 2**31


@pytest.fixture(scope="module", autouse=True)
def services(cp: ControlPlane) -> None:
    cp.apply(service("pricing"))


def register(cp: ControlPlane, token: str, inbound_port: int) -> dict[str, Any]:
    body = {"service": "pricing", "address": "127.0.0.1", "inbound_port": inbound_port, "app_port": 8080}
    r = httpx.put(f"{cp.url}/api/v1/sidecars", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", f"/api/v1/revisions/{HUGE}", "revision"),
        ("GET", f"/api/v1/revisions/0/diff/{HUGE}", "after"),
        ("POST", f"/api/v1/revisions/{HUGE}/rollback", "revision"),
        ("DELETE", f"/api/v1/tokens/{HUGE}", "token_id"),
        ("DELETE", f"/api/v1/services/default/pricing/join-tokens/{HUGE}", "token_id"),
        ("DELETE", f"/api/v1/services/default/pricing/endpoints/{HUGE}", "endpoint_id"),
        ("DELETE", f"/api/v1/sidecars/{HUGE}", "sidecar_id"),
        ("GET", f"/api/v1/sidecars/{HUGE}/proxy-config", "sidecar_id"),
        ("GET", f"/api/v1/revisions/{PAST_INT32}", "revision"),
        ("GET", f"/api/v1/revisions/1/diff/{PAST_INT32}", "after"),
        ("DELETE", f"/api/v1/tokens/{PAST_INT32}", "token_id"),
        ("DELETE", f"/api/v1/sidecars/{PAST_INT32}", "sidecar_id"),
    ],
)
def test_an_id_past_the_database_range_is_a_422(cp: ControlPlane, method: str, path: str, field: str) -> None:
    r = cp.call(method, path)
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [["path", field]]


def test_an_ack_or_nack_past_the_range_is_a_422_and_the_other_acks_are_recorded(cp: ControlPlane) -> None:
    token = cp.join_token("pricing")
    bogus, good = register(cp, token, 15001), register(cp, token, 15002)
    headers = {"Authorization": f"Bearer {token}"}
    generation = cp.ok("GET", "/api/v1/mesh")["generation"]

    # Within one ACK batch (written every fraction of a second): the good ACK, then the bogus one.
    with httpx.Client(base_url=cp.url, headers=headers, timeout=10) as client:
        r = client.post(f"/api/v1/sidecars/{good['id']}/status", json={"version": generation})
        assert r.status_code == 204
        for report in ({"version": HUGE}, {"version": HUGE, "error": "bad config"}, {"version": PAST_INT32}):
            r = client.post(f"/api/v1/sidecars/{bogus['id']}/status", json=report)
            assert r.status_code == 422, r.text
            assert [e["loc"] for e in r.json()["detail"]] == [["body", "version"]]

    def acked() -> bool:
        rows = {s["id"]: s for s in cp.sidecars()}
        return rows[good["id"]]["acked_version"] == generation

    wait_until(acked, timeout=15, what="the good sidecar's ACK to be recorded")
    assert next(s for s in cp.sidecars() if s["id"] == bogus["id"])["acked_version"] is None
