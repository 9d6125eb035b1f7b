"""What the pure compiler writes for telemetry: every listener's direction,
every cluster's service, the ``telemetry`` section (who the proxy is, its
sampling and collector) and the listeners' ``access_log`` from Telemetry
resources, with their precedence; and the Telemetry spec's refusals with
their field paths."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from meshctl.control.compile_telemetry import settings
from meshctl.control.compiler import SidecarSpec, compile_outbound, compile_sidecar, outbound_key
from meshctl.control.kinds.telemetry import KIND as TELEMETRY
from meshctl.control.kinds.telemetry import TelemetrySpec, TelemetryView
from pki import TestPki
from test_compiler import (
    EDGE,
    EDGE_GATEWAY,
    FRONTEND,
    T0,
    clusters,
    http_route,
    listener,
    mesh,
    validate,
    validate_gateway,
)

CATALOG = SidecarSpec("default", "catalog", "127.0.0.1", 15007, 8081, upstreams=(("catalog", 7001),))


def telemetry(name: str, spec: dict[str, Any], age: int = 0, namespace: str = "default") -> TelemetryView:
    """A stored Telemetry as the compiler reads it (`age`: seconds after T0 it was made)."""
    row = TELEMETRY.table(name=name, namespace=namespace, spec=spec, created_at=T0 + timedelta(seconds=age))
    views: list[TelemetryView] = TELEMETRY.load([row])["telemetry"]
    return views[0]


def errors(spec: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as bad:
        TelemetrySpec.model_validate(spec)
    return {e["loc"]: e["msg"] for e in bad.value.errors()}


# === directions and services ===


def test_every_listener_has_its_direction_and_every_cluster_its_service() -> None:
    config = compile_sidecar(mesh(), FRONTEND)
    validate(config)
    assert {x["name"]: x["direction"] for x in config["listeners"]} == {
        "inbound": "inbound",
        "outbound/default/catalog": "outbound",
        "outbound/default/pricing": "outbound",
        "outbound/default/db": "outbound",
        "http-proxy": "outbound",
    }
    services = {c["name"]: c["service"] for c in config["clusters"]}
    assert services["inbound"] == "default/frontend"  # the sidecar's own service: its app
    assert services["out/default/db"] == "default/db"
    assert services["out/shop/cart"] == "shop/cart"
    assert all(services[name] == name.removeprefix("out/") for name in services if name != "inbound")


def test_a_subsets_cluster_is_its_services() -> None:
    route = {
        "parentRefs": [{"name": "pricing"}],
        "rules": [{"backendRefs": [{"name": "pricing", "subset": {"version": "v2"}}]}],
    }
    config = compile_sidecar(mesh(http_routes=[http_route("v2", route)]), FRONTEND)
    assert clusters(config)["out/default/pricing/version:v2"]["service"] == "default/pricing"


def test_a_gateways_listeners_are_gateway_and_its_workload_has_port_0() -> None:
    config = compile_sidecar(mesh(gateways={"default/edge": EDGE_GATEWAY}), EDGE)
    validate_gateway(config)
    assert {x["direction"] for x in config["listeners"]} == {"gateway"}
    assert config["telemetry"] == {
        "service": "edge",
        "namespace": "default",
        "workload": "edge-127.0.0.1:0",
        "tracing": {"sample_percent": 1.0},
    }


# === the telemetry section ===


def test_without_telemetry_resources_one_percent_is_sampled_for_the_control_plane_and_nothing_logged() -> None:
    config = compile_sidecar(mesh(), FRONTEND)
    # No collector: the sidecar sends spans to its own control plane.
    assert config["telemetry"] == {
        "service": "frontend",
        "namespace": "default",
        "workload": "frontend-127.0.0.1:15006",
        "tracing": {"sample_percent": 1.0},
    }
    assert not any("access_log" in x for x in config["listeners"])


def test_an_ipv6_sidecars_workload_has_brackets() -> None:
    v6 = SidecarSpec("shop", "cart", "::1", 15008, 9000)
    assert compile_sidecar(mesh(), v6)["telemetry"]["workload"] == "cart-[::1]:15008"


def test_a_mesh_wide_telemetry_sets_every_services_tracing_and_access_logs_on_every_listener() -> None:
    everyone = telemetry(
        "mesh",
        {
            "tracing": {"samplingPercent": 12.5, "collector": "http://otel.example:4318/v1/traces"},
            "accessLog": {"format": "text", "path": "/var/log/meshctl/access.log"},
        },
    )
    config = compile_sidecar(mesh(telemetry=[everyone]), FRONTEND)
    validate(config)
    assert config["telemetry"]["tracing"] == {
        "sample_percent": 12.5,
        "collector": "http://otel.example:4318/v1/traces",
    }
    logs = [x.get("access_log") for x in config["listeners"]]
    assert logs == [{"path": "/var/log/meshctl/access.log", "format": "text"}] * 5  # inbound and outbound alike


def test_the_access_log_defaults_are_json_on_stderr() -> None:
    config = compile_sidecar(mesh(telemetry=[telemetry("logs", {"accessLog": {}})]), FRONTEND)
    assert listener(config, "inbound")["access_log"] == {"path": "-", "format": "json"}
    assert config["telemetry"]["tracing"] == {"sample_percent": 1.0}  # untouched by an access-log-only one


def test_the_narrowest_telemetry_wins_field_by_field() -> None:
    """A service's own Telemetry overrides what it sets; what it leaves out comes from the
    mesh-wide one. Other services keep the mesh-wide settings."""
    views = [
        telemetry(
            "mesh",
            {
                "tracing": {
                    "samplingPercent": 5,
                    "collector": "https://otel.example/v1/traces",
                    "caFile": "/etc/otel/ca.pem",
                },
                "accessLog": {},
            },
        ),
        telemetry("frontend", {"targetRefs": [{"name": "frontend"}], "tracing": {"samplingPercent": 50}}, age=-10),
    ]
    mine = compile_sidecar(mesh(telemetry=views), FRONTEND)
    https = {"collector": "https://otel.example/v1/traces", "ca_file": "/etc/otel/ca.pem"}
    assert mine["telemetry"]["tracing"] == {"sample_percent": 50, **https}
    assert listener(mine, "inbound")["access_log"] == {"path": "-", "format": "json"}  # the mesh-wide one's
    other = compile_sidecar(mesh(telemetry=views), CATALOG)
    assert other["telemetry"]["tracing"] == {"sample_percent": 5, **https}


def test_between_equally_narrow_telemetries_the_older_wins_then_the_name() -> None:
    def rate(*views: TelemetryView) -> float:
        return settings(views, "default/frontend").sample_percent

    old = telemetry("b", {"tracing": {"samplingPercent": 10}}, age=0)
    new = telemetry("a", {"tracing": {"samplingPercent": 20}}, age=5)
    assert rate(old, new) == rate(new, old) == 10
    same_age = telemetry("a", {"tracing": {"samplingPercent": 20}}, age=0)
    assert rate(old, same_age) == rate(same_age, old) == 20  # default/a sorts before default/b
    targeted_new = telemetry("z", {"targetRefs": [{"name": "frontend"}], "tracing": {"samplingPercent": 0}}, age=99)
    assert rate(old, targeted_new) == 0  # narrower beats older
    elsewhere = telemetry("y", {"targetRefs": [{"name": "frontend", "namespace": "shop"}], "accessLog": {}})
    assert settings([elsewhere], "default/frontend").access_log is None  # shop/frontend is another service


def test_a_services_telemetry_may_turn_off_the_mesh_wide_access_log() -> None:
    views = [
        telemetry("mesh", {"accessLog": {"path": "/tmp/all.log"}}),
        telemetry("quiet", {"targetRefs": [{"name": "frontend"}], "accessLog": {"disabled": True}}),
    ]
    assert not any("access_log" in x for x in compile_sidecar(mesh(telemetry=views), FRONTEND)["listeners"])
    assert listener(compile_sidecar(mesh(telemetry=views), CATALOG), "inbound")["access_log"]["path"] == "/tmp/all.log"


def test_a_shared_outbound_part_is_not_changed_by_one_services_access_log() -> None:
    """Sidecars of different services with the same upstreams share one compiled outbound part;
    access logs of one service must not leak into another's listeners through it."""
    logged = telemetry("logged", {"targetRefs": [{"name": "frontend"}], "accessLog": {}})
    m = mesh(telemetry=[logged])
    other = SidecarSpec(
        "default", "pricing", "127.0.0.1", 15009, 8082, upstreams=FRONTEND.upstreams, http_proxy_port=15001
    )
    assert outbound_key(other) == outbound_key(FRONTEND)
    shared = compile_outbound(m, FRONTEND)
    first = compile_sidecar(m, FRONTEND, shared)
    second = compile_sidecar(m, other, shared)
    assert all("access_log" in x for x in first["listeners"])
    assert not any("access_log" in x for x in second["listeners"])
    assert not any("access_log" in x for x in shared.listeners)


# === the spec's refusals ===


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ({}, ()),
        ({"tracing": {"samplingPercent": 101}}, ("tracing", "samplingPercent")),
        ({"tracing": {"samplingPercent": -1}}, ("tracing", "samplingPercent")),
        ({"tracing": {"collector": "otel:4318"}}, ("tracing", "collector")),
        ({"tracing": {"collector": "ftp://otel/v1/traces"}}, ("tracing", "collector")),
        ({"tracing": {"collector": "http://user:pw@otel/v1/traces"}}, ("tracing", "collector")),
        ({"tracing": {"collector": "http://otel:99999/v1/traces"}}, ("tracing", "collector")),
        # Said of the tracing section: the two fields go together.
        ({"tracing": {"collector": "https://otel/v1/traces"}}, ("tracing",)),
        ({"tracing": {"collector": "http://otel/v1/traces", "caFile": "/ca.pem"}}, ("tracing",)),
        ({"tracing": {"caFile": "/ca.pem"}}, ("tracing",)),
        ({"tracing": {"collector": "https://otel/v1/traces", "caFile": "ca.pem"}}, ("tracing", "caFile")),
        ({"accessLog": {"format": "xml"}}, ("accessLog", "format")),
        ({"accessLog": {"path": "logs/access.log"}}, ("accessLog", "path")),
        ({"accessLog": {"path": ""}}, ("accessLog", "path")),
        ({"accessLog": {"file": "/tmp/a"}}, ("accessLog", "file")),
        ({"targetRefs": [], "accessLog": {}}, ("targetRefs",)),
        ({"targetRefs": [{"name": "Bad_Name"}], "accessLog": {}}, ("targetRefs", 0, "name")),
        ({"targetRefs": [{"kind": "Gateway", "name": "a"}], "accessLog": {}}, ("targetRefs", 0, "kind")),
    ],
)
def test_bad_specs_are_refused_naming_the_field(spec: dict[str, Any], loc: tuple[Any, ...]) -> None:
    assert list(errors(spec)) == [loc]


def test_a_service_named_twice_is_a_problem_at_the_second() -> None:
    spec = TelemetrySpec.model_validate(
        {"targetRefs": [{"name": "a"}, {"name": "b"}, {"name": "a"}], "tracing": {"samplingPercent": 3}}
    )
    assert TELEMETRY.problems(spec) == [(["targetRefs", 2, "name"], "service a is already targetRefs[0]")]
    refs = TELEMETRY.references(spec, "shop", "t")
    assert [(r.loc, r.target) for r in refs][:2] == [(["targetRefs", 0], "shop/a"), (["targetRefs", 1], "shop/b")]


def test_an_https_collector_compiles_to_a_snapshot_the_data_plane_takes(tmp_path: Path) -> None:
    """Found by the compiler's property test: an https collector without the roots to verify it
    made every sidecar NACK; the Telemetry now carries them (caFile) into the snapshot."""
    roots = TestPki(tmp_path / "pki").roots
    spec = {"tracing": {"collector": "https://otel.example/v1/traces", "caFile": str(roots)}}
    config = compile_sidecar(mesh(telemetry=[telemetry("mesh", spec)]), FRONTEND)
    assert config["telemetry"]["tracing"]["ca_file"] == str(roots)
    validate(config)
