"""The snapshot compiler as a pure function: mesh resources in, a sidecar's
data-plane config out — which the real data plane's validator accepts."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from meshctl.control.compiler import (
    EndpointView,
    Mesh,
    RouteView,
    SidecarSpec,
    compile_sidecar,
    covers,
    intersect,
)
from meshctl.control.explain import ExplainRequest, explain
from meshctl.control.kinds.gateway import GatewaySpec
from meshctl.control.kinds.httproute import HTTPRouteSpec
from meshctl.control.kinds.tcproute import TCPRouteSpec
from meshctl.control.kinds.trafficpolicy import TrafficPolicySpec
from meshproc import https_listener
from snapshots import certificate_dir, validate

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def http_route(name: str, spec: dict[str, Any], age: int = 0, namespace: str = "default") -> RouteView:
    return RouteView(namespace, name, T0 + timedelta(seconds=age), HTTPRouteSpec.model_validate(spec))


def mesh(**extra: Any) -> Mesh:
    m = Mesh(
        generation=7,
        services={
            "default/frontend": "http",
            "default/catalog": "http",
            "default/pricing": "http",
            "default/db": "tcp",
            "shop/cart": "grpc",
        },
        endpoints={
            "default/pricing": [
                EndpointView("10.0.0.1", 15006, 1, {"version": "v1"}),
                EndpointView("10.0.0.2", 15006, 2, {"version": "v2", "zone": "b"}),
            ],
            "default/catalog": [EndpointView("10.0.0.3", 15006)],
            "default/db": [EndpointView("10.0.0.4", 15006), EndpointView("::1", 15007)],
        },
    )
    for k, v in extra.items():
        setattr(m, k, v)
    return m


FRONTEND = SidecarSpec(
    namespace="default",
    service="frontend",
    address="127.0.0.1",
    inbound_port=15006,
    app_port=8080,
    upstreams=(("catalog", 7001), ("pricing", 7002), ("db", 7003)),
    http_proxy_port=15001,
    admin_port=15000,
)

CANARY = {
    "parentRefs": [{"name": "pricing"}],
    "rules": [
        {
            "backendRefs": [
                {"name": "pricing", "subset": {"version": "v1"}, "weight": 90},
                {"name": "pricing", "subset": {"version": "v2"}, "weight": 10},
            ]
        },
        {
            "matches": [{"headers": [{"name": "X-Canary", "value": "true"}]}],
            "backendRefs": [{"name": "pricing", "subset": {"version": "v2"}}],
        },
    ],
}


def listener(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(x for x in config["listeners"] if x["name"] == name)


def clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["clusters"]}


def test_a_sidecar_without_routes_gets_inbound_outbound_and_proxy_listeners() -> None:
    config = compile_sidecar(mesh(), FRONTEND)
    validate(config)  # the real data plane's decoder accepts it
    assert config["admin"] == {"address": "127.0.0.1:15000"}
    assert listener(config, "inbound") == {
        "name": "inbound",
        "address": "127.0.0.1:15006",
        "protocol": "http",
        "routes": [{"name": "inbound", "backends": [{"cluster": "inbound"}]}],
        "tls": {"mode": "strict"},
        "direction": "inbound",
    }
    assert clusters(config)["inbound"]["endpoints"] == [{"address": "127.0.0.1:8080"}]
    assert listener(config, "outbound/default/catalog") == {
        "name": "outbound/default/catalog",
        "address": "127.0.0.1:7001",
        "protocol": "http",
        "routes": [{"name": "default/catalog/default", "backends": [{"cluster": "out/default/catalog"}]}],
        "direction": "outbound",
    }
    assert clusters(config)["out/default/catalog"] == {
        "name": "out/default/catalog",
        "endpoints": [{"address": "10.0.0.3:15006", "weight": 1}],
        "service": "default/catalog",
        # mTLS to catalog's sidecars, which must prove to be catalog; HTTP/2 between sidecars.
        "protocol": "http2",
        "tls": {"peer_ids": ["spiffe://cluster.local/ns/default/sa/catalog"]},
    }
    db = listener(config, "outbound/default/db")
    assert db["protocol"] == "tcp" and db["backends"] == [{"cluster": "out/default/db", "weight": 1}]
    assert [e["address"] for e in clusters(config)["out/default/db"]["endpoints"]] == ["10.0.0.4:15006", "[::1]:15007"]
    # Routing by Host covers every HTTP service, short names only in the sidecar's namespace.
    hosts = [r["match"]["host"] for r in listener(config, "http-proxy")["routes"]]
    assert "catalog" in hosts and "catalog.default.svc" in hosts and "cart.shop" in hosts
    assert "cart" not in hosts and not any(h.startswith("db") for h in hosts)
    assert clusters(config)["out/shop/cart"]["protocol"] == "http2"  # grpc services speak h2 between sidecars


def test_canary_route_subsets_and_rule_precedence() -> None:
    config = compile_sidecar(mesh(http_routes=[http_route("canary", CANARY)]), FRONTEND)
    validate(config)
    routes = listener(config, "outbound/default/pricing")["routes"]
    # The header match is more specific than the catch-all, so it goes first though it is listed second.
    assert [r["name"] for r in routes] == ["default/canary/rule1/match0", "default/canary/rule0/match0"]
    assert routes[0]["match"] == {"headers": {"x-canary": "true"}}
    assert routes[1]["backends"] == [
        {"cluster": "out/default/pricing/version:v1", "weight": 90},
        {"cluster": "out/default/pricing/version:v2", "weight": 10},
    ]
    by_name = clusters(config)
    assert by_name["out/default/pricing/version:v1"]["endpoints"] == [{"address": "10.0.0.1:15006", "weight": 1}]
    assert by_name["out/default/pricing/version:v2"]["endpoints"] == [
        {"address": "10.0.0.2:15006", "weight": 2, "zone": "b"}
    ]


def test_precedence_exact_then_regex_then_longest_prefix_then_age() -> None:
    def rule(path_type: str, value: str) -> dict[str, Any]:
        return {"matches": [{"path": {"type": path_type, "value": value}}], "backendRefs": [{"name": "catalog"}]}

    old = http_route("old", {"parentRefs": [{"name": "catalog"}], "rules": [rule("PathPrefix", "/api")]}, age=0)
    new = http_route(
        "new",
        {
            "parentRefs": [{"name": "catalog"}],
            "rules": [
                rule("PathPrefix", "/"),
                rule("PathPrefix", "/api"),
                rule("Exact", "/api/x"),
                rule("RegularExpression", "/api/[0-9]+"),
            ],
        },
        age=5,
    )
    routes = listener(compile_sidecar(mesh(http_routes=[new, old]), FRONTEND), "outbound/default/catalog")["routes"]
    assert [r["name"] for r in routes] == [
        "default/new/rule2/match0",  # exact
        "default/new/rule3/match0",  # regex
        "default/old/rule0/match0",  # /api, older route first
        "default/new/rule1/match0",  # /api
        "default/new/rule0/match0",  # /
    ]


def test_a_match_without_a_path_ranks_as_prefix_slash_and_the_tie_breakers_decide() -> None:
    """Gateway API: no path match is `PathPrefix /`. Among equal paths a method wins, then more
    headers, then more query params; then the older route, and the order in the route."""

    def rule(path: str | None = None, **match: Any) -> dict[str, Any]:
        if path is not None:
            match["path"] = {"type": "PathPrefix", "value": path}
        return {"matches": [match], "backendRefs": [{"name": "catalog"}]}

    one_header = [{"name": "x-canary", "value": "true"}]
    new = http_route(
        "new",
        {
            "parentRefs": [{"name": "catalog"}],
            "rules": [
                rule("/"),
                rule(headers=one_header),
                rule(method="GET"),
                rule("/api"),
                rule(queryParams=[{"name": "debug", "value": "1"}]),
                rule(),
                rule("/", headers=[*one_header, {"name": "x-user", "value": "a"}]),
            ],
        },
        age=5,
    )
    old = http_route("old", {"parentRefs": [{"name": "catalog"}], "rules": [{"backendRefs": [{"name": "catalog"}]}]})
    routes = listener(compile_sidecar(mesh(http_routes=[new, old]), FRONTEND), "outbound/default/catalog")["routes"]
    assert [r["name"] for r in routes] == [
        "default/new/rule3/match0",  # the longer prefix
        "default/new/rule2/match0",  # a method
        "default/new/rule6/match0",  # two headers
        "default/new/rule1/match0",  # one header, though it has no path
        "default/new/rule4/match0",  # a query param
        "default/old/rule0/match0",  # `/` or no path alike: the older route
        "default/new/rule0/match0",  # then the order in the route
        "default/new/rule5/match0",
    ]


def test_the_readme_canary_sends_the_header_to_v2() -> None:
    """README's canary lists the header rule first and then an explicit `PathPrefix /`: the header
    rule must be tried first, by the proxy and in `explain`."""
    spec = {
        "parentRefs": [{"name": "pricing"}],
        "rules": [
            {
                "matches": [{"headers": [{"name": "x-canary", "value": "true"}]}],
                "backendRefs": [{"name": "pricing", "subset": {"version": "v2"}}],
            },
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {"name": "pricing", "subset": {"version": "v1"}, "weight": 90},
                    {"name": "pricing", "subset": {"version": "v2"}, "weight": 10},
                ],
            },
        ],
    }
    m = mesh(http_routes=[http_route("pricing-canary", spec)])
    routes = listener(compile_sidecar(m, FRONTEND), "outbound/default/pricing")["routes"]
    assert [r["name"] for r in routes] == ["default/pricing-canary/rule0/match0", "default/pricing-canary/rule1/match0"]
    out = explain(m, ExplainRequest(source="frontend", destination="pricing", headers={"x-canary": "true"}))
    assert [v.rule for v in out.rules if v.matched] == ["default/pricing-canary/rule0/match0"]
    assert [b.share_percent for b in out.backends] == [100.0]


def test_traffic_policy_and_tcp_route() -> None:
    policy = TrafficPolicySpec.model_validate(
        {
            "targetRef": {"name": "catalog"},
            "loadBalancer": {"type": "RingHash", "hashOn": {"header": "X-User"}},
            "protocol": "http2",
            "connectTimeoutMs": 250,
        }
    )
    tcp = RouteView(
        "default",
        "db-split",
        T0,
        TCPRouteSpec.model_validate(
            {
                "parentRefs": [{"name": "db"}],
                "rules": [{"backendRefs": [{"name": "db", "weight": 3}, {"name": "pricing", "weight": 1}]}],
            }
        ),
    )
    config = compile_sidecar(mesh(policies={"default/catalog": ("default/sticky", policy)}, tcp_routes=[tcp]), FRONTEND)
    validate(config)
    cat = clusters(config)["out/default/catalog"]
    assert (cat["lb"], cat["hash_header"], cat["protocol"], cat["connect_timeout_ms"]) == (
        "ring_hash",
        "x-user",
        "http2",
        250,
    )
    assert listener(config, "outbound/default/db")["backends"] == [
        {"cluster": "out/default/db", "weight": 3},
        {"cluster": "out/default/pricing", "weight": 1},
    ]


def test_connection_pool_becomes_the_clusters_circuit_breakers() -> None:
    def compiled(pool: dict[str, Any]) -> dict[str, Any]:
        policy = TrafficPolicySpec.model_validate({"targetRef": {"name": "catalog"}, "connectionPool": pool})
        config = compile_sidecar(mesh(policies={"default/catalog": ("default/limits", policy)}), FRONTEND)
        validate(config)
        return dict(clusters(config)["out/default/catalog"])

    full = {"tcp": {"maxConnections": 64}, "http": {"http1MaxPendingRequests": 8, "http2MaxRequests": 100}}
    assert compiled(full)["circuit_breakers"] == {"max_connections": 64, "max_pending_requests": 8, "max_requests": 100}
    assert compiled({"http": {"http2MaxRequests": 10}})["circuit_breakers"] == {"max_requests": 10}
    assert "circuit_breakers" not in compiled({}), "no limit set: the data plane's defaults"
    policy = TrafficPolicySpec.model_validate({"targetRef": {"name": "catalog"}, "connectionPool": full})
    out = explain(
        mesh(policies={"default/catalog": ("default/limits", policy)}),
        ExplainRequest(source="frontend", destination="catalog"),
    )
    assert out.backends[0].circuit_breakers == {"max_connections": 64, "max_pending_requests": 8, "max_requests": 100}
    with pytest.raises(ValidationError) as bad:
        TrafficPolicySpec.model_validate(
            {"targetRef": {"name": "c"}, "connectionPool": {"tcp": {"maxConnections": 0}, "http": {"maxRetries": 0}}}
        )
    assert {e["loc"] for e in bad.value.errors()} == {
        ("connectionPool", "tcp", "maxConnections"),
        ("connectionPool", "http", "maxRetries"),
    }


def test_a_tcp_service_gets_a_tcp_inbound_and_unknown_upstreams_get_empty_clusters() -> None:
    db = SidecarSpec("default", "db", "127.0.0.1", 15106, 5432, upstreams=(("ghost", 7100),))
    config = compile_sidecar(mesh(), db)
    validate(config)
    assert listener(config, "inbound") == {
        "name": "inbound",
        "address": "127.0.0.1:15106",
        "protocol": "tcp",
        "cluster": "inbound",
        "tls": {"mode": "strict"},
        "direction": "inbound",
    }
    assert clusters(config)["out/default/ghost"]["endpoints"] == []  # callers get a 503, not a refused port
    assert "admin" not in config


def test_compiling_is_pure_and_deterministic() -> None:
    m = mesh(http_routes=[http_route("canary", CANARY)])
    assert compile_sidecar(m, FRONTEND) == compile_sidecar(m, FRONTEND)
    assert m.http_routes[0].spec == HTTPRouteSpec.model_validate(CANARY)  # input untouched


@pytest.mark.parametrize(
    ("headers", "rule", "share"),
    [({"x-canary": "true"}, "default/canary/rule1/match0", [100.0]), ({}, "default/canary/rule0/match0", [90.0, 10.0])],
)
def test_explain_names_the_rule_the_subset_and_why_others_failed(
    headers: dict[str, str], rule: str, share: list[float]
) -> None:
    m = mesh(http_routes=[http_route("canary", CANARY)])
    out = explain(m, ExplainRequest(source="frontend", host="pricing", path="/price?sku=1", headers=headers))
    assert out.outcome == "forward" and out.destination == "default/pricing"
    assert [v.rule for v in out.rules if v.matched] == [rule]
    assert [b.share_percent for b in out.backends] == share
    if not headers:
        assert out.rules[0].reason == "header x-canary is absent, not 'true'"
    else:
        assert out.backends[0].endpoints == ["10.0.0.2:15006"]
        assert out.rules[1].reason.startswith("not tried")


def test_explain_unknown_and_no_match() -> None:
    only_api = http_route(
        "api",
        {
            "parentRefs": [{"name": "catalog"}],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [{"name": "catalog"}]}
            ],
        },
    )
    m = mesh(http_routes=[only_api])
    miss = explain(m, ExplainRequest(source="frontend", destination="catalog", path="/apix"))
    assert miss.outcome == "no_route" and miss.rules[0].reason == "path '/apix' is not under prefix '/api'"
    assert explain(m, ExplainRequest(source="frontend", host="nope.default")).outcome == "unknown_service"


FILTERED = {
    "parentRefs": [{"name": "catalog"}],
    "rules": [
        {
            "matches": [
                {"path": {"type": "PathPrefix", "value": "/old"}, "queryParams": [{"name": "v", "value": "2"}]}
            ],
            "filters": [
                {
                    "type": "RequestRedirect",
                    "requestRedirect": {
                        "scheme": "https",
                        "hostname": "shop.example",
                        "statusCode": 301,
                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"},
                    },
                }
            ],
        },
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST"}],
            "filters": [
                {
                    "type": "URLRewrite",
                    "urlRewrite": {
                        "hostname": "catalog.internal",
                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"},
                    },
                },
                {
                    "type": "RequestHeaderModifier",
                    "requestHeaderModifier": {
                        "set": [{"name": "X-Env", "value": "prod"}],
                        "add": [{"name": "X-Tag", "value": "a"}],
                        "remove": ["X-Debug"],
                    },
                },
                {
                    "type": "ResponseHeaderModifier",
                    "responseHeaderModifier": {"set": [{"name": "Cache-Control", "value": "no-store"}]},
                },
            ],
            "backendRefs": [{"name": "catalog"}],
        },
    ],
}


def test_filters_compile_to_what_the_data_plane_accepts() -> None:
    config = compile_sidecar(mesh(http_routes=[http_route("filters", FILTERED)]), FRONTEND)
    validate(config)
    routes = {r["name"]: r for r in listener(config, "outbound/default/catalog")["routes"]}
    redirect = routes["default/filters/rule0/match0"]
    assert redirect["match"] == {"path_prefix": "/old", "query": {"v": "2"}}
    assert redirect["redirect"] == {"scheme": "https", "host": "shop.example", "status": 301, "path_prefix": "/new"}
    assert "backends" not in redirect
    api = routes["default/filters/rule1/match0"]
    assert api["match"] == {"path_prefix": "/api", "method": "POST"}
    assert api["rewrite"] == {"host": "catalog.internal", "path_prefix": "/v2"}
    assert api["request_headers"] == {"set": {"x-env": "prod"}, "add": {"x-tag": "a"}, "remove": ["x-debug"]}
    assert api["response_headers"] == {"set": {"cache-control": "no-store"}}


@pytest.mark.parametrize(
    ("filters", "error"),
    [
        ([{"type": "RequestRedirect", "requestRedirect": {"statusCode": 301}}], "else it loops"),
        (
            [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "Host", "value": "x"}]}}],
            "host cannot be modified",
        ),
        (
            [
                {
                    "type": "RequestHeaderModifier",
                    "requestHeaderModifier": {"add": [{"name": "x-a", "value": "caf\u00e9"}]},
                }
            ],
            "should match pattern",
        ),
        ([{"type": "URLRewrite", "urlRewrite": {"hostname": "a.example:8080"}}], "should match pattern"),
        ([{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch"}}}], "needs replacePrefixMatch"),
        ([{"type": "URLRewrite"}], "takes exactly its urlRewrite field"),
    ],
)
def test_the_api_refuses_filters_the_data_plane_would(filters: list[dict[str, Any]], error: str) -> None:
    spec = {"parentRefs": [{"name": "catalog"}], "rules": [{"filters": filters, "backendRefs": [{"name": "catalog"}]}]}
    if filters[0]["type"] == "RequestRedirect":
        del spec["rules"][0]["backendRefs"]
    with pytest.raises(ValueError, match=error):
        HTTPRouteSpec.model_validate(spec)


def test_mtls_mode_trust_domain_and_bundle_reach_the_sidecar() -> None:
    m = mesh(mtls={"default/frontend": "PERMISSIVE"}, trust_domain="example.org", trust_bundle=("ROOT-A\n", "ROOT-B\n"))
    config = compile_sidecar(m, FRONTEND)
    assert listener(config, "inbound")["tls"] == {"mode": "permissive"}
    assert clusters(config)["out/default/db"]["tls"] == {"peer_ids": ["spiffe://example.org/ns/default/sa/db"]}
    assert "protocol" not in clusters(config)["out/default/db"]  # TCP: bytes, mTLS all the same
    assert config["identity"] == {"roots": "ROOT-A\nROOT-B\n"}


# === the ingress gateway ===

EDGE = SidecarSpec("default", "edge", "127.0.0.1", 0, 0, admin_port=15000, gateway=True)


@functools.cache
def _cert_dir() -> Path:
    """Certificates for the refs the gateway tests name, as `meshctl gateway --cert-dir` holds them."""
    return certificate_dir(a="a.example", b="b.example", any="edge.example", wild="x.example.com")


def validate_gateway(config: dict[str, Any]) -> None:
    """The real data plane accepts `config` once the gateway found its certificate files."""
    validate(config, _cert_dir())


def gateway_route(
    name: str, rules: list[dict[str, Any]], *, section: str | None = None, age: int = 0, **spec: Any
) -> RouteView:
    parent: dict[str, Any] = {"kind": "Gateway", "name": "edge"} | ({"sectionName": section} if section else {})
    return http_route(name, {"parentRefs": [parent], "rules": rules, **spec}, age=age)


def to(service: str, path: str = "/") -> dict[str, Any]:
    return {"matches": [{"path": {"type": "PathPrefix", "value": path}}], "backendRefs": [{"name": service}]}


EDGE_GATEWAY = GatewaySpec.model_validate(
    {
        "listeners": [
            https_listener("a", "a.example", port=8443, cert="a"),
            https_listener("b", "b.example", port=8443, cert="b"),
            https_listener("any", None, port=8443, cert="any"),
            {"name": "plain", "port": 8080, "protocol": "HTTP"},
        ]
    }
)


def hosts(config: dict[str, Any], name: str) -> list[tuple[str | None, str]]:
    return [(r["match"].get("host"), r["name"]) for r in listener(config, name)["routes"]]


def test_a_gateway_gets_one_listener_per_port_with_certificates_by_sni_and_no_inbound() -> None:
    m = mesh(gateways={"default/edge": EDGE_GATEWAY})
    config = compile_sidecar(m, EDGE)
    validate_gateway(config)
    assert [x["name"] for x in config["listeners"]] == ["gateway/8080", "gateway/8443"]
    assert "inbound" not in clusters(config)
    secure = listener(config, "gateway/8443")
    assert secure["address"] == "127.0.0.1:8443" and secure["protocol"] == "http"
    # Relative files, found in the gateway's --cert-dir; the catch-all's first (no or unknown SNI).
    assert secure["tls"] == {
        "mode": "simple",
        "certificates": [
            {"cert_chain_file": "any.pem", "private_key_file": "any.key"},
            {"server_names": ["a.example"], "cert_chain_file": "a.pem", "private_key_file": "a.key"},
            {"server_names": ["b.example"], "cert_chain_file": "b.pem", "private_key_file": "b.key"},
        ],
    }
    assert "tls" not in listener(config, "gateway/8080")
    assert secure["routes"] == [] and listener(config, "gateway/8080")["routes"] == []  # nothing attached: 404s
    assert config["admin"] == {"address": "127.0.0.1:15000"}
    # A gateway on an IPv6 address, and one whose Gateway does not exist (yet): no listeners at all.
    v6 = compile_sidecar(m, SidecarSpec("default", "edge", "::", 0, 0, gateway=True))
    assert listener(v6, "gateway/8443")["address"] == "[::]:8443"
    lonely = compile_sidecar(mesh(), EDGE)
    validate(lonely)
    assert lonely["listeners"] == []


def test_gateway_routes_by_listener_hostname_section_name_and_route_hostnames() -> None:
    routes = [
        gateway_route("shop", [to("catalog")], section="a"),  # listener a only: its hostname
        gateway_route("pay", [to("pricing")], hostnames=["b.example", "c.example"]),  # every listener
        gateway_route("plain", [to("frontend")], section="plain"),
    ]
    m = mesh(gateways={"default/edge": EDGE_GATEWAY}, http_routes=routes)
    config = compile_sidecar(m, EDGE)
    validate_gateway(config)
    # On 8443: listener a takes shop for a.example (pay's hostnames miss a.example), listener b takes
    # pay for b.example, the catch-all pay for both its names; exact hosts first, then by name.
    assert hosts(config, "gateway/8443") == [
        ("a.example", "default/shop/rule0/match0"),
        ("b.example", "default/pay/rule0/match0"),
        ("c.example", "default/pay/rule0/match0"),
    ]
    assert hosts(config, "gateway/8080") == [
        ("b.example", "default/pay/rule0/match0"),
        ("c.example", "default/pay/rule0/match0"),
        (None, "default/plain/rule0/match0"),  # no hostname anywhere: any host, last
    ]
    shop = listener(config, "gateway/8443")["routes"][0]
    # Backends are mesh services: mTLS to their sidecars, which must prove to be them.
    assert shop["backends"] == [{"cluster": "out/default/catalog", "weight": 1}]
    assert clusters(config)["out/default/catalog"]["tls"] == {
        "peer_ids": ["spiffe://cluster.local/ns/default/sa/catalog"]
    }
    # The edge tells the app how the client came, whatever the client claimed.
    assert shop["request_headers"] == {"set": {"x-forwarded-proto": "https"}}
    assert listener(config, "gateway/8080")["routes"][0]["request_headers"] == {"set": {"x-forwarded-proto": "http"}}
    # Gateway parents are not services: the frontend's sidecar routes to catalog as if no route existed.
    front = listener(compile_sidecar(m, FRONTEND), "outbound/default/catalog")
    assert front["routes"] == [{"name": "default/catalog/default", "backends": [{"cluster": "out/default/catalog"}]}]


def test_hostnames_of_a_route_on_a_service_are_ignored() -> None:
    plain = compile_sidecar(mesh(http_routes=[http_route("canary", CANARY)]), FRONTEND)
    named = compile_sidecar(mesh(http_routes=[http_route("canary", {**CANARY, "hostnames": ["x.example"]})]), FRONTEND)
    assert named == plain


@pytest.mark.parametrize(
    ("pattern", "host", "covered"),
    [
        ("a.example.com", "a.example.com", True),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),  # any depth, as Gateway API hostnames match
        ("*.example.com", "*.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "aexample.com", False),
        ("a.example.com", "*.example.com", False),
        ("*.com", "*.example.com", True),
    ],
)
def test_wildcard_hostnames_cover_names_below_them(pattern: str, host: str, covered: bool) -> None:
    assert covers(pattern, host) is covered


def test_wildcard_listener_intersection_and_host_precedence() -> None:
    # The narrower name of each pair that overlaps; none when they do not.
    assert intersect(
        "*.example.com", ["a.example.com", "*.example.com", "*.com", "x.other.org", "b.a.example.com"]
    ) == [
        "a.example.com",
        "*.example.com",
        "b.a.example.com",
    ]
    assert intersect("a.example.com", ["*.example.com"]) == ["a.example.com"]
    assert intersect("a.example.com", ["b.example.com"]) == []
    assert intersect(None, []) == [None] and intersect("a.example.com", []) == ["a.example.com"]

    wild = GatewaySpec.model_validate({"listeners": [https_listener("wild", "*.example.com", port=443, cert="wild")]})
    routes = [
        gateway_route("broad", [to("catalog"), to("catalog", "/api")], age=0),
        gateway_route("deep", [to("pricing")], hostnames=["*.shop.example.com"], age=1),
        gateway_route("exact", [to("frontend")], hostnames=["www.example.com", "other.org"], age=2),
    ]
    config = compile_sidecar(mesh(gateways={"default/edge": wild}, http_routes=routes), EDGE)
    validate_gateway(config)
    # The most specific hostname first (www, then *.shop, then the listener's *.example.com); within
    # one host the usual rule precedence (/api before /).
    assert hosts(config, "gateway/443") == [
        ("www.example.com", "default/exact/rule0/match0"),
        ("*.shop.example.com", "default/deep/rule0/match0"),
        ("*.example.com", "default/broad/rule1/match0"),
        ("*.example.com", "default/broad/rule0/match0"),
    ]
    assert listener(config, "gateway/443")["tls"]["certificates"] == [
        {"server_names": ["*.example.com"], "cert_chain_file": "wild.pem", "private_key_file": "wild.key"}
    ]


def test_a_route_on_two_listeners_of_one_port_is_tried_once_per_host() -> None:
    spec = GatewaySpec.model_validate(
        {
            "listeners": [
                https_listener("one", "a.example", port=443, cert="a"),
                https_listener("two", "*.example", port=443, cert="b"),
            ]
        }
    )
    route = gateway_route("r", [to("catalog")], hostnames=["a.example"])
    config = compile_sidecar(mesh(gateways={"default/edge": spec}, http_routes=[route]), EDGE)
    validate_gateway(config)
    assert hosts(config, "gateway/443") == [("a.example", "default/r/rule0/match0")]
