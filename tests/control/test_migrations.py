"""Migrations: the shipped scripts build an empty database to head, agree
with the models and go back down to base, on SQLite and on PostgreSQL; each
revision's data moves (on SQLite); the exported OpenAPI document is current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import SQLModel

import meshctl.control.kinds.registry  # registers the kinds' tables
import meshctl.control.models  # registers the other tables
import meshctl.control.traces.models  # noqa: F401  (registers the trace store's tables)
import pg
from meshctl.control import openapi
from meshctl.control.db import alembic_config, make_engine, migrate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database's URL: an SQLite file, or a PostgreSQL database (tests/pg.py), in either pass."""
    return f"sqlite:///{tmp_path / 'mesh.db'}" if request.param == "sqlite" else pg.database("migrations")


def test_every_revision_migrates_up_to_head_matching_the_models_and_down_to_base(empty_database: str) -> None:
    url = empty_database
    script = ScriptDirectory.from_config(alembic_config(url))
    revisions = [r.revision for r in script.walk_revisions()][::-1]
    assert revisions, "no migration scripts were shipped"
    for rev in revisions:  # from empty, one revision at a time, as an upgrade from any release would
        migrate(url, rev)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == script.get_current_head()
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        assert {"service", "revision", "apitoken"} <= set(inspect(conn).get_table_names())
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    # And back, one revision at a time, to an empty database (but alembic's own table).
    for rev in [*revisions[-2::-1], "base"]:
        command.downgrade(alembic_config(url), rev)
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == (None if rev == "base" else rev)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    migrate(url)  # and up again
    engine.dispose()


def test_openapi_document_is_current() -> None:
    exported = (ROOT / "api" / "openapi.json").read_text()
    assert exported == openapi.render(), (
        "api/openapi.json is stale: python -m meshctl.control.openapi > api/openapi.json"
    )


def test_0004_turns_whole_state_revisions_into_changes_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    migrate(url, "0003")
    engine = make_engine(url)
    states = [
        {"Service": {"default/a": []}, "HTTPRoute": {}},
        {"Service": {"default/a": [{"port": 80}]}},
        {"Service": {}, "HTTPRoute": {}},
    ]
    with engine.begin() as conn:
        for state in states:
            conn.exec_driver_sql(
                "INSERT INTO revision (created_at, action, kind, name, state) VALUES ('2026-01-01', 'x', 'Service',"
                " 'default/a', ?)",
                (json.dumps(state),),
            )
    migrate(url, "0004")
    with engine.connect() as conn:
        changes = [json.loads(r[0]) for r in conn.exec_driver_sql("SELECT changes FROM revision ORDER BY id")]
        assert conn.exec_driver_sql("SELECT generation FROM meshstate").scalar() == 3
    assert changes == [
        [{"kind": "Service", "name": "default/a", "before": None, "after": []}],
        [{"kind": "Service", "name": "default/a", "before": [], "after": [{"port": 80}]}],
        [{"kind": "Service", "name": "default/a", "before": [{"port": 80}], "after": None}],
    ]
    command.downgrade(alembic_config(url), "0003")
    with engine.connect() as conn:
        back = [json.loads(r[0]) for r in conn.exec_driver_sql("SELECT state FROM revision ORDER BY id")]
    assert back == [{"Service": {"default/a": []}}, {"Service": {"default/a": [{"port": 80}]}}, {"Service": {}}]
    engine.dispose()


def test_0005_adds_authorization_policies_and_service_mtls_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    migrate(url, "0004")
    engine = make_engine(url)
    ports = [{"name": "http", "port": 80, "protocol": "http"}]
    changes = [
        {"kind": "Service", "name": "default/a", "before": None, "after": ports},
        {"kind": "HTTPRoute", "name": "default/r", "before": None, "after": {"rules": []}},
    ]
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO service (resource_version, created_at, updated_at, name, namespace, ports)"
            " VALUES (1, '2026-01-01', '2026-01-01', 'a', 'default', ?)",
            (json.dumps(ports),),
        )
        conn.exec_driver_sql(
            "INSERT INTO revision (created_at, action, kind, name, changes)"
            " VALUES ('2026-01-01', 'apply', '*', 'x', ?)",
            (json.dumps(changes),),
        )
    migrate(url)
    with engine.begin() as conn:
        # The existing service is STRICT; the revision log records services as their whole spec.
        assert conn.exec_driver_sql("SELECT mtls FROM service").scalar() == "STRICT"
        upgraded = json.loads(conn.exec_driver_sql("SELECT changes FROM revision").scalar())
        assert upgraded == [{**changes[0], "after": {"ports": ports, "mtls": "STRICT"}}, changes[1]]
        conn.exec_driver_sql(
            "INSERT INTO authorizationpolicy (resource_version, created_at, updated_at, name, namespace, spec)"
            " VALUES (1, '2026-01-01', '2026-01-01', 'p', 'default', '{}')"
        )
        # A service written without the column (an older writer) is STRICT too.
        conn.exec_driver_sql(
            "INSERT INTO service (resource_version, created_at, updated_at, name, namespace, ports)"
            " VALUES (1, '2026-01-01', '2026-01-01', 'b', 'default', '[]')"
        )
        assert conn.exec_driver_sql("SELECT mtls FROM service WHERE name = 'b'").scalar() == "STRICT"
    command.downgrade(alembic_config(url), "0004")
    with engine.connect() as conn:
        assert json.loads(conn.exec_driver_sql("SELECT changes FROM revision").scalar()) == changes
        assert "authorizationpolicy" not in inspect(conn).get_table_names()
        assert "mtls" not in {c["name"] for c in inspect(conn).get_columns("service")}
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM service").scalar() == 2
    migrate(url)  # and up again
    engine.dispose()


def test_0006_adds_gateways_and_refuses_to_drop_them_on_the_way_down(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    migrate(url)
    engine = make_engine(url)
    stamp = "'2026-01-01', '2026-01-01'"
    on_service = {"parentRefs": [{"name": "a", "kind": "Service"}], "hostnames": ["x.example"], "rules": []}
    on_gateway = {"parentRefs": [{"name": "edge", "kind": "Gateway"}], "rules": []}
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO service (id, resource_version, created_at, updated_at, name, namespace, ports)"
            f" VALUES (1, 1, {stamp}, 'edge', 'default', '[]')"
        )
        conn.exec_driver_sql(
            f"INSERT INTO gateway (resource_version, created_at, updated_at, name, namespace, spec)"
            f" VALUES (1, {stamp}, 'edge', 'default', '{{}}')"
        )
        for name, spec in (("svc", on_service), ("gw", on_gateway)):
            conn.exec_driver_sql(
                f"INSERT INTO httproute (resource_version, created_at, updated_at, name, namespace, spec)"
                f" VALUES (1, {stamp}, ?, 'default', ?)",
                (name, json.dumps(spec)),
            )
        changes = [{"kind": "HTTPRoute", "name": "default/svc", "before": None, "after": on_service}]
        conn.exec_driver_sql(
            "INSERT INTO revision (created_at, action, kind, name, changes)"
            " VALUES ('2026-01-01', 'apply', '*', 'x', ?)",
            (json.dumps(changes),),
        )
        # A gateway instance (no endpoint) and a sidecar; the column defaults to false for older writers.
        conn.exec_driver_sql(
            "INSERT INTO sidecar (service_id, address, inbound_port, app_port, upstreams, last_seen, expires_at,"
            f" gateway, instance) VALUES (1, '0.0.0.0', 0, 0, '{{}}', {stamp}, 1, 'edge-1')"
        )
        conn.exec_driver_sql(
            "INSERT INTO sidecar (service_id, address, inbound_port, app_port, upstreams, last_seen, expires_at,"
            f" instance) VALUES (1, '127.0.0.1', 15006, 8080, '{{}}', {stamp}, '127.0.0.1:15006')"
        )
    # While a Gateway, or a route attached to one, exists, the older release could not read them.
    with pytest.raises(RuntimeError, match="delete the Gateways and the HTTPRoutes attached to them first"):
        command.downgrade(alembic_config(url), "0005")
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM gateway")
        conn.exec_driver_sql("DELETE FROM httproute WHERE name = 'gw'")
    command.downgrade(alembic_config(url), "0005")
    older = {"parentRefs": [{"name": "a"}], "rules": []}  # what 0005 reads, and means the same
    with engine.connect() as conn:
        assert "gateway" not in inspect(conn).get_table_names()
        assert json.loads(conn.exec_driver_sql("SELECT spec FROM httproute").scalar()) == older
        assert json.loads(conn.exec_driver_sql("SELECT changes FROM revision").scalar())[0]["after"] == older
        assert conn.exec_driver_sql("SELECT address FROM sidecar").scalars().all() == ["127.0.0.1"]
    migrate(url)  # and up again
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT gateway FROM sidecar").scalar() == 0
    engine.dispose()


def test_0007_records_each_sidecars_svid_expiry_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    migrate(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO service (id, resource_version, created_at, updated_at, name, namespace, ports, mtls)"
            " VALUES (1, 1, '2026-01-01', '2026-01-01', 'a', 'default', '[]', 'STRICT')"
        )
        conn.exec_driver_sql(
            "INSERT INTO sidecar (service_id, address, inbound_port, app_port, upstreams, last_seen, expires_at,"
            " gateway, svid_expires_at, instance) VALUES (1, '127.0.0.1', 15006, 8080, '{}', '2026-01-01',"
            " '2026-01-01', 0, '2026-01-02', '127.0.0.1:15006')"
        )
    command.downgrade(alembic_config(url), "0006")
    with engine.connect() as conn:
        assert "svid_expires_at" not in {c["name"] for c in inspect(conn).get_columns("sidecar")}
        assert conn.exec_driver_sql("SELECT count(*) FROM sidecar").scalar() == 1
    migrate(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT svid_expires_at FROM sidecar").scalar() is None
    engine.dispose()


def test_0008_adds_rate_limit_policies_and_sidecar_zones_and_refuses_to_lose_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    migrate(url, "0007")
    engine = make_engine(url)
    stamp = "'2026-01-01', '2026-01-01'"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO service (id, resource_version, created_at, updated_at, name, namespace, ports, mtls)"
            f" VALUES (1, 1, {stamp}, 'a', 'default', '[]', 'STRICT')"
        )
        conn.exec_driver_sql(
            "INSERT INTO sidecar (service_id, address, inbound_port, app_port, upstreams, last_seen, expires_at,"
            f" gateway) VALUES (1, '127.0.0.1', 15006, 8080, '{{}}', {stamp}, 0)"
        )
        conn.exec_driver_sql(
            "INSERT INTO trafficpolicy (resource_version, created_at, updated_at, name, namespace, spec)"
            f" VALUES (1, {stamp}, 'old', 'default', ?)",
            (json.dumps({"targetRef": {"name": "a"}, "loadBalancer": {"type": "Random"}}),),
        )
    migrate(url)
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT zone FROM sidecar").scalar() is None  # joined before zones
        conn.exec_driver_sql("UPDATE sidecar SET zone = 'us-east-1a'")
        conn.exec_driver_sql(
            "INSERT INTO ratelimitpolicy (resource_version, created_at, updated_at, name, namespace, spec)"
            f" VALUES (1, {stamp}, 'limits', 'default', '{{}}')"
        )
        conn.exec_driver_sql(
            "INSERT INTO trafficpolicy (resource_version, created_at, updated_at, name, namespace, spec)"
            f" VALUES (1, {stamp}, 'new', 'default', ?)",
            (json.dumps({"targetRef": {"name": "a"}, "connectionPool": {"http": {"maxRetries": 2}}}),),
        )
    # The older release could not read them: the downgrade says which, and changes nothing.
    with pytest.raises(RuntimeError, match=r"RateLimitPolicies: default/limits; TrafficPolicies: default/new\)"):
        command.downgrade(alembic_config(url), "0007")
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM ratelimitpolicy")
        conn.exec_driver_sql("DELETE FROM trafficpolicy WHERE name = 'new'")
    command.downgrade(alembic_config(url), "0007")
    with engine.connect() as conn:
        assert "ratelimitpolicy" not in inspect(conn).get_table_names()
        assert "zone" not in {c["name"] for c in inspect(conn).get_columns("sidecar")}
        assert conn.exec_driver_sql("SELECT count(*) FROM sidecar").scalar() == 1
        assert conn.exec_driver_sql("SELECT name FROM trafficpolicy").scalars().all() == ["old"]
    migrate(url)  # and up again
    engine.dispose()


def test_0009_adds_each_sidecars_endpoint_health_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    migrate(url, "0008")
    engine = make_engine(url)
    stamp = "'2026-01-01', '2026-01-01'"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO service (id, resource_version, created_at, updated_at, name, namespace, ports, mtls)"
            f" VALUES (1, 1, {stamp}, 'a', 'default', '[]', 'STRICT')"
        )
        conn.exec_driver_sql(
            "INSERT INTO sidecar (service_id, address, inbound_port, app_port, upstreams, last_seen, expires_at,"
            f" gateway) VALUES (1, '127.0.0.1', 15006, 8080, '{{}}', {stamp}, 0)"
        )
    migrate(url)
    report = {"out/default/b": {"10.0.0.1:15006": {"ejected": True, "ejected_for_ms": 9000}}}
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT endpoint_health FROM sidecar").scalar() is None  # none reported yet
        conn.exec_driver_sql("UPDATE sidecar SET endpoint_health = ?", (json.dumps(report),))
        assert json.loads(conn.exec_driver_sql("SELECT endpoint_health FROM sidecar").scalar()) == report
    command.downgrade(alembic_config(url), "0008")
    with engine.connect() as conn:
        assert "endpoint_health" not in {c["name"] for c in inspect(conn).get_columns("sidecar")}
        assert conn.exec_driver_sql("SELECT count(*) FROM sidecar").scalar() == 1
    migrate(url)  # and up again
    engine.dispose()


def test_0011_adds_telemetry_resources_and_refuses_to_lose_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    migrate(url, "0010")
    migrate(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO telemetry (resource_version, created_at, updated_at, name, namespace, spec)"
            " VALUES (1, '2026-01-01', '2026-01-01', 'logs', 'default', ?)",
            (json.dumps({"accessLog": {}}),),
        )
    # The older release has no place for them: the downgrade names them and changes nothing.
    with pytest.raises(RuntimeError, match=r"delete the Telemetry resources first \(default/logs\)"):
        command.downgrade(alembic_config(url), "0010")
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM telemetry")
    command.downgrade(alembic_config(url), "0010")
    with engine.connect() as conn:
        assert "telemetry" not in inspect(conn).get_table_names()
    migrate(url)  # and up again
    engine.dispose()


def test_0010_adds_the_trace_store_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    migrate(url, "0010")
    engine = make_engine(url)
    start = 1_790_000_000_000_000_000  # unix ns: past 32 bits
    with engine.begin() as conn:
        for span_id in ("00f067aa0ba902b7", "00f067aa0ba902b8"):
            conn.exec_driver_sql(
                "INSERT INTO span (trace_id, span_id, parent_span_id, name, service, namespace, kind, start_ns,"
                " end_ns, status, attributes, resource) VALUES (?, ?, '', 'GET', 'a', '', 'SERVER', ?, ?, 'ok',"
                " '{}', '{}')",
                ("ab" * 16, span_id, start, start + 1),
            )
        conn.exec_driver_sql(
            "INSERT INTO tracesummary (trace_id, start_ns, end_ns, span_count, error_count, root_found,"
            " root_service, root_name) VALUES (?, ?, ?, 2, 0, 1, 'a', 'GET')",
            ("ab" * 16, start, start + 1),
        )
        assert conn.exec_driver_sql("SELECT id, end_ns FROM span ORDER BY id").all() == [(1, start + 1), (2, start + 1)]
    command.downgrade(alembic_config(url), "0009")
    with engine.connect() as conn:
        assert not {"span", "tracesummary"} & set(inspect(conn).get_table_names())
    migrate(url, "0010")  # and up again
    engine.dispose()


def test_0012_adds_token_names_revision_authors_and_sidecar_versions_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    migrate(url, "0011")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO apitoken (role, token_sha256, created_at) VALUES ('admin', 'x', '2026-01-01')"
        )
    migrate(url)
    with engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT role, name, expires_at FROM apitoken").one()
        assert tuple(row) == ("admin", None, None)
    command.downgrade(alembic_config(url), "0011")
    with engine.connect() as conn:
        assert {"name", "expires_at"}.isdisjoint(c["name"] for c in inspect(conn).get_columns("apitoken"))
        assert {"author", "message"}.isdisjoint(c["name"] for c in inspect(conn).get_columns("revision"))
        assert conn.exec_driver_sql("SELECT count(*) FROM apitoken").scalar() == 1
    engine.dispose()


def test_0013_adds_labels_to_every_kind_and_drops_them_saying_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    migrate(url, "0012")
    engine = make_engine(url)
    ports = json.dumps([{"name": "http", "port": 80, "protocol": "http"}])
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO service (resource_version, created_at, updated_at, name, namespace, ports, mtls)"
            " VALUES (1, '2026-01-01', '2026-01-01', 'web', 'default', ?, 'STRICT')",
            (ports,),
        )
    migrate(url)
    tables = ["service", "gateway", "httproute", "tcproute", "trafficpolicy"]
    tables += ["authorizationpolicy", "ratelimitpolicy", "telemetry"]
    with engine.begin() as conn:
        for table in tables:
            assert {"labels", "annotations"} <= {c["name"] for c in inspect(conn).get_columns(table)}, table
        assert tuple(conn.exec_driver_sql("SELECT labels, annotations FROM service").one()) == ("{}", "{}")
        conn.exec_driver_sql("UPDATE service SET labels = ?", (json.dumps({"app": "web"}),))
        conn.exec_driver_sql(
            "INSERT INTO sidecar (service_id, address, inbound_port, app_port, upstreams, last_seen, expires_at,"
            " instance) VALUES (1, '127.0.0.1', 15006, 8080, '{}', '2026-01-01', '2026-01-01', '127.0.0.1:15006')"
        )
        spec = {"ports": json.loads(ports), "mtls": "STRICT"}
        changes = [
            {
                "kind": "Service",
                "name": "default/web",
                "before": spec,
                "after": {"metadata": {"labels": {"app": "web"}}, **spec},
            }
        ]
        conn.exec_driver_sql(
            "INSERT INTO revision (created_at, action, kind, name, changes)"
            " VALUES ('2026-01-02', 'apply', 'Service', 'default/web', ?)",
            (json.dumps(changes),),
        )
    with caplog.at_level("WARNING", logger="alembic.runtime.migration"):
        command.downgrade(alembic_config(url), "0012")
    assert "labels and annotations of service default/web are lost" in caplog.text
    assert "taken out of 1 revisions" in caplog.text
    with engine.connect() as conn:
        for table in tables:
            assert {"labels", "annotations"}.isdisjoint(c["name"] for c in inspect(conn).get_columns(table)), table
        [recorded] = json.loads(conn.exec_driver_sql("SELECT changes FROM revision").scalar_one())
        assert recorded["before"] == recorded["after"] == spec  # the specs stay, as the older release reads them
        assert conn.exec_driver_sql("SELECT count(*) FROM service").scalar() == 1
        assert conn.exec_driver_sql("SELECT count(*) FROM sidecar").scalar() == 1  # not cascaded away
    migrate(url)  # and up again
    engine.dispose()
