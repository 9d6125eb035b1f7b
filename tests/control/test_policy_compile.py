"""TrafficPolicy's resilience fields and RateLimitPolicy as the pure compiler
emits them (cluster and inbound listener sections, field by field), zones from
endpoint labels and the calling sidecar, and the spec models' refusals with
their field paths."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from meshctl.control.compiler import EndpointView, SidecarSpec, compile_outbound, compile_sidecar, outbound_key
from meshctl.control.kinds.ratelimitpolicy import KIND as RATE_LIMITS
from meshctl.control.kinds.ratelimitpolicy import RateLimitPolicySpec
from meshctl.control.kinds.trafficpolicy import TrafficPolicySpec
from test_compiler import FRONTEND, clusters, listener, mesh, validate

CATALOG = SidecarSpec("default", "catalog", "127.0.0.1", 15006, 8080, upstreams=(("pricing", 7001),))


def catalog_cluster(policy: dict[str, Any], sidecar: SidecarSpec = FRONTEND) -> dict[str, Any]:
    spec = TrafficPolicySpec.model_validate({"targetRef": {"name": "catalog"}, **policy})
    config = compile_sidecar(mesh(policies={"default/catalog": ("default/p", spec)}), sidecar)
    return dict(clusters(config)["out/default/catalog"])


def errors(model: Any, spec: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as bad:
        model.model_validate(spec)
    return {e["loc"]: e["msg"] for e in bad.value.errors()}


# === TrafficPolicy -> cluster ===


def test_outlier_detection_in_istios_names() -> None:
    od = {
        "consecutive5xxErrors": 3,
        "consecutiveGatewayErrors": 2,
        "baseEjectionTime": "30s",
        "maxEjectionTime": "5m",
        "maxEjectionPercent": 34,
        "minHealthPercent": 60,
    }
    assert catalog_cluster({"outlierDetection": od})["outlier_detection"] == {
        "consecutive_5xx": 3,
        "consecutive_gateway_errors": 2,
        "base_ejection_ms": 30_000,
        "max_ejection_ms": 300_000,
        "max_ejection_percent": 34,
        "panic_threshold_percent": 60,
    }
    # 0 disables a count; what is left out takes the data plane's default; nothing set, no section.
    assert catalog_cluster({"outlierDetection": {"consecutive5xxErrors": 0}})["outlier_detection"] == {
        "consecutive_5xx": 0
    }
    assert "outlier_detection" not in catalog_cluster({"outlierDetection": {}})
    assert "outlier_detection" not in catalog_cluster({})


def test_health_checks_http_or_tcp() -> None:
    http = {
        "http": {"path": "/healthz", "expectedStatuses": [200, 204]},
        "interval": "2s",
        "timeout": "500ms",
        "jitter": "100ms",
        "healthyThreshold": 1,
        "unhealthyThreshold": 2,
    }
    assert catalog_cluster({"healthCheck": http})["health_check"] == {
        "type": "http",
        "path": "/healthz",
        "expected_statuses": [200, 204],
        "interval_ms": 2000,
        "timeout_ms": 500,
        "jitter_ms": 100,
        "healthy_threshold": 1,
        "unhealthy_threshold": 2,
    }
    assert catalog_cluster({"healthCheck": {"tcp": {}}})["health_check"] == {"type": "tcp"}
    assert catalog_cluster({"healthCheck": {"http": {"path": "/"}}})["health_check"] == {"type": "http", "path": "/"}


def test_retry_budget_in_linkerds_shape() -> None:
    budget = {"retryRatio": 0.25, "minRetriesPerSecond": 5, "ttl": "20s"}
    assert catalog_cluster({"retryBudget": budget})["retry_budget"] == {
        "percent": 25,
        "min_per_second": 5,
        "window_ms": 20_000,
    }
    # The ratio is rounded to the data plane's whole percent; 10 (1000 %) at the most.
    assert catalog_cluster({"retryBudget": {"retryRatio": 0.123}})["retry_budget"] == {"percent": 12}
    assert catalog_cluster({"retryBudget": {"retryRatio": 10}})["retry_budget"] == {"percent": 1000}
    assert "retry_budget" not in catalog_cluster({"retryBudget": {}})


def test_peak_ewma_and_max_retries() -> None:
    assert catalog_cluster({"loadBalancer": {"type": "PeakEWMA"}})["lb"] == "peak_ewma"
    pool = {"http": {"http2MaxRequests": 100, "maxRetries": 3}}
    assert catalog_cluster({"connectionPool": pool})["circuit_breakers"] == {"max_requests": 100, "max_retries": 3}


# === zones and locality ===

IN_A = SidecarSpec(**{**FRONTEND.__dict__, "zone": "a"})


def test_endpoints_carry_their_zone_label() -> None:
    config = compile_sidecar(mesh(), FRONTEND)
    assert clusters(config)["out/default/pricing"]["endpoints"] == [
        {"address": "10.0.0.1:15006", "weight": 1},
        {"address": "10.0.0.2:15006", "weight": 2, "zone": "b"},
    ]


def test_locality_is_on_for_a_caller_with_a_zone_unless_a_policy_turns_it_off() -> None:
    assert "locality" not in catalog_cluster({}), "no zone on the caller: no locality"
    assert catalog_cluster({}, IN_A)["locality"] == {"zone": "a"}
    config = compile_sidecar(mesh(), IN_A)
    # Every cluster of a caller with a zone (the inbound one, its own app, has none).
    assert {c["name"] for c in config["clusters"] if "locality" in c} == {
        c["name"] for c in config["clusters"] if c["name"] != "inbound"
    }
    setting = {
        "failover": [
            {"from": "a", "to": "c"},
            {"from": "b", "to": "a"},
            {"from": "a", "to": "b"},
            {"from": "a", "to": "c"},
        ],
        "minHealthPercent": 80,
    }
    assert catalog_cluster({"loadBalancer": {"localityLbSetting": setting}}, IN_A)["locality"] == {
        "zone": "a",
        "failover": ["c", "b"],
        "min_healthy_percent": 80,
    }
    # Only its own zone's entries: a caller in zone d has none.
    in_d = SidecarSpec(**{**FRONTEND.__dict__, "zone": "d"})
    assert catalog_cluster({"loadBalancer": {"localityLbSetting": setting}}, in_d)["locality"] == {
        "zone": "d",
        "min_healthy_percent": 80,
    }
    off = catalog_cluster({"loadBalancer": {"localityLbSetting": {"enabled": False}}}, IN_A)
    assert "locality" not in off and off["lb"] == "round_robin"
    assert "locality" not in catalog_cluster({"loadBalancer": {"localityLbSetting": setting}}), "no zone: none"


def test_the_zone_is_part_of_the_shared_outbound_part() -> None:
    """Instances of one service in two zones get different clusters: they may not share them."""
    m = mesh()
    assert outbound_key(FRONTEND) != outbound_key(IN_A)
    assert compile_outbound(m, FRONTEND) != compile_outbound(m, IN_A)
    in_b = SidecarSpec(**{**FRONTEND.__dict__, "zone": "b", "inbound_port": 15106})
    b = compile_sidecar(m, in_b, compile_outbound(m, in_b))
    assert clusters(b)["out/default/catalog"]["locality"] == {"zone": "b"}


def test_a_gateway_in_a_zone_keeps_its_traffic_there() -> None:
    from meshctl.control.kinds.gateway import GatewaySpec
    from test_compiler import http_route

    gateway = GatewaySpec.model_validate({"listeners": [{"name": "web", "port": 8080, "protocol": "HTTP"}]})
    route = http_route(
        "edge-catalog",
        {"parentRefs": [{"name": "edge", "kind": "Gateway"}], "rules": [{"backendRefs": [{"name": "catalog"}]}]},
    )
    m = mesh(gateways={"default/edge": gateway}, http_routes=[route])
    edge = SidecarSpec("default", "edge", "127.0.0.1", 0, 0, gateway=True, zone="a")
    assert clusters(compile_sidecar(m, edge))["out/default/catalog"]["locality"] == {"zone": "a"}


# === RateLimitPolicy -> inbound listener ===


def rate_limited(spec: dict[str, Any], sidecar: SidecarSpec = CATALOG, **extra: Any) -> dict[str, Any]:
    policy = RateLimitPolicySpec.model_validate({"targetRef": {"kind": "Service", "name": "catalog"}, **spec})
    m = mesh(rate_limits={"default/catalog": ("default/limits", policy)}, trust_domain="example.org", **extra)
    return listener(compile_sidecar(m, sidecar), "inbound")


def test_rate_limits_on_the_targets_inbound_listener() -> None:
    spec = {
        "total": {"requestsPerSecond": 100, "burst": 10},
        "identity": {"requestsPerSecond": 20},
        "overrides": [
            {
                "requestsPerSecond": 50,
                "burst": 5,
                "clientRefs": [{"kind": "Service", "name": "frontend"}, {"name": "admin", "namespace": "ops"}],
            }
        ],
    }
    assert rate_limited(spec)["rate_limit"] == {
        "total": {"rps": 100, "burst": 10},
        "per_identity": {"rps": 20},
        "overrides": [
            {
                "identities": ["spiffe://example.org/ns/default/sa/frontend", "spiffe://example.org/ns/ops/sa/admin"],
                "rps": 50,
                "burst": 5,
            }
        ],
    }
    assert rate_limited({"identity": {"requestsPerSecond": 0.5}})["rate_limit"] == {"per_identity": {"rps": 0.5}}
    # Only on the target's own sidecars; callers' outbound listeners are untouched.
    frontend = compile_sidecar(
        mesh(
            rate_limits={
                "default/catalog": (
                    "default/l",
                    RateLimitPolicySpec.model_validate({**spec, "targetRef": {"name": "catalog"}}),
                )
            }
        ),
        FRONTEND,
    )
    assert not any("rate_limit" in x for x in frontend["listeners"])


def test_a_tcp_service_gets_its_connection_rate_limit_too() -> None:
    db = SidecarSpec("default", "db", "127.0.0.1", 15106, 5432)
    policy = RateLimitPolicySpec.model_validate({"targetRef": {"name": "db"}, "total": {"requestsPerSecond": 5}})
    inbound = listener(compile_sidecar(mesh(rate_limits={"default/db": ("default/l", policy)}), db), "inbound")
    assert inbound["protocol"] == "tcp" and inbound["rate_limit"] == {"total": {"rps": 5}}


def test_the_policy_references_its_target_and_clients_and_holds_only_the_target() -> None:
    spec = RateLimitPolicySpec.model_validate(
        {
            "targetRef": {"name": "catalog"},
            "overrides": [{"requestsPerSecond": 1, "clientRefs": [{"name": "a"}, {"name": "b", "namespace": "x"}]}],
        }
    )
    refs = RATE_LIMITS.references(spec, "shop", "limits")
    assert [(r.loc, r.target) for r in refs] == [
        (["targetRef"], "shop/catalog"),
        (["overrides", 0, "clientRefs", 0], "shop/a"),
        (["overrides", 0, "clientRefs", 1], "x/b"),
    ]
    assert [r.target for r in RATE_LIMITS.held(refs)] == ["shop/catalog"]


# === refusals, with field paths ===


def test_traffic_policy_refusals_name_the_field() -> None:
    base = {"targetRef": {"name": "c"}}
    assert set(
        errors(
            TrafficPolicySpec,
            {
                **base,
                "outlierDetection": {"consecutive5xxErrors": -1, "maxEjectionPercent": 101, "baseEjectionTime": "1x"},
                "retryBudget": {"retryRatio": 11, "minRetriesPerSecond": -1, "ttl": "0s"},
                "connectionPool": {"http": {"maxRetries": 0}},
            },
        )
    ) == {
        ("outlierDetection", "consecutive5xxErrors"),
        ("outlierDetection", "maxEjectionPercent"),
        ("outlierDetection", "baseEjectionTime"),
        ("retryBudget", "retryRatio"),
        ("retryBudget", "minRetriesPerSecond"),
        ("retryBudget", "ttl"),
        ("connectionPool", "http", "maxRetries"),
    }
    # maxEjectionTime below the base (given, or the default 10s).
    bad = errors(TrafficPolicySpec, {**base, "outlierDetection": {"baseEjectionTime": "30s", "maxEjectionTime": "20s"}})
    assert "at least baseEjectionTime (30s)" in bad[("outlierDetection", "maxEjectionTime")]
    bad = errors(TrafficPolicySpec, {**base, "outlierDetection": {"maxEjectionTime": "5s"}})
    assert "(10s)" in bad[("outlierDetection", "maxEjectionTime")]


@pytest.mark.parametrize(
    ("check", "loc", "says"),
    [
        (
            {"http": {"path": "/"}, "interval": "1s", "timeout": "2s"},
            ("healthCheck", "timeout"),
            "at most the interval",
        ),
        ({"http": {"path": "/"}, "timeout": "6s"}, ("healthCheck", "timeout"), "(5s)"),
        ({"tcp": {}, "interval": "1s", "jitter": "2s"}, ("healthCheck", "jitter"), "at most the interval"),
        ({"http": {"path": "/"}, "tcp": {}}, ("healthCheck",), "exactly one"),
        ({"interval": "1s"}, ("healthCheck",), "exactly one"),
        ({"http": {"path": "healthz"}}, ("healthCheck", "http", "path"), "pattern"),
        ({"http": {"path": "/", "expectedStatuses": [99]}}, ("healthCheck", "http", "expectedStatuses", 0), "100"),
        ({"tcp": {"port": 1}}, ("healthCheck", "tcp", "port"), "Extra inputs"),
        ({"tcp": {}, "healthyThreshold": 0}, ("healthCheck", "healthyThreshold"), "1"),
        ({"tcp": {}, "interval": "250"}, ("healthCheck", "interval"), "not a duration"),
    ],
)
def test_health_check_refusals_name_the_field(check: dict[str, Any], loc: tuple[Any, ...], says: str) -> None:
    bad = errors(TrafficPolicySpec, {"targetRef": {"name": "c"}, "healthCheck": check})
    assert list(bad) == [loc] and says in bad[loc]


@pytest.mark.parametrize(
    ("setting", "loc", "says"),
    [
        ({"failover": [{"from": "a", "to": "a"}]}, ("failover", 0), "another zone"),
        ({"failover": [{"from": "a b", "to": "c"}]}, ("failover", 0, "from"), "pattern"),
        ({"enabled": False, "failover": [{"from": "a", "to": "b"}]}, (), "unused"),
        ({"minHealthPercent": 101}, ("minHealthPercent",), "100"),
    ],
)
def test_locality_refusals_name_the_field(setting: dict[str, Any], loc: tuple[Any, ...], says: str) -> None:
    bad = errors(TrafficPolicySpec, {"targetRef": {"name": "c"}, "loadBalancer": {"localityLbSetting": setting}})
    at = ("loadBalancer", "localityLbSetting", *loc)
    assert list(bad) == [at] and says in bad[at]


def test_rate_limit_policy_refusals_name_the_field() -> None:
    target = {"targetRef": {"name": "c"}}
    assert "total, identity or overrides" in errors(RateLimitPolicySpec, target)[()]
    bad = errors(
        RateLimitPolicySpec,
        {
            "targetRef": {"kind": "Pod", "name": "c"},
            "total": {"requestsPerSecond": 0},
            "identity": {"requestsPerSecond": 1, "burst": 0},
            "overrides": [{"requestsPerSecond": 1, "clientRefs": []}],
        },
    )
    assert set(bad) == {
        ("targetRef", "kind"),
        ("total", "requestsPerSecond"),
        ("identity", "burst"),
        ("overrides", 0, "clientRefs"),
    }
    twice = RateLimitPolicySpec.model_validate(
        {
            **target,
            "overrides": [
                {"requestsPerSecond": 1, "clientRefs": [{"name": "a"}]},
                {"requestsPerSecond": 2, "clientRefs": [{"name": "b"}, {"name": "a"}]},
            ],
        }
    )
    assert RATE_LIMITS.problems(twice) == [
        (["overrides", 1, "clientRefs", 1, "name"], "service a is already a client of overrides[0]")
    ]


def test_endpoint_view_zone_comes_from_the_label() -> None:
    assert EndpointView("10.0.0.9", 1, labels={"zone": "z"}).config() == {
        "address": "10.0.0.9:1",
        "weight": 1,
        "zone": "z",
    }


def test_the_data_plane_takes_every_section() -> None:
    """The real decoder accepts what the compiler emits (needs the data plane of issue 11)."""
    policy = TrafficPolicySpec.model_validate(
        {
            "targetRef": {"name": "catalog"},
            "loadBalancer": {"type": "PeakEWMA", "localityLbSetting": {"failover": [{"from": "a", "to": "b"}]}},
            "connectionPool": {"http": {"maxRetries": 3}},
            "outlierDetection": {
                "consecutive5xxErrors": 3,
                "consecutiveGatewayErrors": 2,
                "baseEjectionTime": "5s",
                "maxEjectionTime": "1m",
                "maxEjectionPercent": 40,
                "minHealthPercent": 30,
            },
            "healthCheck": {
                "http": {"path": "/healthz", "expectedStatuses": [200]},
                "interval": "2s",
                "timeout": "1s",
                "jitter": "0s",
                "healthyThreshold": 1,
                "unhealthyThreshold": 2,
            },
            "retryBudget": {"retryRatio": 0.2, "minRetriesPerSecond": 10, "ttl": "10s"},
        }
    )
    limits = RateLimitPolicySpec.model_validate(
        {
            "targetRef": {"name": "catalog"},
            "total": {"requestsPerSecond": 100, "burst": 10},
            "identity": {"requestsPerSecond": 0.5},
            "overrides": [{"requestsPerSecond": 50, "clientRefs": [{"name": "frontend"}]}],
        }
    )
    m = mesh(
        policies={"default/catalog": ("default/p", policy)}, rate_limits={"default/catalog": ("default/l", limits)}
    )
    validate(compile_sidecar(m, IN_A))
    validate(compile_sidecar(m, SidecarSpec(**{**CATALOG.__dict__, "zone": "a"})))
