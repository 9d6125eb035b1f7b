"""AuthorizationPolicy as the pure compiler emits it (the inbound listener's
`authorization` block) and as `explain` evaluates it with the data plane's
semantics: deny rules first, then allow iff an allow rule matches, else the
default."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from meshctl import _core, validate_config
from meshctl.control.compiler import Mesh, RouteView, SidecarSpec, authorization, compile_sidecar
from meshctl.control.explain import ExplainRequest, explain
from meshctl.control.kinds.authorizationpolicy import AuthorizationPolicySpec
from meshctl.control.kinds.httproute import HTTPRouteSpec
from test_compiler import T0

CATALOG = SidecarSpec("shop", "catalog", "127.0.0.1", 15006, 8080, upstreams=(("pricing", 7001),))


def policy(target: str, action: str, *rules: dict[str, Any]) -> AuthorizationPolicySpec:
    return AuthorizationPolicySpec.model_validate({"targetRef": {"name": target}, "action": action, "rules": rules})


def mesh(*policies: tuple[str, AuthorizationPolicySpec], default: str = "allow", **extra: Any) -> Mesh:
    m = Mesh(
        generation=3,
        services={"shop/catalog": "http", "shop/frontend": "http", "ops/admin": "http", "shop/db": "tcp"},
        mtls={"shop/catalog": "STRICT", "shop/db": "PERMISSIVE"},
        authz_default=default,
        trust_domain="example.org",
    )
    for key, spec in policies:
        target = f"shop/{spec.target_ref.name}"
        m.authz.setdefault(target, []).append((key, spec))
    for k, v in extra.items():
        setattr(m, k, v)
    return m


def inbound(m: Mesh, sidecar: SidecarSpec = CATALOG) -> dict[str, Any]:
    config = compile_sidecar(m, sidecar)
    return next(x for x in config["listeners"] if x["name"] == "inbound")


FRONTEND_ONLY = {
    "from": [
        {"source": {"principals": ["spiffe://example.org/ns/shop/sa/frontend"], "namespaces": ["shop"]}},
        {"source": {"services": ["admin*"]}},
    ],
    "to": [{"operation": {"paths": ["/api/*"], "methods": ["GET", "HEAD"]}}, {"operation": {"paths": ["/healthz"]}}],
}


# === the compiled block ===


def test_nothing_is_emitted_without_policies_when_the_default_is_allow() -> None:
    listener = inbound(mesh())
    assert "authorization" not in listener
    assert authorization(mesh(), "shop/catalog") is None


def test_mesh_default_deny_gives_every_inbound_a_deny_default() -> None:
    assert inbound(mesh(default="deny"))["authorization"] == {"default": "deny", "rules": []}


def test_a_rule_is_the_cross_product_of_its_from_and_to_entries() -> None:
    m = mesh(("shop/front", policy("catalog", "ALLOW", FRONTEND_ONLY, {})))
    assert inbound(m)["authorization"] == {
        "default": "allow",
        "rules": [
            {
                "name": "shop/front[0]",
                "action": "allow",
                "principals": ["spiffe://example.org/ns/shop/sa/frontend"],
                "namespaces": ["shop"],
                "paths": ["/api/*"],
                "methods": ["GET", "HEAD"],
            },
            {
                "name": "shop/front[0]",
                "action": "allow",
                "principals": ["spiffe://example.org/ns/shop/sa/frontend"],
                "namespaces": ["shop"],
                "paths": ["/healthz"],
            },
            {
                "name": "shop/front[0]",
                "action": "allow",
                "services": ["admin*"],
                "paths": ["/api/*"],
                "methods": ["GET", "HEAD"],
            },
            {"name": "shop/front[0]", "action": "allow", "services": ["admin*"], "paths": ["/healthz"]},
            # `{}`: no from, no to: every request.
            {"name": "shop/front[1]", "action": "allow"},
        ],
    }


def test_only_from_or_only_to_and_policy_order_by_name() -> None:
    deny = policy("catalog", "DENY", {"to": [{"operation": {"paths": ["/admin/*"]}}]})
    allow = policy("catalog", "ALLOW", {"from": [{"source": {"namespaces": ["shop", "ops"]}}]})
    # Given in reverse name order: the rules come out by policy name, then rule index.
    m = mesh(("shop/z-deny", deny), ("shop/a-allow", allow))
    assert inbound(m)["authorization"]["rules"] == [
        {"name": "shop/a-allow[0]", "action": "allow", "namespaces": ["shop", "ops"]},
        {"name": "shop/z-deny[0]", "action": "deny", "paths": ["/admin/*"]},
    ]


def test_an_allow_policy_without_rules_denies_everything_else() -> None:
    m = mesh(("shop/nobody", policy("catalog", "ALLOW")))
    assert inbound(m)["authorization"] == {"default": "deny", "rules": []}
    # A DENY policy without rules matches nothing: the mesh default stands.
    m = mesh(("shop/noop", policy("catalog", "DENY")))
    assert inbound(m)["authorization"] == {"default": "allow", "rules": []}


def test_policies_of_other_services_do_not_leak_and_the_outbound_part_is_unchanged() -> None:
    m = mesh(("shop/db-only", policy("db", "DENY", {})))
    assert "authorization" not in inbound(m)
    plain = compile_sidecar(mesh(), CATALOG)
    with_policy = compile_sidecar(mesh(("shop/p", policy("catalog", "DENY", {}))), CATALOG)
    assert with_policy["listeners"][1:] == plain["listeners"][1:]
    assert with_policy["clusters"] == plain["clusters"]


def test_tcp_services_get_the_rules_as_written() -> None:
    db = SidecarSpec("shop", "db", "127.0.0.1", 15007, 5432)
    allow = policy("db", "ALLOW", {"to": [{"operation": {"methods": ["GET"]}}]})
    listener = inbound(mesh(("shop/a", allow)), db)
    assert listener["protocol"] == "tcp"
    # The data plane knows a connection has no method: this ALLOW rule can never match one.
    assert listener["authorization"] == {
        "default": "allow",
        "rules": [{"name": "shop/a[0]", "action": "allow", "methods": ["GET"]}],
    }


def test_compiling_authorization_is_deterministic_and_leaves_its_input_alone() -> None:
    spec = policy("catalog", "ALLOW", FRONTEND_ONLY)
    m = mesh(("shop/front", spec))
    assert compile_sidecar(m, CATALOG) == compile_sidecar(m, CATALOG)
    assert spec == policy("catalog", "ALLOW", FRONTEND_ONLY)


def _with_authorization(block: dict[str, Any], protocol: str = "http") -> dict[str, Any]:
    """A minimal data-plane config whose one listener carries `block`."""
    listener: dict[str, Any] = {"name": "in", "address": "127.0.0.1:0", "protocol": protocol, "authorization": block}
    if protocol == "http":
        listener["routes"] = [{"backends": [{"cluster": "c"}]}]
    else:
        listener["cluster"] = "c"
    return {"listeners": [listener], "clusters": [{"name": "c", "endpoints": [{"address": "127.0.0.1:1"}]}]}


def test_the_data_plane_accepts_the_compiled_authorization() -> None:
    deny = policy("catalog", "DENY", {"to": [{"operation": {"paths": ["/admin/*"], "methods": ["POST"]}}]})
    db_deny = policy(
        "db", "DENY", {"from": [{"source": {"namespaces": ["ops"]}}], "to": [{"operation": {"paths": ["/x"]}}]}
    )
    meshes = [
        mesh(
            ("shop/front", policy("catalog", "ALLOW", FRONTEND_ONLY, {})), ("shop/no-admin", deny), ("shop/db", db_deny)
        ),
        mesh(("shop/nobody", policy("catalog", "ALLOW"))),
        mesh(default="deny"),
    ]
    for m in meshes:
        for service, protocol in (("shop/catalog", "http"), ("shop/db", "tcp")):
            block = authorization(m, service)
            if block is not None:
                validate_config(_with_authorization(block, protocol))


# === explain: the data plane's decision ===


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("/admin/*", "/admin/x/y", True),
        ("/admin/*", "/admin/", True),
        ("/admin/*", "/admin", False),
        ("*", "", True),
        ("/healthz", "/healthz", True),
        ("/healthz", "/healthz/", False),
        ("spiffe://*/ns/ops/sa/*", "spiffe://example.org/ns/ops/sa/admin", True),
        ("spiffe://*/ns/ops/sa/*", "spiffe://example.org/ns/shop/sa/admin", False),
        ("*end", "the end", True),
        ("a*b*c", "abc", True),
        ("a*b*c", "acb", False),
        ("ab*ba", "aba", False),
        ("*.*", "a.b", True),
    ],
)
def test_glob(pattern: str, value: str, matches: bool) -> None:
    """The data plane's `*` globs, through the authorization explain runs: a rule on paths."""
    block = {"default": "deny", "rules": [{"name": "r", "action": "allow", "paths": [pattern]}]}
    decided = _core.authorize(block, peer=None, method="GET", path=value)
    assert (decided["decided_by"] == "r") is matches, decided


ADMIN_DENY = policy(
    "catalog",
    "DENY",
    {
        "from": [{"source": {"namespaces": ["shop"]}}],
        "to": [{"operation": {"paths": ["/admin/*"]}}, {"operation": {"methods": ["DELETE"]}}],
    },
)
FRONT_ALLOW = policy(
    "catalog",
    "ALLOW",
    {
        "from": [{"source": {"principals": ["spiffe://example.org/ns/shop/sa/frontend"]}}],
        "to": [{"operation": {"methods": ["GET", "DELETE"]}}],
    },
    {"from": [{"source": {"principals": ["spiffe://*/ns/ops/sa/*"]}}]},
)


@pytest.mark.parametrize(
    ("source", "method", "path", "decision", "decided_by"),
    [
        # DENY before ALLOW: frontend may GET, but not under /admin and never DELETE.
        ("shop/frontend", "GET", "/items", "allow", "shop/allow[0]"),
        ("shop/frontend", "GET", "/admin/users", "deny", "shop/deny[0]"),
        ("shop/frontend", "DELETE", "/items", "deny", "shop/deny[0]"),
        ("shop/frontend", "POST", "/items", "deny", "no ALLOW rule matched"),
        # Another shop identity is denied by the ALLOW policy not naming it.
        ("shop/cart", "GET", "/items", "deny", "no ALLOW rule matched"),
        # ops is outside the DENY's namespaces: its admin may do anything, /admin included.
        ("ops/admin", "DELETE", "/admin/users", "allow", "shop/allow[1]"),
        ("ops/admin", "post", "/items?x=1", "allow", "shop/allow[1]"),
    ],
)
def test_explain_decisions(source: str, method: str, path: str, decision: str, decided_by: str) -> None:
    m = mesh(("shop/deny", ADMIN_DENY), ("shop/allow", FRONT_ALLOW))
    out = explain(m, ExplainRequest(source=source, destination="shop/catalog", method=method, path=path))
    assert out.authorization is not None
    assert (out.authorization.decision, out.authorization.decided_by) == (decision, decided_by)
    assert out.outcome == ("forward" if decision == "allow" else "denied")
    assert out.authorization.principal == f"spiffe://example.org/ns/{source.replace('/', '/sa/')}"
    assert out.authorization.path == path.split("?")[0] and out.authorization.method == method.upper()
    assert out.backends[0].authorization == out.authorization
    if decision == "deny":
        assert out.summary.startswith(f"denied by the authorization of shop/catalog: {decided_by}")
    # Deny rules are tried first, whatever the policy names.
    actions = [r.action for r in out.authorization.rules]
    assert actions == sorted(actions, key=lambda a: a != "deny")


def test_explain_says_why_each_authorization_rule_failed() -> None:
    m = mesh(("shop/deny", ADMIN_DENY), ("shop/allow", FRONT_ALLOW))
    out = explain(m, ExplainRequest(source="shop/cart", destination="shop/catalog", method="POST", path="/items"))
    assert out.authorization is not None
    assert [(r.rule, r.matched, r.reason) for r in out.authorization.rules] == [
        ("shop/deny[0]", False, "path '/items' matches none of /admin/*"),
        ("shop/deny[0]", False, "method POST is none of DELETE"),
        ("shop/allow[0]", False, "principal 'spiffe://example.org/ns/shop/sa/cart' matches none of "
         "spiffe://example.org/ns/shop/sa/frontend"),
        ("shop/allow[1]", False, "principal 'spiffe://example.org/ns/shop/sa/cart' matches none of "
         "spiffe://*/ns/ops/sa/*"),
    ]  # fmt: skip
    assert out.authorization.policies == ["shop/allow", "shop/deny"]
    first = explain(m, ExplainRequest(source="shop/frontend", host="catalog.shop", path="/admin/x"))
    assert first.authorization is not None
    assert [r.reason for r in first.authorization.rules][1:] == ["not tried: shop/deny[0] decided"] * 3


@pytest.mark.parametrize(
    ("policies", "default", "decision", "decided_by"),
    [
        ((), "allow", "allow", "default allow"),
        ((), "deny", "deny", "default deny"),
        ((("shop/nobody", policy("catalog", "ALLOW")),), "allow", "deny", "default deny"),
        ((("shop/noop", policy("catalog", "DENY")),), "allow", "allow", "default allow"),
        ((("shop/all", policy("catalog", "ALLOW", {})),), "deny", "allow", "shop/all[0]"),
        ((("shop/all", policy("catalog", "DENY", {})), ("shop/b", policy("catalog", "ALLOW", {}))), "allow", "deny",
         "shop/all[0]"),
    ],
)  # fmt: skip
def test_explain_defaults(
    policies: tuple[tuple[str, AuthorizationPolicySpec], ...], default: str, decision: str, decided_by: str
) -> None:
    out = explain(mesh(*policies, default=default), ExplainRequest(source="shop/frontend", destination="shop/catalog"))
    assert out.authorization is not None
    assert (out.authorization.decision, out.authorization.decided_by) == (decision, decided_by)


def test_explain_checks_the_path_the_receiver_sees_and_each_receiving_service() -> None:
    rewrite = RouteView(
        "shop",
        "api",
        T0,
        HTTPRouteSpec.model_validate(
            {
                "parentRefs": [{"name": "catalog"}],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                        "filters": [
                            {
                                "type": "URLRewrite",
                                "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/admin"}},
                            }
                        ],
                        "backendRefs": [{"name": "catalog", "weight": 3}, {"name": "frontend", "weight": 1}],
                    }
                ],
            }
        ),
    )
    no_admin = policy("catalog", "DENY", {"to": [{"operation": {"paths": ["/admin/*"]}}]})
    m = mesh(("shop/no-admin", no_admin), http_routes=[rewrite])
    out = explain(m, ExplainRequest(source="shop/frontend", destination="shop/catalog", path="/v1/users?page=2"))
    # catalog sees /admin/users and denies it; frontend (a quarter of the requests) has no policy.
    assert out.outcome == "forward"
    assert (
        out.summary == "shop/api/rule0/match0 matched; 75% of requests are denied by the authorization of shop/catalog"
    )
    by_service = {b.service: b.authorization for b in out.backends}
    assert by_service["shop/catalog"] is not None and by_service["shop/catalog"].path == "/admin/users"
    assert by_service["shop/catalog"].decision == "deny"
    assert by_service["shop/frontend"] is not None and by_service["shop/frontend"].decided_by == "default allow"
    assert out.authorization == by_service["shop/frontend"]

    m.authz["shop/frontend"] = [("shop/none", policy("frontend", "ALLOW"))]
    out = explain(m, ExplainRequest(source="shop/frontend", destination="shop/catalog", path="/v1/users"))
    assert out.outcome == "denied" and out.authorization == out.backends[0].authorization


def test_explain_tcp_uses_the_callers_identity_only() -> None:
    deny_ops = policy(
        "db", "DENY", {"from": [{"source": {"namespaces": ["ops"]}}], "to": [{"operation": {"paths": ["/x"]}}]}
    )
    allow_get = policy(
        "db",
        "ALLOW",
        {"from": [{"source": {"namespaces": ["shop"]}}], "to": [{"operation": {"methods": ["GET"]}}]},
        {"from": [{"source": {"services": ["front*"]}}]},
    )
    m = mesh(("shop/no-ops", deny_ops), ("shop/some", allow_get))
    # The path-scoped DENY applies to the whole connection; the ALLOW rule naming a method cannot match.
    out = explain(m, ExplainRequest(source="ops/frontend", destination="shop/db"))
    assert out.outcome == "denied" and out.authorization is not None
    assert (out.authorization.path, out.authorization.method, out.authorization.mtls) == (None, None, "PERMISSIVE")
    assert out.authorization.decided_by == "shop/no-ops[0]"
    cart = explain(m, ExplainRequest(source="shop/cart", destination="shop/db")).authorization
    assert cart is not None and cart.decided_by == "no ALLOW rule matched"
    assert [r.reason for r in cart.rules] == [
        "namespace 'shop' matches none of ops",
        "a TCP connection has no path or method to match",
        "service 'cart' matches none of front*",
    ]
    assert explain(m, ExplainRequest(source="shop/frontend", destination="shop/db")).outcome == "forward"


# === validation ===


@pytest.mark.parametrize(
    ("spec", "loc", "message"),
    [
        ({"action": "AUDIT"}, ("action",), "'ALLOW' or 'DENY'"),
        ({"rules": [{"from": [{"source": {}}]}]}, ("rules", 0, "from", 0, "source"), "a source needs"),
        ({"rules": [{"to": [{"operation": {}}]}]}, ("rules", 0, "to", 0, "operation"), "an operation needs"),
        ({"rules": [{"to": [{"operation": {"methods": ["get"]}}]}]}, ("rules", 0, "to", 0, "operation", "methods", 0),
         "write 'GET'"),
        ({"rules": [{"to": [{"operation": {"methods": ["*"]}}]}]}, ("rules", 0, "to", 0, "operation", "methods", 0),
         "leave methods out"),
        ({"rules": [{"to": [{"operation": {"methods": ["GE T"]}}]}]}, ("rules", 0, "to", 0, "operation", "methods", 0),
         "should match pattern"),
        ({"rules": [{"to": [{"operation": {"paths": ["admin"]}}]}]}, ("rules", 0, "to", 0, "operation", "paths", 0),
         "starts with '/' or '*'"),
        ({"rules": [{"to": [{"operation": {"paths": ["/a?b=1"]}}]}]}, ("rules", 0, "to", 0, "operation", "paths", 0),
         "without the query"),
        ({"rules": [{"to": [{"operation": {"paths": [""]}}]}]}, ("rules", 0, "to", 0, "operation", "paths", 0),
         "at least 1 character"),
        ({"rules": [{"to": [{"operation": {"paths": []}}]}]}, ("rules", 0, "to", 0, "operation", "paths"),
         "at least 1 item"),
        ({"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/a/sa/b"]}}]}]},
         ("rules", 0, "from", 0, "source", "principals", 0), "starts with 'spiffe://'"),
        ({"rules": [{"from": [{"source": {"namespaces": ["Shop"]}}]}]},
         ("rules", 0, "from", 0, "source", "namespaces", 0), "should match pattern"),
        ({"rules": [{"from": []}]}, ("rules", 0, "from"), "at least 1 item"),
        ({"rules": [{"when": []}]}, ("rules", 0, "when"), "Extra inputs"),
    ],
)  # fmt: skip
def test_validation_names_the_field(spec: dict[str, Any], loc: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValidationError) as e:
        AuthorizationPolicySpec.model_validate({"targetRef": {"name": "catalog"}, **spec})
    errors = {tuple(err["loc"]): err["msg"] for err in e.value.errors()}
    assert loc in errors, errors
    assert message in errors[loc]


def test_stored_shape_is_camel_case_with_from() -> None:
    spec = policy("catalog", "ALLOW", FRONTEND_ONLY)
    dumped = spec.model_dump(by_alias=True, exclude_none=True)
    assert dumped["targetRef"] == {"name": "catalog"}
    assert dumped["rules"][0]["from"][1] == {"source": {"services": ["admin*"]}}
    assert AuthorizationPolicySpec.model_validate(dumped) == spec
