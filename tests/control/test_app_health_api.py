"""App health (issue 15, item 3) in the control plane: a Service's `healthCheck` is validated
(422 naming the field) and kept by the REST bodies and apply; a sidecar's reported `health` gates
its endpoint (only None and "healthy" are in `load_mesh` and so in compiled snapshots); a change
in or out raises the generation, so a watcher gets its new snapshot at once; the endpoints API
shows the health. Migration 0014 adds the columns and takes them out again."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import Engine, inspect
from sqlmodel import Session

import pg
from meshctl.control import crud, instances
from meshctl.control.compiler import SidecarSpec, compile_sidecar
from meshctl.control.db import alembic_config, make_engine, migrate
from meshctl.control.kinds.common import ApplyDocument
from meshctl.control.kinds.service import Service
from meshctl.control.models import EndpointRegister, SidecarRegister
from meshctl.control.push import load_mesh
from meshproc import ControlPlane, module_control_plane

cp = module_control_plane()

CHECK = {"httpGet": {"path": "/healthz"}, "periodSeconds": 2, "failureThreshold": 2}
STORED = {
    "httpGet": {"path": "/healthz"},
    "periodSeconds": 2,
    "timeoutSeconds": 1,
    "successThreshold": 1,
    "failureThreshold": 2,
}


def service_doc(name: str, check: dict[str, Any] | None = None, ns: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"port": 80}]}
    if check is not None:
        spec["healthCheck"] = check
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def pruned(value: Any) -> Any:
    """Without nulls: how the API shows a health check (its unset fields null) against how it is stored."""
    if isinstance(value, dict):
        return {k: pruned(v) for k, v in value.items() if v is not None}
    return value


def errors(r: httpx.Response) -> dict[tuple[Any, ...], str]:
    assert r.status_code == 422, r.text
    return {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}


# === the spec ===


@pytest.mark.parametrize(
    ("check", "where", "says"),
    [
        ({"periodSeconds": 5}, (), "exactly one of httpGet and tcpSocket"),
        ({"httpGet": {"path": "/"}, "tcpSocket": {}}, (), "exactly one of httpGet and tcpSocket"),
        ({"httpGet": {"path": "healthz"}}, ("httpGet", "path"), "pattern"),
        ({"httpGet": {"path": "/", "port": 70000}}, ("httpGet", "port"), "less than or equal to 65535"),
        ({"tcpSocket": {}, "periodSeconds": 0}, ("periodSeconds",), "greater than or equal to 1"),
        ({"tcpSocket": {}, "failureThreshold": 0}, ("failureThreshold",), "greater than or equal to 1"),
        ({"tcpSocket": {}, "initialDelaySeconds": 3}, ("initialDelaySeconds",), "unknown field"),
    ],
)
def test_a_bad_health_check_is_422_naming_the_field(
    cp: ControlPlane, check: dict[str, Any], where: tuple[str, ...], says: str
) -> None:
    applied = errors(cp.call("POST", "/api/v1/apply", json={"documents": [service_doc("bad", check)]}))
    [(loc, msg)] = applied.items()
    assert loc == ("body", "documents", 0, "spec", "healthCheck", *where) and says in msg, applied
    created = errors(cp.call("POST", "/api/v1/services", json={"name": "bad", "health_check": check}))
    [(loc, msg)] = created.items()
    assert loc == ("body", "health_check", *where) and says in msg, created
    assert cp.call("GET", "/api/v1/services/default/bad").status_code == 404  # nothing half-written


def test_apply_and_the_rest_bodies_keep_the_health_check(cp: ControlPlane) -> None:
    cp.apply(service_doc("kept", CHECK))
    svc = cp.ok("GET", "/api/v1/services/default/kept")
    assert pruned(svc["health_check"]) == STORED  # defaults filled in, camelCase as written
    assert (
        cp.ok("GET", "/api/v1/revisions/" + str(cp.ok("GET", "/api/v1/revisions")[-1]["id"]))["state"]["Service"][
            "default/kept"
        ]["healthCheck"]
        == STORED
    )
    # Applying the same again changes nothing; snake_case is taken too.
    same = {"http_get": {"path": "/healthz"}, "period_seconds": 2, "failure_threshold": 2}
    [result] = cp.apply(service_doc("kept", same))
    assert result["action"] == "unchanged"
    # A PUT without it drops it (it replaces the spec), a PUT with a TCP one sets that.
    body = {"ports": [{"port": 80}], "resource_version": svc["resource_version"]}
    assert cp.ok("PUT", "/api/v1/services/default/kept", json=body)["health_check"] is None
    body = {"ports": [{"port": 80}], "resource_version": svc["resource_version"] + 1, "health_check": {"tcpSocket": {}}}
    tcp = pruned(cp.ok("PUT", "/api/v1/services/default/kept", json=body)["health_check"])
    assert tcp == {
        "tcpSocket": {},
        "periodSeconds": 5,
        "timeoutSeconds": 1,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    created = cp.ok("POST", "/api/v1/services", json={"name": "made", "health_check": CHECK})
    assert pruned(created["health_check"]) == STORED
    # A service without one is recorded as before (no healthCheck key: older revisions compare equal).
    cp.apply(service_doc("plain"))
    last = cp.ok("GET", "/api/v1/revisions/" + str(cp.ok("GET", "/api/v1/revisions")[-1]["id"]))
    assert "healthCheck" not in last["state"]["Service"]["default/plain"]


# === gating, in load_mesh and the compiled snapshot ===


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    """The database the gating runs on: an SQLite file, or PostgreSQL in the suite's PostgreSQL pass."""
    url = pg.database() if pg.on_postgres() else f"sqlite:///{tmp_path / 'mesh.db'}"
    migrate(url)
    return make_engine(url)


def register(session: Session, svc: Service, port: int, health: str | None, **kw: Any) -> None:
    data = SidecarRegister(service=svc.name, address="127.0.0.1", inbound_port=port, app_port=port + 1000, **kw)
    instances.register_sidecar(session, svc=svc, data=data.model_copy(update={"health": health}))


def endpoints(session: Session, service: str = "default/web") -> list[int]:
    return sorted(e.port for e in load_mesh(session).endpoints.get(service, []))


def compiled_endpoints(session: Session) -> list[str]:
    """The endpoints of the web cluster in a caller's compiled snapshot."""
    caller = SidecarSpec(
        namespace="default",
        service="caller",
        address="127.0.0.1",
        inbound_port=16000,
        app_port=17000,
        upstreams=(("web", 18000),),
    )
    config = compile_sidecar(load_mesh(session), caller)
    [web] = [c for c in config["clusters"] if "default/web" in c["name"]]
    return sorted(e["address"] for e in web["endpoints"])


def test_only_healthy_or_unchecked_instances_are_endpoints(engine: Engine) -> None:
    with Session(engine) as session:
        crud.apply(
            session, documents=[ApplyDocument.model_validate(d) for d in (service_doc("web"), service_doc("caller"))]
        )
        web = crud.get(session, Service, namespace="default", name="web")
        assert web is not None
        register(session, web, 15001, None)
        register(session, web, 15002, "unknown")
        register(session, web, 15003, "healthy")
        register(session, web, 15004, "unhealthy")
        # An endpoint registered through the endpoints API has no sidecar, so no health: in, as before.
        instances.register_endpoint(session, svc=web, data=EndpointRegister(address="127.0.0.2", port=9000))
        assert endpoints(session) == [9000, 15001, 15003]
        assert compiled_endpoints(session) == ["127.0.0.1:15001", "127.0.0.1:15003", "127.0.0.2:9000"]
        # The endpoints API lists them all, each with its health.
        assert instances.endpoint_health(session, svc=web) == {
            ("127.0.0.1", 15001): None,
            ("127.0.0.1", 15002): "unknown",
            ("127.0.0.1", 15003): "healthy",
            ("127.0.0.1", 15004): "unhealthy",
        }
        assert [e.port for e in instances.list_endpoints(session, svc=web)] == [15001, 15002, 15003, 15004, 9000]


def test_a_change_in_or_out_raises_the_generation_and_nothing_else_does(engine: Engine) -> None:
    with Session(engine) as session:
        crud.apply(session, documents=[ApplyDocument.model_validate(service_doc("web"))])
        web = crud.get(session, Service, namespace="default", name="web")
        assert web is not None
        register(session, web, 15001, "unknown")
        steps = [
            ("unknown", False),  # a heartbeat like the last
            ("unhealthy", False),  # still out
            ("healthy", True),  # in
            ("healthy", False),
            ("unhealthy", True),  # out
            (None, True),  # its checks removed: in
        ]
        for health, bumped in steps:
            before = crud.generation(session)
            register(session, web, 15001, health)
            assert (crud.generation(session) > before) is bumped, (health, bumped)
            assert endpoints(session) == ([15001] if instances.serves(health) else [])


def test_an_unprobed_instance_of_a_checked_service_is_unknown(engine: Engine) -> None:
    """A sidecar learns of its Service's healthCheck from its registration's answer: until it
    reports a probe's result, the instance is no endpoint."""
    with Session(engine) as session:
        crud.apply(session, documents=[ApplyDocument.model_validate(service_doc("web", CHECK))])
        web = crud.get(session, Service, namespace="default", name="web")
        assert web is not None
        register(session, web, 15001, None)
        assert endpoints(session) == []
        assert instances.endpoint_health(session, svc=web)[("127.0.0.1", 15001)] == "unknown"
        register(session, web, 15001, "healthy")
        assert endpoints(session) == [15001]


# === through the API: registration answer, endpoints list, watchers ===


def snapshot_endpoints(snapshot: dict[str, Any]) -> list[str]:
    [web] = [c for c in snapshot["config"]["clusters"] if "apihealth/web" in c["name"]]
    return sorted(e["address"] for e in web["endpoints"])


def test_the_api_hands_out_the_check_shows_health_and_pushes_at_once(cp: ControlPlane) -> None:
    cp.apply(service_doc("web", CHECK, ns="apihealth"), service_doc("caller", ns="apihealth"))

    def put(service: str, port: int, **more: Any) -> dict[str, Any]:
        body = {"namespace": "apihealth", "service": service, "address": "127.0.0.1", "inbound_port": port}
        return dict(cp.ok("PUT", "/api/v1/sidecars", json={**body, "app_port": port + 1000, **more}))

    first = put("web", 15101)
    assert pruned(first["health_check"]) == STORED and first["health"] == "unknown"  # told what to probe
    assert put("caller", 15100)["health_check"] is None
    put("web", 15102, health="healthy")
    caller = put("caller", 15100, upstreams={"web": 18000})
    listed = cp.ok("GET", "/api/v1/services/apihealth/web/endpoints")
    assert [(e["port"], e["health"]) for e in listed] == [(15101, "unknown"), (15102, "healthy")]
    snap = cp.ok("GET", f"/api/v1/sidecars/{caller['id']}/snapshot", params={"wait": 0})
    assert snapshot_endpoints(snap) == ["127.0.0.1:15102"]

    # A watcher holding this version gets the next one as soon as an instance turns healthy.
    got: dict[str, Any] = {}

    def watch() -> None:
        r = cp.call("GET", f"/api/v1/sidecars/{caller['id']}/snapshot", params={"version": snap["version"], "wait": 60})
        got.update(status=r.status_code, body=r.json(), at=time.monotonic())

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.3)  # (let the long-poll park: without it the test passes all the same)
    sent = time.monotonic()
    put("web", 15101, health="healthy")
    watcher.join(timeout=30)
    assert got["status"] == 200 and got["at"] - sent < 5, got
    assert snapshot_endpoints(got["body"]) == ["127.0.0.1:15101", "127.0.0.1:15102"]
    put("web", 15102, health="unhealthy")
    snap = cp.ok("GET", f"/api/v1/sidecars/{caller['id']}/snapshot", params={"wait": 0})
    assert snapshot_endpoints(snap) == ["127.0.0.1:15101"]
    sidecars = {s["inbound_port"]: s for s in cp.sidecars() if s["namespace"] == "apihealth"}
    assert (sidecars[15102]["health"], sidecars[15100]["health"]) == ("unhealthy", None)


def test_a_bad_health_report_is_422(cp: ControlPlane) -> None:
    body = {"service": "kept", "address": "127.0.0.1", "inbound_port": 15200, "app_port": 8080, "health": "fine"}
    assert list(errors(cp.call("PUT", "/api/v1/sidecars", json=body))) == [("body", "health")]


# === migration 0014 ===


def test_0014_adds_health_checks_and_sidecar_health_and_drops_them_saying_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    migrate(url, "0013")
    engine = make_engine(url)
    ports = json.dumps([{"name": "http", "port": 80, "protocol": "http"}])
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO service (resource_version, created_at, updated_at, name, namespace, ports, mtls)"
            " VALUES (1, '2026-01-01', '2026-01-01', 'web', 'default', ?, 'STRICT')",
            (ports,),
        )
        conn.exec_driver_sql(
            "INSERT INTO sidecar (service_id, address, inbound_port, app_port, upstreams, last_seen, expires_at)"
            " VALUES (1, '127.0.0.1', 15006, 8080, '{}', '2026-01-01', '2026-01-01')"
        )
    migrate(url, "0014")
    spec = {"ports": json.loads(ports), "mtls": "STRICT"}
    with engine.begin() as conn:
        assert tuple(conn.exec_driver_sql("SELECT health_check FROM service").one()) == (None,)
        assert tuple(conn.exec_driver_sql("SELECT health FROM sidecar").one()) == (None,)  # an endpoint, as before
        conn.exec_driver_sql("UPDATE service SET health_check = ?", (json.dumps(STORED),))
        conn.exec_driver_sql("UPDATE sidecar SET health = 'unhealthy'")
        changes = [{"kind": "Service", "name": "default/web", "before": spec, "after": {**spec, "healthCheck": STORED}}]
        conn.exec_driver_sql(
            "INSERT INTO revision (created_at, action, kind, name, changes)"
            " VALUES ('2026-01-02', 'apply', 'Service', 'default/web', ?)",
            (json.dumps(changes),),
        )
    with caplog.at_level("WARNING", logger="alembic.runtime.migration"):
        command.downgrade(alembic_config(url), "0013")
    assert "health checks of service default/web are lost" in caplog.text
    assert "taken out of 1 revisions" in caplog.text
    with engine.connect() as conn:
        assert "health_check" not in {c["name"] for c in inspect(conn).get_columns("service")}
        assert "health" not in {c["name"] for c in inspect(conn).get_columns("sidecar")}
        [recorded] = json.loads(conn.exec_driver_sql("SELECT changes FROM revision").scalar_one())
        assert recorded["before"] == recorded["after"] == spec
        assert conn.exec_driver_sql("SELECT count(*) FROM sidecar").scalar() == 1  # not cascaded away
    migrate(url, "0014")  # and up again
    engine.dispose()
