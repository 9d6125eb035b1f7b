"""Explain's resilience parts as pure functions of the mesh: the route's
timeout, retry policy (the data plane's default, or the route's, and what it
means for this request's method), fault and mirrors; per backend the cluster
settings each from the TrafficPolicy or the data plane's default, locality per
caller zone, the receiving service's rate-limit bucket for this caller, and
the endpoints the caller's sidecars report out. And the table of defaults,
held to a real DataPlane's /config and decoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import unused_port, wait_until
from meshctl import ConfigError, DataPlane, validate_config
from meshctl.control import dataplane_defaults as defaults
from meshctl.control.explain import ExplainRequest, Explanation, explain
from meshctl.control.explain_backend import CallerReport
from meshctl.control.kinds.ratelimitpolicy import RateLimitPolicySpec
from meshctl.control.kinds.trafficpolicy import TrafficPolicySpec
from meshctl.sidecar.mesh import MAX_ENDPOINT_HEALTH, endpoint_health
from meshproc import ControlPlane, service
from test_compiler import http_route, mesh

# === the defaults table against the data plane ===


def test_the_defaults_are_what_a_running_data_plane_shows_in_its_config() -> None:
    admin = f"127.0.0.1:{unused_port()}"
    config = {
        "admin": {"address": admin},
        "listeners": [
            {
                "name": "l",
                "address": "127.0.0.1:0",
                "routes": [{"backends": [{"cluster": "c"}], "rate_limit": {"total": {"rps": 2.5}}}],
            }
        ],
        "clusters": [
            {
                "name": "c",
                "endpoints": [{"address": "127.0.0.1:1"}],
                "health_check": {"type": "http", "path": "/h"},
                "locality": {"zone": "z"},
            }
        ],
    }
    dp = DataPlane(config, workers=1)
    dp.start()
    try:
        shown = httpx.get(f"http://{admin}/config", timeout=5).json()
    finally:
        dp.stop(0)
    assert shown["listeners"][0]["routes"][0]["retry"] == defaults.RETRY
    cluster = shown["clusters"][0]
    assert cluster["retry_budget"] == defaults.RETRY_BUDGET
    assert cluster["circuit_breakers"] == defaults.CIRCUIT_BREAKERS
    assert cluster["outlier_detection"] == defaults.OUTLIER_DETECTION
    assert cluster["lb"] == defaults.LB
    interval = defaults.HEALTH_CHECK["interval_ms"]
    assert cluster["health_check"] == {
        **defaults.HEALTH_CHECK,
        "type": "http",
        "path": "/h",
        "expected_statuses": [],
        "jitter_ms": defaults.health_check_jitter_ms(interval),
    }
    assert cluster["locality"] == {
        "zone": "z",
        "failover": [],
        "min_healthy_percent": defaults.LOCALITY_MIN_HEALTHY_PERCENT,
    }
    bucket = shown["listeners"][0]["routes"][0]["rate_limit"]["total"]
    assert bucket == {"rps": 2.5, "burst": defaults.burst(2.5)}


def _health_check_ok(**section: Any) -> bool:
    doc = {"clusters": [{"name": "c", "endpoints": [], "health_check": {"type": "tcp", **section}}]}
    try:
        validate_config(doc)
        return True
    except ConfigError as e:
        assert e.errors == [("clusters[0].health_check.timeout_ms", "must be at most interval_ms")], e.errors
        return False


def test_the_health_check_defaults_are_the_decoders() -> None:
    """/config shows no health check a cluster lacks; the decoder's timeout <= interval check pins
    the default interval (a timeout up to it passes) and the default timeout (an interval down to it)."""
    interval, timeout = defaults.HEALTH_CHECK["interval_ms"], defaults.HEALTH_CHECK["timeout_ms"]
    assert _health_check_ok(timeout_ms=interval) and not _health_check_ok(timeout_ms=interval + 1)
    assert _health_check_ok(interval_ms=timeout) and not _health_check_ok(interval_ms=timeout - 1)


# === the route: timeout, retries, fault, mirrors ===


def explained(method: str = "GET", rule: dict[str, Any] | None = None, **req: Any) -> Explanation:
    m = mesh()
    m.services["default/shadow"] = "http"
    if rule is not None:
        spec = {"parentRefs": [{"name": "catalog"}], "rules": [{"backendRefs": [{"name": "catalog"}], **rule}]}
        m.http_routes = [http_route("catalog", spec)]
    out = explain(m, ExplainRequest(source="frontend", destination="catalog", method=method, **req))
    assert out.outcome == "forward" and out.resilience is not None
    return out


def test_without_a_route_retry_the_default_policy_applies_and_says_so() -> None:
    for rule in (None, {}):  # no HTTPRoute at all, or a rule without retry
        r = explained("GET", rule).resilience
        assert r is not None and r.timeout_ms is None and r.fault is None and r.mirrors == []
        retry = r.retry
        assert (retry.source, retry.attempts, retry.retry_on) == (
            "default",
            2,
            ["connect-failure", "refused-stream", "reset"],
        )
        assert (retry.backoff_base_ms, retry.backoff_max_ms, retry.non_idempotent) == (25, 250, False)
        assert retry.idempotent and retry.after_sent == ["reset"]
        assert retry.note == "GET: up to 2 retries on connect-failure, refused-stream, reset"


def test_post_is_retried_only_when_nothing_reached_the_upstream_unless_the_route_opts_in() -> None:
    retry = explained("POST").resilience.retry
    assert not retry.idempotent
    assert (retry.before_sent, retry.after_sent) == (["connect-failure", "refused-stream"], [])
    assert retry.note == (
        "POST is not idempotent: up to 2 retries only when nothing reached the upstream"
        " (connect-failure, refused-stream), not on reset (retry.nonIdempotent allows it)"
    )
    listed = {"retry": {"attempts": 3, "codes": [503], "retryOn": ["gateway-error"]}}
    patch = explained("PATCH", listed).resilience.retry
    assert (patch.source, patch.defaults) == ("route", ["non_idempotent", "backoff"])
    assert patch.before_sent == [] and patch.after_sent == []
    assert "PATCH is not idempotent: up to 3 retries only when nothing reached the upstream (never" in patch.note
    opted = explained("POST", {"retry": {"attempts": 1, "codes": [503], "nonIdempotent": True}})
    retry = opted.resilience.retry
    assert retry.idempotent and retry.after_sent == ["reset", "503"]
    assert (
        retry.note == "POST (the route's nonIdempotent): up to 1 retry on connect-failure, refused-stream, reset, 503"
    )
    # PUT and DELETE are idempotent; a gRPC call (a POST) is retried by status.
    assert explained("DELETE", listed).resilience.retry.after_sent == ["gateway-error", "503"]
    grpc = {"retry": {"grpcCodes": ["UNAVAILABLE"], "retryOn": ["reset"]}}
    call = explained("POST", grpc, headers={"Content-Type": "application/grpc+proto"}).resilience.retry
    assert call.idempotent and call.after_sent == ["reset", "grpc unavailable"]
    assert call.note.startswith("a gRPC call: up to 2 retries on reset, grpc unavailable")


def test_timeouts_backoff_and_retries_turned_off() -> None:
    rule = {"timeouts": {"request": "2s", "backendRequest": "500ms"}, "retry": {"backoff": "10ms"}}
    r = explained("GET", rule).resilience
    assert r is not None and r.timeout_ms == 2000
    assert (r.retry.per_try_timeout_ms, r.retry.backoff_base_ms, r.retry.backoff_max_ms) == (500, 10, 100)
    off = explained("GET", {"retry": {"attempts": 0}}).resilience.retry
    assert off.note == "no retries: the route turns them off" and off.after_sent == off.before_sent == []


def test_fault_and_mirrors() -> None:
    rule = {
        "fault": {
            "delay": {"percentage": {"value": 50}, "fixedDelay": "100ms"},
            "abort": {"percentage": {"value": 10.5}, "grpcStatus": "UNAVAILABLE"},
        },
        "filters": [
            {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow"}, "percent": 25}},
            {
                "type": "RequestMirror",
                "requestMirror": {"backendRef": {"name": "pricing"}, "fraction": {"numerator": 1, "denominator": 8}},
            },
        ],
    }
    r = explained("GET", rule).resilience
    assert r is not None and r.fault is not None
    assert r.fault.model_dump() == {
        "delay": {"percent": 50, "fixed_ms": 100},
        "abort": {"percent": 10.5, "http_status": None, "grpc_status": 14},
    }
    assert [(m.service, m.percent) for m in r.mirrors] == [("default/shadow", 25), ("default/pricing", 12.5)]


def test_a_tcp_service_retries_connect_failures_only() -> None:
    out = explain(mesh(), ExplainRequest(source="frontend", destination="db"))
    assert out.resilience is not None
    retry = out.resilience.retry
    assert (retry.source, retry.before_sent, retry.after_sent) == ("default", ["connect-failure"], [])
    assert retry.note == "a connection: up to 2 retries on connect-failure, before anything is read"


# === per backend: the cluster's settings, locality, rate limits ===


def with_policy(policy: dict[str, Any], **req: Any) -> Any:
    m = mesh()
    spec = TrafficPolicySpec.model_validate({"targetRef": {"name": "catalog"}, **policy})
    m.policies = {"default/catalog": ("default/catalog-policy", spec)}
    callers = req.pop("callers", ())
    out = explain(m, ExplainRequest(source="frontend", destination="catalog", **req), callers)
    assert out.backends[0].resilience is not None
    return out.backends[0].resilience


def test_without_a_policy_every_setting_is_the_data_planes_default() -> None:
    res = with_policy({})
    for setting, table in (
        (res.circuit_breakers, defaults.CIRCUIT_BREAKERS),
        (res.retry_budget, defaults.RETRY_BUDGET),
        (res.outlier_detection, defaults.OUTLIER_DETECTION),
        (res.load_balancer, {"lb": "round_robin"}),
    ):
        assert setting.values == table and setting.defaults == list(table) and setting.policy is None
    assert res.health_check is None and res.locality == [] and res.rate_limit is None
    assert res.reporting_sidecars == 0 and res.unhealthy == []


def test_what_the_policy_sets_and_what_stays_default() -> None:
    res = with_policy(
        {
            "loadBalancer": {"type": "PeakEWMA"},
            "connectionPool": {"http": {"http2MaxRequests": 10}},
            "outlierDetection": {"consecutiveGatewayErrors": 1, "baseEjectionTime": "30s"},
            "healthCheck": {"http": {"path": "/healthz"}, "interval": "2s"},
            "retryBudget": {"retryRatio": 0.5},
        }
    )
    assert (res.load_balancer.values, res.load_balancer.defaults) == ({"lb": "peak_ewma"}, [])
    assert res.load_balancer.policy == "default/catalog-policy"
    assert res.circuit_breakers.values == {**defaults.CIRCUIT_BREAKERS, "max_requests": 10}
    assert res.circuit_breakers.defaults == ["max_connections", "max_pending_requests", "max_retries"]
    od = res.outlier_detection
    assert od.values["consecutive_gateway_errors"] == 1 and od.values["base_ejection_ms"] == 30_000
    assert "consecutive_gateway_errors" not in od.defaults and "consecutive_5xx" in od.defaults
    assert res.retry_budget.values == {"percent": 50, "min_per_second": 10, "window_ms": 10_000}
    assert res.retry_budget.defaults == ["min_per_second", "window_ms"]
    hc = res.health_check
    assert hc is not None and hc.policy == "default/catalog-policy"
    assert hc.values == {
        "type": "http",
        "path": "/healthz",
        "interval_ms": 2000,
        "timeout_ms": 1000,
        "healthy_threshold": 2,
        "unhealthy_threshold": 3,
        "jitter_ms": 200,  # a tenth of the interval
        "expected_statuses": "any 2xx",
    }
    assert hc.defaults == ["timeout_ms", "healthy_threshold", "unhealthy_threshold", "jitter_ms", "expected_statuses"]


def test_locality_per_caller_zone_with_its_failover_order() -> None:
    setting = {"loadBalancer": {"localityLbSetting": {"failover": [{"from": "a", "to": "c"}], "minHealthPercent": 60}}}
    callers = [CallerReport("b", None), CallerReport("a", None), CallerReport(None, None), CallerReport("a", None)]
    res = with_policy(setting, callers=callers)
    assert [(p.zone, p.enabled, p.failover, p.min_healthy_percent, p.defaults) for p in res.locality] == [
        ("a", True, ["c"], 60, []),
        ("b", True, [], 60, []),
    ]
    # The zone asked about wins; without a policy locality is on, its share the data plane's default.
    (only,) = with_policy({}, callers=callers, zone="x").locality
    assert (only.zone, only.failover, only.min_healthy_percent, only.defaults) == ("x", [], 70, ["min_healthy_percent"])
    assert only.local_endpoints == 0
    (off,) = with_policy({"loadBalancer": {"localityLbSetting": {"enabled": False}}}, zone="a").locality
    assert (off.zone, off.enabled) == ("a", False)


def test_the_local_endpoints_count_by_zone_label() -> None:
    out = explain(mesh(), ExplainRequest(source="frontend", destination="pricing", zone="b"))
    (place,) = out.backends[0].resilience.locality
    assert place.local_endpoints == 1  # of 10.0.0.1 (no zone) and 10.0.0.2 (zone b)


def limited(spec: dict[str, Any], source: str = "frontend", destination: str = "catalog") -> Any:
    m = mesh()
    policy = RateLimitPolicySpec.model_validate({"targetRef": {"name": destination}, **spec})
    m.rate_limits = {f"default/{destination}": ("default/limits", policy)}
    out = explain(m, ExplainRequest(source=source, destination=destination))
    return out.backends[0].resilience.rate_limit


def test_the_rate_limit_bucket_this_caller_gets() -> None:
    spec = {
        "total": {"requestsPerSecond": 100},
        "identity": {"requestsPerSecond": 10, "burst": 20},
        "overrides": [
            {"requestsPerSecond": 1, "clientRefs": [{"name": "catalog"}]},
            {"requestsPerSecond": 50.5, "burst": 5, "clientRefs": [{"name": "pricing"}, {"name": "frontend"}]},
        ],
    }
    out = limited(spec)
    assert (out.policy, out.unit) == ("default/limits", "requests")
    assert out.total.model_dump() == {"rps": 100, "burst": 100, "burst_default": True}
    assert (out.caller_bucket, out.override_index) == ("override", 1)
    assert out.caller.model_dump() == {"rps": 50.5, "burst": 5, "burst_default": False}
    others = limited({**spec, "overrides": spec["overrides"][:1]})
    assert (others.caller_bucket, others.override_index) == ("identity", None)
    assert others.caller.model_dump() == {"rps": 10, "burst": 20, "burst_default": False}
    total_only = limited({"total": {"requestsPerSecond": 0.5}})
    assert total_only.caller_bucket is None and total_only.caller is None
    assert total_only.total.burst == 1  # the rate rounded up, at least 1
    assert limited({"total": {"requestsPerSecond": 5}}, destination="db").unit == "connections"
    assert limited({"total": {"requestsPerSecond": 5}}, destination="pricing") is not None
    assert (
        explain(mesh(), ExplainRequest(source="frontend", destination="catalog")).backends[0].resilience.rate_limit
        is None
    )


# === endpoints out, as the caller's sidecars report them ===


def test_endpoints_some_caller_sidecar_reports_out() -> None:
    cluster = "out/default/pricing/version:v2"
    callers = [
        CallerReport(None, {cluster: {"10.0.0.2:15006": {"ejected": True, "ejected_for_ms": 5000}}}, age_ms=1000),
        CallerReport(None, {cluster: {"10.0.0.2:15006": {"ejected": False, "health_check": "failing"}}}),
        CallerReport(None, {}),
        CallerReport(None, None),  # reports nothing: not counted
    ]
    canary = {
        "parentRefs": [{"name": "pricing"}],
        "rules": [{"backendRefs": [{"name": "pricing", "subset": {"version": "v2"}}]}],
    }
    m = mesh(http_routes=[http_route("canary", canary)])
    out = explain(m, ExplainRequest(source="frontend", destination="pricing"), callers)
    res = out.backends[0].resilience
    assert res is not None and res.reporting_sidecars == 3
    (bad,) = res.unhealthy
    assert (bad.endpoint, bad.ejected_by, bad.failing_health_checks_by, bad.ejected_for_ms) == (
        "10.0.0.2:15006",
        1,
        1,
        4000,
    )
    assert bad.summary == (
        "ejected by 1 of 3 sidecars of default/frontend (for 4.0 s more);"
        " failing health checks at 1 of 3 sidecars of default/frontend"
    )
    # An ejection over since its report, and endpoints of other clusters, are not listed.
    over = [CallerReport(None, {cluster: {"10.0.0.2:15006": {"ejected": True, "ejected_for_ms": 500}}}, age_ms=900)]
    other = [CallerReport(None, {"out/default/catalog": {"10.0.0.2:15006": {"ejected": True}}})]
    for callers in (over, other):
        res = explain(m, ExplainRequest(source="frontend", destination="pricing"), callers).backends[0].resilience
        assert res is not None and res.unhealthy == [] and res.reporting_sidecars == 1


def test_a_sidecar_reports_what_its_data_plane_has_out(proxy: Any) -> None:
    dp = proxy(
        {
            "listeners": [],
            "clusters": [
                {
                    "name": "checked",
                    "endpoints": [{"address": "127.0.0.1:1"}],
                    "health_check": {"type": "tcp", "interval_ms": 20, "timeout_ms": 20, "jitter_ms": 0},
                },
                {"name": "fine", "endpoints": [{"address": "127.0.0.1:2"}]},
            ],
        }
    )
    wait_until(lambda: endpoint_health(dp.stats()) != {}, timeout=10, what="the health check to fail")
    assert endpoint_health(dp.stats()) == {"checked": {"127.0.0.1:1": {"ejected": False, "health_check": "failing"}}}
    # However many are out, a heartbeat carries at most what the control plane takes.
    many = {"clusters": {"c": {"endpoints": {f"10.0.{i // 250}.{i % 250}:1": {"healthy": False} for i in range(300)}}}}
    assert sum(len(e) for e in endpoint_health(many).values()) == MAX_ENDPOINT_HEALTH


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_explain_dumps_to_json(method: str) -> None:
    """What the API sends (the CLI renders it): every part serializes."""
    out = explained(method, {"timeouts": {"request": "1s"}})
    assert out.model_dump(mode="json")["resilience"]["timeout_ms"] == 1000


# === through the API: sidecars report, explain and `meshctl explain` show ===


def test_sidecars_report_endpoint_health_and_explain_shows_it(cp: ControlPlane, tmp_path: Path) -> None:
    policy = {"targetRef": {"name": "catalog"}, "outlierDetection": {"consecutiveGatewayErrors": 1}}
    limits = {"targetRef": {"name": "catalog"}, "identity": {"requestsPerSecond": 5}}
    cp.apply(
        service("frontend"),
        service("catalog"),
        {"kind": "TrafficPolicy", "metadata": {"name": "catalog"}, "spec": policy},
        {"kind": "RateLimitPolicy", "metadata": {"name": "catalog"}, "spec": limits},
    )
    for port in (15101, 15102):
        cp.ok(
            "PUT",
            "/api/v1/sidecars",
            json={"service": "catalog", "address": "127.0.0.1", "inbound_port": port, "app_port": 8080},
        )
    out = {"out/default/catalog": {"127.0.0.1:15102": {"ejected": True, "ejected_for_ms": 60_000}}}
    front = {"service": "frontend", "address": "127.0.0.1", "app_port": 8080, "zone": "z1"}
    cp.ok("PUT", "/api/v1/sidecars", json={**front, "inbound_port": 15201, "endpoint_health": out})
    cp.ok("PUT", "/api/v1/sidecars", json={**front, "inbound_port": 15202, "endpoint_health": {}})
    reported = {s["inbound_port"]: s["endpoint_health"] for s in cp.sidecars() if s["service"] == "frontend"}
    assert reported == {15201: out, 15202: {}}

    body = {"source": "frontend", "destination": "catalog", "method": "POST"}
    explained = cp.ok("POST", "/api/v1/explain", json=body)
    res = explained["backends"][0]["resilience"]
    assert res["reporting_sidecars"] == 2
    (bad,) = res["unhealthy"]
    assert bad["endpoint"] == "127.0.0.1:15102" and bad["summary"].startswith(
        "ejected by 1 of 2 sidecars of default/frontend"
    )
    assert [p["zone"] for p in res["locality"]] == ["z1"]
    assert res["rate_limit"]["caller_bucket"] == "identity"
    assert explained["resilience"]["retry"]["source"] == "default"

    cli = tmp_path / "cli"
    cli.mkdir()
    lines = cp.cli("explain", "--from", "frontend", "--to", "catalog", "-X", "POST", data_dir=cli).splitlines()
    for line in (
        "timeout: none",
        "retries (default): POST is not idempotent: up to 2 retries only when nothing reached the upstream"
        " (connect-failure, refused-stream), not on reset (retry.nonIdempotent allows it); back-off 25..250 ms",
        "  default/catalog  100% (weight 1)  RoundRobin (default), policy default/catalog",
        "    circuit breakers (default): max_connections 1024, max_pending_requests 1024, max_requests 1024,"
        " max_retries 1024",
        "    retry budget (default): percent 20, min_per_second 10, window_ms 10000",
        "    outlier detection: consecutive_gateway_errors 1; default: consecutive_5xx 5, base_ejection_ms 10000,"
        " max_ejection_ms 300000, max_ejection_percent 50, panic_threshold_percent 50",
        "    health check: none (the data plane checks only when a policy asks)",
        "    locality in z1: 0 local endpoint(s) while 70% (default) of them are healthy, then any zone",
        "    rate limit (default/catalog, requests per sidecar of default/catalog): this caller: its own 5/s,"
        " burst 5 (default)",
    ):
        assert line in lines, "\n".join(lines)
    assert any(
        x.startswith("    out of balancing: 127.0.0.1:15102: ejected by 1 of 2 sidecars of default/frontend")
        for x in lines
    )


GARBLED: list[tuple[Any, list[Any], str]] = [
    ("ejected", ["endpoint_health"], "valid dictionary"),
    ({"c": {"h:1": {"ejected": "maybe"}}}, ["endpoint_health", "c", "h:1", "ejected"], "valid boolean"),
    ({"c": {"h:1": {"health_check": "sick"}}}, ["endpoint_health", "c", "h:1", "health_check"], "'passing'"),
    ({"c": {"h:1": {"ejected_for_ms": -1}}}, ["endpoint_health", "c", "h:1", "ejected_for_ms"], "or equal to 0"),
    ({"c": {f"h:{i}": {} for i in range(257)}}, ["endpoint_health"], "257 endpoints: at most 256"),
    ({"c" * 513: {}}, ["endpoint_health", "c" * 513, "[key]"], "at most 512"),
]


def test_registration_refuses_a_garbled_endpoint_health(cp: ControlPlane) -> None:
    cp.apply(service("frontend"))
    body = {"service": "frontend", "address": "127.0.0.1", "inbound_port": 15301, "app_port": 8080}
    for health, loc, msg in GARBLED:
        r = cp.call("PUT", "/api/v1/sidecars", json={**body, "endpoint_health": health})
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body", *loc] and msg in error["msg"], error
    assert cp.sidecars() == []  # nothing written
