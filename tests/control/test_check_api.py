"""GET /api/v1/check through a real control plane (uvicorn, SQLite file): one
test per finding, each in a namespace of its own on a shared control plane
(findings are picked out by the resources they name), and fresh control planes
for a clean mesh and for states only a database edit makes."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from helpers import wait_until
from meshctl.control.analysis.codes import SERVER_CODES
from meshproc import ControlPlane, module_control_plane

shared = module_control_plane()


def service(name: str, ns: str, protocol: str = "http", mtls: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"port": 80, "protocol": protocol}]}
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec | ({"mtls": mtls} if mtls else {}),
    }


def doc(kind: str, name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}


def route(name: str, ns: str, parent: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return doc("HTTPRoute", name, ns, {"parentRefs": [{"name": parent}], "rules": list(rules)})


def rule(backend: str, *matches: dict[str, Any], **backend_fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"backendRefs": [{"name": backend, **backend_fields}]}
    return out | ({"matches": list(matches)} if matches else {})


def prefix(value: str, **more: Any) -> dict[str, Any]:
    return {"path": {"type": "PathPrefix", "value": value}, **more}


def check(cp: ControlPlane, role: str = "reader", grace: float = 0) -> dict[str, Any]:
    r = cp.call("GET", "/api/v1/check", role=role, params={"grace": grace})
    assert r.status_code == 200, r.text
    return dict(r.json())


def about(
    report: dict[str, Any], kind: str, name: str, codes: tuple[str, ...] = ()
) -> list[tuple[str, str, str | None]]:
    """(code, severity, field) of the findings about one resource (of these codes, when given)."""
    return [
        (f["code"], f["severity"], f["resource"]["field"])
        for f in report["findings"]
        if f["resource"]["kind"] == kind and f["resource"]["name"] == name and (not codes or f["code"] in codes)
    ]


def message(report: dict[str, Any], code: str, name: str) -> str:
    return next(f["message"] for f in report["findings"] if f["code"] == code and f["resource"]["name"] == name)


def with_token(cp: ControlPlane, token: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{cp.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10, **kw)


def register(cp: ControlPlane, ns: str, svc: str, port: int, role: str = "admin", **extra: Any) -> dict[str, Any]:
    body = {"namespace": ns, "service": svc, "address": "127.0.0.1", "inbound_port": port, "app_port": 9000}
    r = cp.call("PUT", "/api/v1/sidecars", role=role, json=body | extra)
    assert r.status_code == 200, r.text
    return dict(r.json())


def ack(cp: ControlPlane, sidecar: dict[str, Any], error: str | None = None) -> None:
    generation = cp.ok("GET", "/api/v1/mesh")["generation"]
    body = {"version": generation} | ({"error": error} if error else {})
    assert cp.call("POST", f"/api/v1/sidecars/{sidecar['id']}/status", json=body).status_code == 204
    # ACKs are written in batches after the answer: wait until this one is.
    field = "nacked_version" if error else "acked_version"

    def recorded() -> bool:
        return any(s["id"] == sidecar["id"] and s[field] == generation for s in cp.ok("GET", "/api/v1/sidecars"))

    wait_until(recorded, timeout=30, what=f"sidecar {sidecar['id']}'s report of {generation} to be recorded")


def when(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


# === a clean mesh, and who may ask ===


def test_a_clean_mesh_passes_every_check(cp: ControlPlane) -> None:
    cp.apply(service("web", "default"), service("api", "default"))
    cp.apply(route("api", "default", "api", rule("api", prefix("/v1")), rule("api")))
    api = register(cp, "default", "api", 16101)
    ack(cp, api)
    report = check(cp)
    assert report["findings"] == [], report["findings"]
    assert [c["code"] for c in report["checks"]] == list(SERVER_CODES)
    assert (report["errors"], report["warnings"]) == (0, 0)
    assert report["generation"] == cp.ok("GET", "/api/v1/mesh")["generation"]
    # Any reader may ask; a join token may not.
    assert check(cp, role="admin")["findings"] == []
    join = cp.join_token("web")
    refused = with_token(cp, join, "GET", "/api/v1/check")
    assert cp.call("GET", "/api/v1/check", role="reader").status_code == 200
    assert refused.status_code in (401, 403), refused.text


# === routes ===


def test_a_rule_whose_matches_earlier_rules_take_is_shadowed(shared: ControlPlane) -> None:
    ns = "shadow"
    shared.apply(*(service(n, ns) for n in ("web", "a", "b")))
    # Older route: /api to a; GET /x to a.
    shared.apply(route("first", ns, "web", rule("a", prefix("/api")), rule("a", prefix("/x", method="GET"))))
    later = route(
        "later",
        ns,
        "web",
        rule("b", prefix("/api")),  # 0: the same match, in a newer route: taken by first
        rule("b", prefix("/api", method="GET"), prefix("/x", method="GET")),  # 1: ranks before first's /api: live
        rule("b", prefix("/api"), {"path": {"type": "Exact", "value": "/api/v1/z"}}),  # 2: /api taken, exact one live
        rule("b", prefix("/x", method="GET", headers=[{"name": "x-a", "value": "1"}])),  # 3: more headers: first
        rule("b", prefix("/x", method="GET"), prefix("/api")),  # 4: both taken, by two rules of first
    )
    shared.apply(later)
    report = check(shared)
    found = about(report, "HTTPRoute", f"{ns}/later", ("MC0301",))
    assert found == [
        ("MC0301", "warning", "spec.rules[0]"),
        ("MC0301", "warning", "spec.rules[4]"),
    ], report["findings"]
    assert about(report, "HTTPRoute", f"{ns}/first", ("MC0301",)) == []
    assert message(report, "MC0301", f"{ns}/later").startswith(
        f"rule 0 is never used on service {ns}/web: every request it matches is taken first by {ns}/first rule 0"
    )
    four = [f for f in report["findings"] if f["code"] == "MC0301" and f["resource"]["field"] == "spec.rules[4]"]
    assert four[0]["message"].endswith(f"taken first by {ns}/first rule 0, {ns}/first rule 1"), four
    assert four[0]["hint"].startswith("make the rule's matches more specific")


def test_rules_on_a_gateway_port_shadow_by_host(shared: ControlPlane) -> None:
    ns = "edge"
    shared.apply(service("ingress", ns), service("a", ns))
    listeners = [{"name": "web", "port": 8080, "protocol": "HTTP"}]
    shared.apply(doc("Gateway", "ingress", ns, {"listeners": listeners}))
    parent = [{"name": "ingress", "kind": "Gateway"}]
    shared.apply(
        doc("HTTPRoute", "one", ns, {"parentRefs": parent, "hostnames": ["a.example.com"], "rules": [rule("a")]})
    )
    shared.apply(
        doc("HTTPRoute", "two", ns, {"parentRefs": parent, "hostnames": ["a.example.com"], "rules": [rule("a")]})
    )
    shared.apply(
        doc("HTTPRoute", "three", ns, {"parentRefs": parent, "hostnames": ["b.example.com"], "rules": [rule("a")]})
    )
    report = check(shared)
    shadowed = ("MC0301",)
    assert about(report, "HTTPRoute", f"{ns}/two", shadowed) == [("MC0301", "warning", "spec.rules[0]")]
    assert f"Gateway {ns}/ingress port 8080" in message(report, "MC0301", f"{ns}/two")
    assert (
        about(report, "HTTPRoute", f"{ns}/one", shadowed) == about(report, "HTTPRoute", f"{ns}/three", shadowed) == []
    )


def test_routes_a_service_does_not_use(shared: ControlPlane) -> None:
    ns = "unused"
    shared.apply(service("db", ns, "tcp"), service("web", ns), service("a", ns, "tcp"))
    tcp = {"parentRefs": [{"name": "db"}], "rules": [{"backendRefs": [{"name": "a"}]}]}
    shared.apply(doc("TCPRoute", "older", ns, tcp))
    shared.apply(doc("TCPRoute", "newer", ns, tcp))
    shared.apply(doc("TCPRoute", "on-http", ns, tcp | {"parentRefs": [{"name": "web"}]}))
    shared.apply(route("on-tcp", ns, "db", rule("web")))
    report = check(shared)
    assert about(report, "TCPRoute", f"{ns}/older") == [("MC0304", "warning", "spec.rules[0].backendRefs")]
    assert ("MC0302", "warning", None) in about(report, "TCPRoute", f"{ns}/newer")
    assert f"{ns}/older, the oldest TCPRoute" in message(report, "MC0302", f"{ns}/newer")
    assert ("MC0303", "warning", None) in about(report, "TCPRoute", f"{ns}/on-http")
    assert ("MC0303", "warning", None) in about(report, "HTTPRoute", f"{ns}/on-tcp")


def test_backends_without_live_endpoints(shared: ControlPlane) -> None:
    ns = "ends"
    shared.apply(*(service(n, ns) for n in ("web", "api", "none")))
    register(shared, ns, "api", 16201, labels={"version": "v1"})
    shared.apply(
        route(
            "web",
            ns,
            "web",
            rule("api", prefix("/v1"), subset={"version": "v1"}),  # matches the live endpoint
            rule("api", prefix("/v2"), subset={"version": "v2"}),  # matches none
            rule("none", prefix("/n")),  # no endpoint at all
            rule("none", prefix("/m"), subset={"version": "v2"}),  # no endpoint at all (said once per service)
            rule("none", prefix("/z"), weight=0),  # sends nothing
        )
    )
    report = check(shared)
    assert about(report, "HTTPRoute", f"{ns}/web") == [
        ("MC0304", "warning", "spec.rules[2].backendRefs"),
        ("MC0305", "warning", "spec.rules[1].backendRefs"),
    ], report["findings"]
    assert message(report, "MC0304", f"{ns}/web") == (
        f"rules 2, 3 send to service {ns}/none, which has no live endpoint (requests get 503)"
    )
    assert message(report, "MC0305", f"{ns}/web") == (
        f"rule 1 sends to service {ns}/api subset {{version=v2}}, which matches none of its live endpoints"
    )


# === resources ===


def test_permissive_services_are_a_warning(shared: ControlPlane) -> None:
    shared.apply(service("legacy", "perm", mtls="PERMISSIVE"), service("strict", "perm"))
    report = check(shared)
    assert about(report, "Service", "perm/legacy") == [("MC0404", "warning", "spec.mtls")]
    assert about(report, "Service", "perm/strict") == []


def test_references_to_what_does_not_exist(cp: ControlPlane) -> None:
    """Writes refuse dangling references; a database edited around the API still has them."""
    cp.apply(service("web", "default"), service("gone", "default"), service("ingress", "default"))
    cp.apply(doc("TrafficPolicy", "tp", "default", {"targetRef": {"name": "gone"}}))
    cp.apply(doc("AuthorizationPolicy", "authz", "default", {"targetRef": {"name": "gone"}, "action": "DENY"}))
    cp.apply(doc("Gateway", "ingress", "default", {"listeners": [{"name": "web", "port": 8080, "protocol": "HTTP"}]}))
    parent = [{"name": "ingress", "kind": "Gateway", "sectionName": "web"}]
    cp.apply(doc("HTTPRoute", "edge", "default", {"parentRefs": parent, "rules": [rule("web")]}))
    cp.sql("DELETE FROM service WHERE name = 'gone'")
    listeners = '{"listeners": [{"name": "other", "port": 8080, "protocol": "HTTP"}]}'
    cp.sql("UPDATE gateway SET spec = :spec WHERE name = 'ingress'", {"spec": listeners})
    report = check(cp)
    assert about(report, "TrafficPolicy", "default/tp") == [("MC0401", "error", "spec.targetRef")]
    assert about(report, "AuthorizationPolicy", "default/authz") == [("MC0401", "error", "spec.targetRef")]
    assert message(report, "MC0401", "default/tp") == "Service default/gone does not exist"
    assert about(report, "HTTPRoute", "default/edge", ("MC0401", "MC0402")) == [
        ("MC0402", "error", "spec.parentRefs[0].sectionName")
    ]
    assert report["errors"] == 3


def test_a_stored_spec_that_no_longer_validates(cp: ControlPlane) -> None:
    cp.apply(service("web", "default"), route("web", "default", "web", rule("web")))
    cp.sql("UPDATE httproute SET spec = :spec WHERE name = 'web'", {"spec": '{"parentRefs": [], "rules": []}'})
    report = check(cp)
    assert about(report, "HTTPRoute", "default/web") == [("MC0403", "error", "spec.parentRefs")]
    # The mesh analyses need the compiler's input: they are skipped, and say so by their absence.
    ran = {c["code"] for c in report["checks"]}
    assert "MC0301" not in ran and "MC0304" not in ran and "MC0401" in ran


# === sidecars ===


def test_sidecars_nacking_behind_and_in_sync(shared: ControlPlane) -> None:
    ns = "sync"
    shared.apply(service("app", ns))
    nacking, behind, fine = (register(shared, ns, "app", port) for port in (16301, 16302, 16303))
    ack(shared, nacking, error="listeners[0].address: invalid")
    ack(shared, fine)
    report = check(shared, grace=3)  # time for the ACK to be written (they go in batches)
    assert about(report, "Sidecar", str(nacking["id"])) == [("MC0101", "error", None)]
    assert "listeners[0].address: invalid" in message(report, "MC0101", str(nacking["id"]))
    assert about(report, "Sidecar", str(behind["id"])) == [("MC0102", "error", None)]
    assert about(report, "Sidecar", str(fine["id"])) == []


def test_a_behind_sidecar_that_catches_up_within_the_grace_is_fine(cp: ControlPlane) -> None:
    cp.apply(service("app", "default"))
    late = register(cp, "default", "app", 16401)
    answer: dict[str, Any] = {}
    started = time.monotonic()
    asking = threading.Thread(target=lambda: answer.update(check(cp, grace=9)))
    asking.start()
    ack(cp, late)  # while the check waits for it
    asking.join(60)
    assert about(answer, "Sidecar", str(late["id"])) == []
    assert time.monotonic() - started < 7  # answered once it caught up, not at the grace's end


def test_sidecar_versions_svids_and_revoked_tokens(shared: ControlPlane) -> None:
    ns = "ids"
    shared.apply(service("app", ns))
    other = register(shared, ns, "app", 16501, version="meshctl 0.0.1 / data plane 0.0.1")
    expired = register(shared, ns, "app", 16502, svid_expires_at=when(seconds=-5))
    soon = register(shared, ns, "app", 16503, svid_expires_at=when(minutes=10))
    later = register(shared, ns, "app", 16504, svid_expires_at=when(hours=20))
    token = shared.ok("POST", f"/api/v1/services/{ns}/app/join-tokens")
    body = {"namespace": ns, "service": "app", "address": "127.0.0.1", "inbound_port": 16505, "app_port": 9000}
    joined = with_token(shared, token["token"], "PUT", "/api/v1/sidecars", json=body)
    assert joined.status_code == 200, joined.text
    joined_id = str(joined.json()["id"])
    codes = ("MC0103", "MC0104", "MC0201", "MC0202")  # (whether they ACKed is another test's)
    assert about(check(shared), "Sidecar", joined_id, codes) == []
    assert shared.call("DELETE", f"/api/v1/services/{ns}/app/join-tokens/{token['id']}").status_code == 204
    report = check(shared)
    assert about(report, "Sidecar", str(other["id"]), codes) == [("MC0103", "warning", None)]
    assert "runs meshctl 0.0.1 / data plane 0.0.1" in message(report, "MC0103", str(other["id"]))
    assert about(report, "Sidecar", str(expired["id"]), codes) == [("MC0201", "error", None)]
    assert about(report, "Sidecar", str(soon["id"]), codes) == [("MC0202", "warning", None)]
    assert about(report, "Sidecar", str(later["id"]), codes) == []
    assert about(report, "Sidecar", joined_id, codes) == [("MC0104", "error", None)]


def test_a_sidecar_on_an_expired_join_token_is_info_not_an_error(shared: ControlPlane) -> None:
    """An expired join token keeps serving the sidecars that joined with it: at most info (MC0105)."""
    ns = "expiring"
    shared.apply(service("app", ns))
    token = shared.ok("POST", "/api/v1/tokens", json={"service": f"{ns}/app", "expires_in_seconds": 1})
    body = {"namespace": ns, "service": "app", "address": "127.0.0.1", "inbound_port": 16511, "app_port": 9000}
    joined = with_token(shared, token["token"], "PUT", "/api/v1/sidecars", json=body | {"ttl_seconds": 300})
    assert joined.status_code == 200, joined.text
    joined_id = str(joined.json()["id"])
    wait_until(
        lambda: next(s for s in shared.sidecars() if str(s["id"]) == joined_id)["token_expired"],
        timeout=30,
        what="the sidecar's join token to expire",
    )
    report = check(shared)
    assert about(report, "Sidecar", joined_id, ("MC0104", "MC0105")) == [("MC0105", "info", None)]
    assert "keeps working" in message(report, "MC0105", joined_id)
    assert shared.call("DELETE", f"/api/v1/tokens/{token['id']}").status_code == 204
    assert about(check(shared), "Sidecar", joined_id, ("MC0104", "MC0105")) == [("MC0104", "error", None)]
