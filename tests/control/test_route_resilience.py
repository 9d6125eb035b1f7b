"""HTTPRoute timeouts (GEP-1742), retry (GEP-1731 and meshctl's extensions),
RequestMirror filters (GEP-3171) and fault injection (Istio's shape): what the
compiler emits for them (as dicts, the data-plane contract), and through a real
control plane (uvicorn, SQLite file): 422s naming each field with nothing
written, references of mirrored services, and revisions, diff and rollback
carrying them into sidecars' snapshots."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshctl.control.compiler import compile_sidecar
from meshctl.control.kinds.durations import parse_duration
from meshctl.control.kinds.httproute import HTTPRouteSpec
from meshproc import ControlPlane, module_control_plane
from test_compiler import (
    EDGE,
    EDGE_GATEWAY,
    FRONTEND,
    clusters,
    gateway_route,
    http_route,
    listener,
    mesh,
    validate,
    validate_gateway,
)

# === the compiler ===

RESILIENT = {
    "backendRefs": [{"name": "pricing"}],
    "timeouts": {"request": "2s", "backendRequest": "500ms"},
    "retry": {
        "codes": [503, 429, 503],
        "attempts": 3,
        "backoff": "50ms",
        "retryOn": ["connect-failure", "gateway-error"],
        "grpcCodes": ["UNAVAILABLE", "deadline-exceeded", "Resource_Exhausted"],
        "nonIdempotent": True,
    },
    "filters": [
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "catalog"}, "percent": 50}},
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"name": "cart", "namespace": "shop", "port": 80},
                "fraction": {"numerator": 1, "denominator": 8},
            },
        },
    ],
    "fault": {
        "delay": {"percentage": {"value": 10.5}, "fixedDelay": "1m5s"},
        "abort": {"percentage": {"value": 10}, "grpcStatus": "UNAVAILABLE"},
    },
    "maxRequestBytes": 1_048_576,
}

#: What RESILIENT adds to its route, as the data-plane contract spells it.
RESILIENT_COMPILED = {
    "timeout_ms": 2000,
    "retry": {
        "attempts": 3,
        "retry_on": ["connect-failure", "gateway-error"],
        "codes": [503, 429],
        "grpc_codes": ["unavailable", "deadline-exceeded", "resource-exhausted"],
        "non_idempotent": True,
        "backoff": {"base_ms": 50, "max_ms": 500},  # no maxBackoff: 10 x the base
        "per_try_timeout_ms": 500,
    },
    "mirrors": [{"cluster": "out/default/catalog", "percent": 50.0}, {"cluster": "out/shop/cart", "percent": 12.5}],
    "fault": {"delay": {"percent": 10.5, "fixed_ms": 65_000}, "abort": {"percent": 10.0, "grpc_status": 14}},
    "max_request_bytes": 1_048_576,
}
RESILIENCE_KEYS = ("timeout_ms", "retry", "mirrors", "fault", "max_request_bytes")


def pricing_routes(*rules: dict[str, Any]) -> list[dict[str, Any]]:
    route = http_route("r", {"parentRefs": [{"name": "pricing"}], "rules": list(rules)})
    config = compile_sidecar(mesh(http_routes=[route]), FRONTEND)
    return list(listener(config, "outbound/default/pricing")["routes"])


def added(route: dict[str, Any]) -> dict[str, Any]:
    return {k: route[k] for k in RESILIENCE_KEYS if k in route}


def test_durations_are_gateway_api_durations_in_milliseconds() -> None:
    assert [parse_duration(t) for t in ("0s", "250ms", "1s", "1m30s", "1h", "2h0m0s1ms")] == [
        0,
        250,
        1000,
        90_000,
        3_600_000,
        7_200_001,
    ]
    for bad in ("", "1", "1.5s", "-1s", "1d", "100000s", "1s2s3s4s5s", " 1s"):
        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration(bad)


def test_every_field_compiles_as_the_contract_says() -> None:
    config = compile_sidecar(
        mesh(http_routes=[http_route("r", {"parentRefs": [{"name": "pricing"}], "rules": [RESILIENT]})]), FRONTEND
    )
    [route] = listener(config, "outbound/default/pricing")["routes"]
    assert added(route) == RESILIENT_COMPILED
    assert route["backends"] == [{"cluster": "out/default/pricing", "weight": 1}]
    # Mirrored services get their clusters as backends do (the whole service, mTLS to its identity).
    by_name = clusters(config)
    assert by_name["out/shop/cart"]["tls"] == {"peer_ids": ["spiffe://cluster.local/ns/shop/sa/cart"]}
    assert by_name["out/default/catalog"]["endpoints"] == [{"address": "10.0.0.3:15006", "weight": 1}]
    # The same rule reached through the HTTP proxy port (by Host) compiles the same.
    proxied = [r for r in listener(config, "http-proxy")["routes"] if r["name"] == "default/r/rule0/match0"]
    assert proxied and all(added(r) == RESILIENT_COMPILED for r in proxied)


def test_without_retry_a_route_has_the_data_planes_default() -> None:
    plain = {"backendRefs": [{"name": "pricing"}]}
    assert added(pricing_routes(plain)[0]) == {}
    # "0s" is no timeout at all; a per-try timeout alone keeps the default retries around it.
    rules = [
        {**plain, "timeouts": {"request": "0s"}},
        {**plain, "timeouts": {"request": "0s", "backendRequest": "3s"}},
        {**plain, "timeouts": {"backendRequest": "0s"}},
        {**plain, "timeouts": {"request": "1s", "backendRequest": "1s"}},
        {**plain, "retry": {}},
        {**plain, "retry": {"attempts": 0}},
    ]
    assert [added(pricing_routes(r)[0]) for r in rules] == [
        {},
        {"retry": {"per_try_timeout_ms": 3000}},
        {},
        {"timeout_ms": 1000, "retry": {"per_try_timeout_ms": 1000}},
        {"retry": {}},
        {"retry": {"attempts": 0}},
    ]


def test_backoff_cap_grpc_status_numbers_and_mirror_shares() -> None:
    plain = {"backendRefs": [{"name": "pricing"}]}
    retries = [
        {"backoff": "1s", "maxBackoff": "3s"},
        {"maxBackoff": "2s"},
        {"backoff": "3h"},  # 10 x is capped at the data plane's 24 h
    ]
    assert [pricing_routes({**plain, "retry": r})[0]["retry"] for r in retries] == [
        {"backoff": {"base_ms": 1000, "max_ms": 3000}},
        {"backoff": {"max_ms": 2000}},
        {"backoff": {"base_ms": 10_800_000, "max_ms": 86_400_000}},
    ]
    aborts = [{"httpStatus": 503}, {"grpcStatus": 4}, {"grpcStatus": "deadline_exceeded"}]
    assert [
        pricing_routes({**plain, "fault": {"abort": {"percentage": {"value": 0.5}, **a}}})[0]["fault"] for a in aborts
    ] == [
        {"abort": {"percent": 0.5, "http_status": 503}},
        {"abort": {"percent": 0.5, "grpc_status": 4}},
        {"abort": {"percent": 0.5, "grpc_status": 4}},
    ]
    shares = [{}, {"percent": 0}, {"fraction": {"numerator": 3}}, {"fraction": {"numerator": 1, "denominator": 1}}]
    mirrors = [
        pricing_routes(
            {**plain, "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "catalog"}, **s}}]}
        )[0]["mirrors"]
        for s in shares
    ]
    assert [m[0]["percent"] for m in mirrors] == [100.0, 0.0, 3.0, 100.0]


def test_gateway_listeners_routes_get_them_too() -> None:
    route = gateway_route("edge-r", [{**RESILIENT, "backendRefs": [{"name": "pricing"}]}], hostnames=["a.example"])
    config = compile_sidecar(mesh(gateways={"default/edge": EDGE_GATEWAY}, http_routes=[route]), EDGE)
    [r] = listener(config, "gateway/8443")["routes"]
    assert added(r) == RESILIENT_COMPILED
    assert {"out/default/catalog", "out/shop/cart", "out/default/pricing"} <= set(clusters(config))


def test_the_real_decoder_takes_what_the_compiler_emits() -> None:
    """Needs the data plane built with issue 11's route sections."""
    route = http_route("r", {"parentRefs": [{"name": "pricing"}], "rules": [RESILIENT]})
    validate(compile_sidecar(mesh(http_routes=[route]), FRONTEND))
    gateway = gateway_route("edge-r", [RESILIENT], hostnames=["a.example"])
    validate_gateway(compile_sidecar(mesh(gateways={"default/edge": EDGE_GATEWAY}, http_routes=[gateway]), EDGE))


def test_the_readme_example_is_valid_and_compiles() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "RequestMirror" in b]
    doc = yaml.safe_load(block)
    HTTPRouteSpec.model_validate(doc["spec"])
    [route] = pricing_routes(*doc["spec"]["rules"])
    assert set(added(route)) == set(RESILIENCE_KEYS)


# === through the API ===


cp = module_control_plane()


def service(name: str, ns: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": {"ports": [{"port": 80}]}}


def route_doc(name: str, ns: str, *rules: dict[str, Any]) -> dict[str, Any]:
    spec = {"parentRefs": [{"name": "pricing"}], "rules": list(rules)}
    return {"kind": "HTTPRoute", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def errors(r: Any) -> dict[tuple[Any, ...], str]:
    assert r.status_code == 422, r.text
    return {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}


TO_PRICING = {"backendRefs": [{"name": "pricing"}]}
REDIRECT = {"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}]}


def mirror(**body: Any) -> dict[str, Any]:
    return {
        **TO_PRICING,
        "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow"}, **body}}],
    }


BAD_RULES = [
    # timeouts
    ({**TO_PRICING, "timeouts": {"request": "1.5s"}}, ("timeouts", "request"), "'1.5s' is not a duration"),
    ({**TO_PRICING, "timeouts": {"request": "25h"}}, ("timeouts", "request"), "longer than 24h"),
    (
        {**TO_PRICING, "timeouts": {"request": "1s", "backendRequest": "1001ms"}},
        ("timeouts", "backendRequest"),
        "backendRequest 1001ms is longer than the request timeout 1s",
    ),
    ({**TO_PRICING, "timeouts": {"idle": "1s"}}, ("timeouts", "idle"), "unknown field"),
    # retry
    ({**TO_PRICING, "retry": {"attempts": 11}}, ("retry", "attempts"), "less than or equal to 10"),
    ({**TO_PRICING, "retry": {"codes": [503, 302]}}, ("retry", "codes", 1), "greater than or equal to 400"),
    ({**TO_PRICING, "retry": {"backoff": "0s"}}, ("retry", "backoff"), "'0s' must be at least 1ms"),
    ({**TO_PRICING, "retry": {"backoff": "1s", "maxBackoff": "500ms"}}, ("retry", "maxBackoff"), "shorter than"),
    ({**TO_PRICING, "retry": {"maxBackoff": "10ms"}}, ("retry", "maxBackoff"), "back-off base 25ms"),
    ({**TO_PRICING, "retry": {"retryOn": ["5xx", "timeout"]}}, ("retry", "retryOn", 1), "Input should be"),
    ({**TO_PRICING, "retry": {"grpcCodes": ["NOT_FOUND"]}}, ("retry", "grpcCodes", 0), "not a retriable gRPC"),
    # the RequestMirror filter
    (mirror(percent=101), ("filters", 0, "requestMirror", "percent"), "less than or equal to 100"),
    (mirror(percent=5, fraction={"numerator": 1}), ("filters", 0, "requestMirror"), "percent or fraction, not both"),
    (mirror(fraction={"numerator": 3, "denominator": 2}), ("filters", 0, "requestMirror", "fraction"), "over"),
    (
        mirror(fraction={"numerator": 1, "denominator": 0}),
        ("filters", 0, "requestMirror", "fraction", "denominator"),
        "greater than or equal to 1",
    ),
    (
        {**TO_PRICING, "filters": [{"type": "RequestMirror", "requestRedirect": {"scheme": "https"}}]},
        ("filters", 0),
        "a RequestMirror filter takes exactly its requestMirror field",
    ),
    # fault
    ({**TO_PRICING, "fault": {}}, ("fault",), "a delay, an abort or both"),
    (
        {**TO_PRICING, "fault": {"delay": {"percentage": {"value": 100.5}, "fixedDelay": "1s"}}},
        ("fault", "delay", "percentage", "value"),
        "less than or equal to 100",
    ),
    (
        {**TO_PRICING, "fault": {"delay": {"percentage": {"value": 5}}}},
        ("fault", "delay", "fixedDelay"),
        "Field required",
    ),
    (
        {**TO_PRICING, "fault": {"delay": {"percentage": {"value": 5}, "fixedDelay": "0ms"}}},
        ("fault", "delay", "fixedDelay"),
        "at least 1ms",
    ),
    (
        {**TO_PRICING, "fault": {"abort": {"percentage": {"value": 5}}}},
        ("fault", "abort"),
        "exactly one of httpStatus and grpcStatus",
    ),
    (
        {**TO_PRICING, "fault": {"abort": {"percentage": {"value": 5}, "httpStatus": 503, "grpcStatus": 14}}},
        ("fault", "abort"),
        "exactly one",
    ),
    (
        {**TO_PRICING, "fault": {"abort": {"percentage": {"value": 5}, "httpStatus": 600}}},
        ("fault", "abort", "httpStatus"),
        "less than or equal to 599",
    ),
    (
        {**TO_PRICING, "fault": {"abort": {"percentage": {"value": 5}, "grpcStatus": 17}}},
        ("fault", "abort", "grpcStatus"),
        "17 is not a gRPC status",
    ),
    (
        {**TO_PRICING, "fault": {"abort": {"percentage": {"value": 5}, "grpcStatus": "SLOW"}}},
        ("fault", "abort", "grpcStatus"),
        "not a gRPC status name",
    ),
    # a redirect forwards nothing
    ({**REDIRECT, "timeouts": {"request": "1s"}}, ("timeouts",), "not with a RequestRedirect filter"),
    ({**REDIRECT, "retry": {"attempts": 1}}, ("retry",), "not with a RequestRedirect filter"),
    (
        {**REDIRECT, "fault": {"abort": {"percentage": {"value": 5}, "httpStatus": 503}}},
        ("fault",),
        "not with a RequestRedirect",
    ),
    (
        {"filters": [*REDIRECT["filters"], *mirror()["filters"]]},
        (),
        "RequestMirror and RequestRedirect cannot be used together",
    ),
]


@pytest.mark.parametrize(("rule", "loc", "message"), BAD_RULES)
def test_bad_values_are_422s_naming_the_field_and_nothing_is_written(
    cp: ControlPlane, rule: dict[str, Any], loc: tuple[Any, ...], message: str
) -> None:
    cp.apply(service("pricing", "bad"), service("shadow", "bad"))
    before = len(cp.ok("GET", "/api/v1/revisions"))
    doc = route_doc("r", "bad", TO_PRICING, rule)  # the second rule is the bad one
    found = errors(cp.call("POST", "/api/v1/apply", json={"documents": [doc]}))
    at = ("body", "documents", 0, "spec", "rules", 1, *loc)
    assert at in found and message in found[at], found
    created = {"name": "r", "namespace": "bad", "spec": doc["spec"]}
    found = errors(cp.call("POST", "/api/v1/httproutes", json=created))
    assert message in found[("body", "spec", "rules", 1, *loc)]
    assert cp.call("GET", "/api/v1/httproutes/bad/r").status_code == 404
    assert len(cp.ok("GET", "/api/v1/revisions")) == before


def test_a_mirrored_service_is_a_reference(cp: ControlPlane) -> None:
    cp.apply(service("pricing", "refs"))
    doc = route_doc("r", "refs", mirror())
    found = errors(cp.call("POST", "/api/v1/apply", json={"documents": [doc]}))
    at = ("body", "documents", 0, "spec", "rules", 0, "filters", 0, "requestMirror", "backendRef", "name")
    assert found == {at: "service refs/shadow does not exist"}
    assert cp.apply(service("shadow", "refs"), doc)[1]["action"] == "created"
    r = cp.call("DELETE", "/api/v1/services/refs/shadow")
    assert r.status_code == 409 and "HTTPRoute refs/r" in r.json()["detail"]
    # Stored as written, read back the same.
    spec = cp.ok("GET", "/api/v1/httproutes/refs/r")["spec"]
    assert spec["rules"][0]["filters"][0]["requestMirror"]["backendRef"]["name"] == "shadow"
    assert cp.apply(doc)[0]["action"] == "unchanged"
    cp.ok("DELETE", "/api/v1/httproutes/refs/r")
    cp.ok("DELETE", "/api/v1/services/refs/shadow")


def pricing_route(cp: ControlPlane, ns: str) -> dict[str, Any]:
    """The route a caller of pricing in `ns` gets, from its sidecar's snapshot."""
    body = {"namespace": ns, "service": "frontend", "address": "127.0.0.1", "inbound_port": 15006, "app_port": 8080}
    sidecar = cp.ok("PUT", "/api/v1/sidecars", json={**body, "upstreams": {"pricing": 7002}})["id"]
    try:
        config = cp.ok("GET", f"/api/v1/sidecars/{sidecar}/snapshot", params={"wait": 0})["config"]
    finally:
        cp.ok("DELETE", f"/api/v1/sidecars/{sidecar}")
    [route] = listener(config, f"outbound/{ns}/pricing")["routes"]
    return dict(route)


def test_revisions_diff_and_rollback_carry_them_into_snapshots(cp: ControlPlane) -> None:
    rule = {**TO_PRICING, "retry": {"attempts": 4, "codes": [503]}, "fault": RESILIENT["fault"]}
    cp.apply(service("frontend", "rb"), service("pricing", "rb"), route_doc("r", "rb", rule))
    good = cp.ok("GET", "/api/v1/revisions")[-1]["id"]
    assert added(pricing_route(cp, "rb")) == {
        "retry": {"attempts": 4, "codes": [503]},
        "fault": RESILIENT_COMPILED["fault"],
    }
    assert cp.apply(route_doc("r", "rb", {**TO_PRICING, "timeouts": {"request": "3s"}}))[0]["action"] == "configured"
    assert added(pricing_route(cp, "rb")) == {"timeout_ms": 3000}
    latest = cp.ok("GET", "/api/v1/revisions")[-1]["id"]
    changes = cp.ok("GET", f"/api/v1/revisions/{good}/diff/{latest}")
    assert [(c["kind"], c["name"], c["change"]) for c in changes] == [("HTTPRoute", "rb/r", "changed")]
    cp.ok("POST", f"/api/v1/revisions/{good}/rollback")
    assert added(pricing_route(cp, "rb")) == {
        "retry": {"attempts": 4, "codes": [503]},
        "fault": RESILIENT_COMPILED["fault"],
    }
