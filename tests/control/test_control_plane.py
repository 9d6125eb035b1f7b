"""The control plane as a real process: uvicorn, a real SQLite file, bearer
tokens, validation with field paths, optimistic concurrency, revisions."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from helpers import unused_port, wait_until


@dataclass
class ControlPlane:
    url: str
    data_dir: Path
    admin: dict[str, str]
    reader: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    data_dir = tmp_path_factory.mktemp("cp")
    port = unused_port()
    log = data_dir / "control-plane.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshctl", "control-plane", "--data-dir", str(data_dir), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=30, what="the control plane to serve")
        tokens = {role: (data_dir / f"{role}.token").read_text().strip() for role in ("admin", "reader")}
        yield ControlPlane(
            url=url,
            data_dir=data_dir,
            admin={"Authorization": f"Bearer {tokens['admin']}"},
            reader={"Authorization": f"Bearer {tokens['reader']}"},
            log=log,
        )
    finally:
        proc.terminate()
        proc.wait(10)


def test_tokens_are_0600_files_and_never_logged(cp: ControlPlane) -> None:
    for role in ("admin", "reader"):
        path = cp.data_dir / f"{role}.token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().strip() not in cp.log.read_text()
    assert "created the admin API token" in cp.log.read_text()


def test_missing_or_wrong_token_is_401(cp: ControlPlane) -> None:
    assert httpx.get(f"{cp.url}/api/v1/services").status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{cp.url}/api/v1/services", headers=bad).status_code == 401
    r = httpx.post(f"{cp.url}/api/v1/services", json={"name": "x"}, headers=bad)
    assert r.status_code == 401


def test_reader_cannot_write_and_nothing_is_written(cp: ControlPlane) -> None:
    r = httpx.post(f"{cp.url}/api/v1/services", json={"name": "sneaky"}, headers=cp.reader)
    assert r.status_code == 403
    assert httpx.get(f"{cp.url}/api/v1/services/default/sneaky", headers=cp.reader).status_code == 404


def test_create_read_update_delete_with_revisions(cp: ControlPlane) -> None:
    before = len(httpx.get(f"{cp.url}/api/v1/revisions", headers=cp.reader).json())
    body = {"name": "catalog", "ports": [{"name": "http", "port": 8080, "protocol": "http"}]}
    r = httpx.post(f"{cp.url}/api/v1/services", json=body, headers=cp.admin)
    assert r.status_code == 201, r.text
    assert r.json()["resource_version"] == 1
    got = httpx.get(f"{cp.url}/api/v1/services/default/catalog", headers=cp.reader).json()
    assert got["ports"] == [{"name": "http", "port": 8080, "protocol": "http"}]

    update = {"ports": [{"name": "grpc", "port": 9090, "protocol": "grpc"}], "resource_version": 1}
    r = httpx.put(f"{cp.url}/api/v1/services/default/catalog", json=update, headers=cp.admin)
    assert r.status_code == 200 and r.json()["resource_version"] == 2
    # The same update again is based on a stale version now.
    r = httpx.put(f"{cp.url}/api/v1/services/default/catalog", json=update, headers=cp.admin)
    assert r.status_code == 409
    assert "resource_version 2" in r.json()["detail"]

    assert httpx.delete(f"{cp.url}/api/v1/services/default/catalog", headers=cp.admin).status_code == 204
    revisions = httpx.get(f"{cp.url}/api/v1/revisions", headers=cp.reader).json()
    assert [(x["action"], x["name"]) for x in revisions[before:]] == [
        ("create", "default/catalog"),
        ("update", "default/catalog"),
        ("delete", "default/catalog"),
    ]


def test_invalid_input_is_422_with_field_paths(cp: ControlPlane) -> None:
    body = {"name": "Bad_Name", "ports": [{"port": 70000, "protocol": "smtp"}]}
    r = httpx.post(f"{cp.url}/api/v1/services", json=body, headers=cp.admin)
    assert r.status_code == 422
    locs = {tuple(e["loc"]) for e in r.json()["detail"]}
    assert ("body", "name") in locs
    assert ("body", "ports", 0, "port") in locs
    assert ("body", "ports", 0, "protocol") in locs
    assert httpx.get(f"{cp.url}/api/v1/services", headers=cp.reader).json() == []


def test_duplicate_is_409(cp: ControlPlane) -> None:
    body = {"name": "pricing", "namespace": "shop"}
    assert httpx.post(f"{cp.url}/api/v1/services", json=body, headers=cp.admin).status_code == 201
    r = httpx.post(f"{cp.url}/api/v1/services", json=body, headers=cp.admin)
    assert r.status_code == 409
    assert "shop/pricing already exists" in r.json()["detail"]
    httpx.delete(f"{cp.url}/api/v1/services/shop/pricing", headers=cp.admin)


def _service(cp: ControlPlane, name: str, namespace: str = "default") -> None:
    r = httpx.post(f"{cp.url}/api/v1/services", json={"name": name, "namespace": namespace}, headers=cp.admin)
    assert r.status_code == 201, r.text


def route_body(name: str, parent: str, *backends: tuple[str, int]) -> dict:
    return {
        "name": name,
        "spec": {
            "parentRefs": [{"name": parent}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{"name": b, "weight": w} for b, w in backends],
                }
            ],
        },
    }


def test_route_references_must_exist(cp: ControlPlane) -> None:
    _service(cp, "front")
    body = route_body("canary", "front", ("ghost-v1", 90), ("ghost-v2", 10))
    r = httpx.post(f"{cp.url}/api/v1/httproutes", json=body, headers=cp.admin)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [d["loc"] for d in detail] == [
        ["body", "spec", "rules", 0, "backendRefs", 0, "name"],
        ["body", "spec", "rules", 0, "backendRefs", 1, "name"],
    ]
    assert detail[0]["msg"] == "service default/ghost-v1 does not exist"
    assert httpx.get(f"{cp.url}/api/v1/httproutes/default/canary", headers=cp.reader).status_code == 404
    bad_shape = {"name": "x", "spec": {"parentRefs": [], "rules": [{"backendRefs": [{"name": "front", "weight": -1}]}]}}
    r = httpx.post(f"{cp.url}/api/v1/httproutes", json=bad_shape, headers=cp.admin)
    assert r.status_code == 422
    locs = {tuple(e["loc"]) for e in r.json()["detail"]}
    assert ("body", "spec", "parentRefs") in locs
    assert ("body", "spec", "rules", 0, "backendRefs", 0, "weight") in locs


def test_revisions_diff_and_rollback_restore_the_exact_config(cp: ControlPlane) -> None:
    for name in ("web", "api-v1", "api-v2"):
        _service(cp, name, "rb")
    body = route_body("split", "web", ("api-v1", 100))
    body["namespace"] = "rb"
    r = httpx.post(f"{cp.url}/api/v1/httproutes", json=body, headers=cp.admin)
    assert r.status_code == 201, r.text
    good_revision = httpx.get(f"{cp.url}/api/v1/revisions", headers=cp.reader).json()[-1]["id"]
    good_spec = r.json()["spec"]

    canary = route_body("split", "web", ("api-v1", 90), ("api-v2", 10))
    update = {"spec": canary["spec"], "resource_version": 1}
    assert httpx.put(f"{cp.url}/api/v1/httproutes/rb/split", json=update, headers=cp.admin).status_code == 200
    # A referenced service cannot go while the route uses it.
    r = httpx.delete(f"{cp.url}/api/v1/services/rb/api-v2", headers=cp.admin)
    assert r.status_code == 409 and "HTTPRoute rb/split" in r.json()["detail"]
    latest = httpx.get(f"{cp.url}/api/v1/revisions", headers=cp.reader).json()[-1]["id"]

    changes = httpx.get(f"{cp.url}/api/v1/revisions/{good_revision}/diff/{latest}", headers=cp.reader).json()
    assert [(c["kind"], c["name"], c["change"]) for c in changes] == [("HTTPRoute", "rb/split", "changed")]

    assert httpx.post(f"{cp.url}/api/v1/revisions/{good_revision}/rollback", headers=cp.reader).status_code == 403
    r = httpx.post(f"{cp.url}/api/v1/revisions/{good_revision}/rollback", headers=cp.admin)
    assert r.status_code == 200 and r.json()["action"] == "rollback"
    restored = httpx.get(f"{cp.url}/api/v1/httproutes/rb/split", headers=cp.reader).json()
    assert restored["spec"] == good_spec
    assert restored["resource_version"] == 3
    after = httpx.get(f"{cp.url}/api/v1/revisions/{r.json()['id']}", headers=cp.reader).json()["state"]
    before = httpx.get(f"{cp.url}/api/v1/revisions/{good_revision}", headers=cp.reader).json()["state"]
    assert after == before


def test_endpoints_register_heartbeat_expire_and_go_with_their_service(cp: ControlPlane) -> None:
    _service(cp, "pricing", "ep")
    base = f"{cp.url}/api/v1/services/ep/pricing/endpoints"
    v1 = {"address": "127.0.0.1", "port": 9001, "labels": {"version": "v1"}, "ttl_seconds": 60}
    v2 = {"address": "127.0.0.1", "port": 9002, "labels": {"version": "v2"}, "ttl_seconds": 1, "weight": 2}
    first = httpx.put(base, json=v1, headers=cp.admin)
    assert first.status_code == 200, first.text
    # Registering again is a heartbeat: same endpoint, later expiry.
    again = httpx.put(base, json=v1, headers=cp.admin).json()
    assert again["id"] == first.json()["id"] and again["expires_at"] > first.json()["expires_at"]
    assert httpx.put(base, json=v2, headers=cp.admin).status_code == 200
    assert httpx.put(base, json=v2, headers=cp.reader).status_code == 403

    def live_ports() -> list[int]:
        return [e["port"] for e in httpx.get(base, headers=cp.reader).json()]

    # The 1-second instance stops heartbeating and drops out of the live set.
    wait_until(lambda: live_ports() == [9001], timeout=10, what="the expired endpoint to leave")
    everything = httpx.get(base, params={"include_expired": True}, headers=cp.reader).json()
    assert sorted(e["port"] for e in everything) == [9001, 9002]

    bad = httpx.put(base, json={"address": "", "port": 0, "ttl_seconds": 0}, headers=cp.admin)
    assert bad.status_code == 422
    assert {tuple(e["loc"]) for e in bad.json()["detail"]} >= {
        ("body", "address"),
        ("body", "port"),
        ("body", "ttl_seconds"),
    }
    assert httpx.put(f"{cp.url}/api/v1/services/ep/nope/endpoints", json=v1, headers=cp.admin).status_code == 404

    ep_id = first.json()["id"]
    assert httpx.delete(f"{base}/{ep_id}", headers=cp.admin).status_code == 204
    assert httpx.delete(f"{base}/{ep_id}", headers=cp.admin).status_code == 404
    assert httpx.delete(f"{cp.url}/api/v1/services/ep/pricing", headers=cp.admin).status_code == 204
    _service(cp, "pricing", "ep")
    assert httpx.get(base, params={"include_expired": True}, headers=cp.reader).json() == []


def test_diff_from_the_empty_mesh_and_a_rollback_that_changes_nothing(cp: ControlPlane) -> None:
    _service(cp, "zero", "z0")
    latest = httpx.get(f"{cp.url}/api/v1/revisions", headers=cp.reader).json()[-1]["id"]
    changes = httpx.get(f"{cp.url}/api/v1/revisions/0/diff/{latest}", headers=cp.reader).json()
    assert ("Service", "z0/zero", "added") in {(c["kind"], c["name"], c["change"]) for c in changes}
    r = httpx.post(f"{cp.url}/api/v1/revisions/{latest}/rollback", headers=cp.admin)
    assert r.status_code == 200 and r.json()["id"] == latest  # already there: no new revision
    assert httpx.get(f"{cp.url}/api/v1/revisions/0", headers=cp.reader).status_code == 404
