"""Gateway instances keyed by an instance id, through a real control plane
(uvicorn, SQLite file or the PostgreSQL pass's database): two instances of
one Gateway bound to 0.0.0.0 are two registrations, each with its own
heartbeats, snapshots and ACKs; the same id again is the same row; members
without an id keep their old key, and one that starts sending an id takes
over its row. What a gateway sends by default (`meshctl.sidecar.instance`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from helpers import wait_until
from meshctl.sidecar.mesh import SidecarOptions
from meshproc import ControlPlane, https_listener, module_control_plane

cp = module_control_plane()

EDGE = {"listeners": [https_listener("shop", "shop.example.com"), {"name": "plain", "port": 8080, "protocol": "HTTP"}]}


def service(name: str, ns: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": {"ports": [{"port": 80}]}}


class Member:
    """One registering instance: its join token and what it PUTs."""

    def __init__(self, cp: ControlPlane, token: str, **body: Any):
        self.cp, self.body = cp, body
        self.headers = {"Authorization": f"Bearer {token}"}

    def put(self, **more: Any) -> httpx.Response:
        return httpx.put(f"{self.cp.url}/api/v1/sidecars", json={**self.body, **more}, headers=self.headers)

    def register(self, **more: Any) -> dict[str, Any]:
        r = self.put(**more)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def snapshot(self, sidecar: int) -> dict[str, Any]:
        r = httpx.get(
            f"{self.cp.url}/api/v1/sidecars/{sidecar}/snapshot", params={"wait": 0}, headers=self.headers, timeout=10
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def ack(self, sidecar: int, version: int) -> None:
        r = httpx.post(
            f"{self.cp.url}/api/v1/sidecars/{sidecar}/status", json={"version": version}, headers=self.headers
        )
        assert r.status_code == 204, r.text


def rows(cp: ControlPlane, ns: str) -> dict[str, dict[str, Any]]:
    """The registrations of namespace `ns` by instance id."""
    return {s["instance"]: s for s in cp.ok("GET", "/api/v1/sidecars", params={"namespace": ns})}


def gateway(cp: ControlPlane, ns: str) -> str:
    cp.apply(service("edge", ns), {"kind": "Gateway", "metadata": {"name": "edge", "namespace": ns}, "spec": EDGE})
    return cp.join_token("edge", ns)


def test_two_instances_at_0_0_0_0_are_two_rows_with_their_own_heartbeats_and_snapshots(cp: ControlPlane) -> None:
    token = gateway(cp, "gwi")
    body = {"namespace": "gwi", "service": "edge", "address": "0.0.0.0", "gateway": True}
    a, b = Member(cp, token, **body, instance="host-a-1"), Member(cp, token, **body, instance="host-c-2")
    first, second = a.register(), b.register()
    assert first["id"] != second["id"]
    assert (first["instance"], second["instance"]) == ("host-a-1", "host-c-2")
    live = rows(cp, "gwi")
    assert set(live) == {"host-a-1", "host-c-2"} and all(s["live"] for s in live.values())

    # Heartbeats: each its own row, the same id again is the same row.
    again = a.register()
    assert again["id"] == first["id"] and again["last_seen"] > first["last_seen"]
    assert rows(cp, "gwi")["host-c-2"]["last_seen"] == second["last_seen"]
    assert len(rows(cp, "gwi")) == 2

    # Snapshots and ACKs: each its own.
    for member, sidecar in ((a, first["id"]), (b, second["id"])):
        snap = member.snapshot(sidecar)
        assert [x["name"] for x in snap["config"]["listeners"]] == ["gateway/8080", "gateway/8443"]
    version = a.snapshot(first["id"])["version"]
    a.ack(first["id"], version)
    # (ACKs are written in batches: a moment later)
    wait_until(lambda: rows(cp, "gwi")["host-a-1"]["acked_version"] == version, timeout=20, what="the ACK")
    assert rows(cp, "gwi")["host-c-2"]["acked_version"] is None

    # One leaving leaves the other serving.
    assert httpx.delete(f"{cp.url}/api/v1/sidecars/{first['id']}", headers=a.headers).status_code == 204
    assert {k: s["live"] for k, s in rows(cp, "gwi").items()} == {"host-c-2": True}
    assert b.register()["id"] == second["id"]


def test_members_without_an_id_keep_their_key_and_one_that_starts_sending_one_keeps_its_row(
    cp: ControlPlane,
) -> None:
    token = gateway(cp, "old")
    old_gateway = Member(cp, token, namespace="old", service="edge", address="0.0.0.0", gateway=True)
    before = old_gateway.register()
    assert before["instance"] == "0.0.0.0:0"
    assert old_gateway.register()["id"] == before["id"]  # (what a gateway of before did: one row)
    upgraded = old_gateway.register(instance="edge-1-3f2a9c1b")  # the same gateway, upgraded: its row
    assert upgraded["id"] == before["id"] and upgraded["instance"] == "edge-1-3f2a9c1b"
    other = old_gateway.register(instance="edge-2-77aa0011")
    assert other["id"] != before["id"]
    assert set(rows(cp, "old")) == {"edge-1-3f2a9c1b", "edge-2-77aa0011"}

    cp.apply(service("shop", "old"))
    shop = Member(cp, cp.join_token("shop", "old"), namespace="old", service="shop", address="10.9.0.3")
    plain = shop.register(inbound_port=15006, app_port=8080)
    assert plain["instance"] == "10.9.0.3:15006"
    named = shop.register(inbound_port=15006, app_port=8080, instance="shop-a")  # its endpoint: its row
    assert named["id"] == plain["id"] and named["instance"] == "shop-a"
    endpoints = cp.ok("GET", "/api/v1/services/old/shop/endpoints")
    assert [(e["address"], e["port"]) for e in endpoints] == [("10.9.0.3", 15006)]
    # The same instance on another port: its endpoint moves with it, one row still.
    moved = shop.register(inbound_port=15007, app_port=8080, instance="shop-a")
    assert moved["id"] == plain["id"]
    endpoints = cp.ok("GET", "/api/v1/services/old/shop/endpoints")
    assert [(e["address"], e["port"]) for e in endpoints] == [("10.9.0.3", 15007)]
    # Another instance restarted at that endpoint with a new id takes its place (one row per endpoint).
    replaced = shop.register(inbound_port=15007, app_port=8080, instance="shop-b")
    assert replaced["id"] == plain["id"]
    assert [s["instance"] for s in rows(cp, "old").values() if not s["gateway"]] == ["shop-b"]


def test_a_bad_instance_id_is_a_422_naming_the_field(cp: ControlPlane) -> None:
    token = gateway(cp, "bad")
    member = Member(cp, token, namespace="bad", service="edge", address="0.0.0.0", gateway=True)
    for bad in ("", "-x", "a b", "x" * 129):
        r = member.put(instance=bad)
        assert r.status_code == 422, r.text
        assert [e["loc"] for e in r.json()["detail"]] == [["body", "instance"]]
    assert rows(cp, "bad") == {}


def test_get_sidecars_shows_each_gateway_instance(cp: ControlPlane, tmp_path: Path) -> None:
    token = gateway(cp, "cli")
    for instance in ("edge-a", "edge-c"):
        Member(cp, token, namespace="cli", service="edge", address="0.0.0.0", gateway=True).register(instance=instance)
    table = cp.cli("get", "sidecars", "-n", "cli", data_dir=tmp_path)
    assert "0.0.0.0 (gateway edge-a)" in table and "0.0.0.0 (gateway edge-c)" in table


def test_a_gateway_sends_an_id_kept_in_its_cache_dir_and_a_sidecar_only_when_given_one(tmp_path: Path) -> None:
    def options(cache: str, **more: Any) -> SidecarOptions:
        base = {"service": "edge", "app_port": 0, "inbound_port": 0, "address": "0.0.0.0", "gateway": True}
        return SidecarOptions(control_plane="http://127.0.0.1:1", cache_dir=tmp_path / cache, **(base | more))

    first = options("host-a").registration()["instance"]
    assert options("host-a").registration()["instance"] == first  # a restart: the same id
    assert options("host-c").registration()["instance"] != first  # another host: another
    assert (tmp_path / "host-a" / "default.edge.gateway.0.0.0.0" / "instance-id").read_text().strip() == first
    assert options("host-a", instance="edge-1").registration()["instance"] == "edge-1"  # --instance-id
    sidecar = {"gateway": False, "inbound_port": 15006, "app_port": 8080, "address": "10.0.0.2"}
    assert "instance" not in options("s", **sidecar).registration()
    assert options("s", **sidecar, instance="web-1").registration()["instance"] == "web-1"
