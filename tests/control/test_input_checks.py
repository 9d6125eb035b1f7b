"""What the API refuses, and how it says so (issue 13, items 1, 4, 5 and 6),
through a real control plane: unknown fields anywhere in a document or a
request body (422 naming the field),
header matches by regular expression (compiled to the data plane's
header_regex), messages without pydantic's prefixes, a Gateway listener's
problems found past a bad protocol, and the request-size and document-count
limits (413)."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from meshctl.control import limits
from meshctl.control.compiler import Entry, route_match
from meshctl.control.kinds import REGISTRY
from meshctl.control.kinds.common import RouteView, now
from meshctl.control.kinds.httproute import HTTPRouteSpec
from meshproc import ControlPlane, module_control_plane

cp = module_control_plane()


def doc(kind: str, name: str, ns: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec, **extra}


def service(name: str, ns: str) -> dict[str, Any]:
    return doc("Service", name, ns, {"ports": [{"port": 80}]})


def route(ns: str, *headers: dict[str, Any], query: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    match: dict[str, Any] = {"headers": list(headers)} | ({"queryParams": query} if query else {})
    rules = [{"matches": [match], "backendRefs": [{"name": "catalog"}]}]
    return doc("HTTPRoute", "by-header", ns, {"parentRefs": [{"name": "catalog"}], "rules": rules})


def errors(r: httpx.Response) -> dict[tuple[Any, ...], str]:
    assert r.status_code == 422, r.text
    return {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}


def apply(cp: ControlPlane, *documents: dict[str, Any]) -> httpx.Response:
    return cp.call("POST", "/api/v1/apply", json={"documents": list(documents)})


# === unknown fields (item 1) ===


@pytest.mark.parametrize("kind", [e.name for e in REGISTRY])
def test_an_unknown_spec_field_is_a_422_naming_it_for_every_kind(cp: ControlPlane, kind: str) -> None:
    found = errors(apply(cp, doc(kind, "x", "unknown", {"prots": [{"port": 80}]})))
    assert found[("body", "documents", 0, "spec", "prots")] == "unknown field"


def test_unknown_metadata_and_top_level_fields_are_422s_and_nothing_is_written(cp: ControlPlane) -> None:
    before = cp.ok("GET", "/api/v1/revisions")
    bad = service("catalog", "extras") | {"status": {}}
    bad["metadata"]["uid"] = "1234"
    found = errors(apply(cp, bad))
    assert found == {
        ("body", "documents", 0, "metadata", "uid"): "unknown field",
        ("body", "documents", 0, "status"): "unknown field",
    }
    # apiVersion, as manifests written for Kubernetes tooling carry, is taken.
    assert apply(cp, service("catalog", "extras") | {"apiVersion": "meshctl/v1"}).status_code == 200
    assert len(cp.ok("GET", "/api/v1/revisions")) == len(before) + 1

    # The REST bodies of every kind too, and the nested models of a Service's.
    r = cp.call("POST", "/api/v1/services", json={"name": "web", "namespace": "extras", "ports": [{"port": 1, "x": 1}]})
    assert errors(r) == {("body", "ports", 0, "x"): "unknown field"}
    r = cp.call("PUT", "/api/v1/services/extras/catalog", json={"ports": [], "resource_version": 1, "label": {}})
    assert errors(r) == {("body", "label"): "unknown field"}
    policy = {"name": "p", "namespace": "extras", "spec": {"targetRef": {"name": "catalog"}}, "owner": "me"}
    assert errors(cp.call("POST", "/api/v1/trafficpolicies", json=policy)) == {("body", "owner"): "unknown field"}
    update = {"spec": {"targetRef": {"name": "catalog"}}, "resource_version": 1, "force": True}
    r = cp.call("PUT", "/api/v1/trafficpolicies/extras/p", json=update)
    assert r.status_code in (404, 422) and (r.status_code == 404 or ("body", "force") in errors(r))


# === header matches by regular expression (item 4) ===


def test_a_regular_expression_header_match_is_taken_and_checked(cp: ControlPlane) -> None:
    assert apply(cp, service("catalog", "regex")).status_code == 200
    regex = {"type": "RegularExpression", "name": "x-user", "value": "(alice|bob)-[0-9]+"}
    exact = {"name": "x-canary", "value": "true"}
    r = apply(cp, route("regex", regex, exact))
    assert r.status_code == 200, r.text
    stored = cp.ok("GET", "/api/v1/httproutes/regex/by-header")["spec"]["rules"][0]["matches"][0]["headers"]
    assert stored == [regex, {**exact, "type": None}]

    # The pattern is checked by the data plane's engine (which has no look-around) at apply time.
    bad = errors(apply(cp, route("regex", {**regex, "value": "(?!admin).*"})))
    at = ("body", "documents", 0, "spec", "rules", 0, "matches", 0, "headers", 0, "value")
    assert list(bad) == [at] and bad[at].startswith("invalid regular expression: ")
    bad = errors(apply(cp, route("regex", {**regex, "type": "Prefix"})))
    assert bad[(*at[:-1], "type")] == "Input should be 'Exact' or 'RegularExpression'"
    # Query parameters have no regular expressions in the data plane: said so.
    bad = errors(apply(cp, route("regex", exact, query=[{"type": "RegularExpression", "name": "q", "value": "."}])))
    at = ("body", "documents", 0, "spec", "rules", 0, "matches", 0, "queryParams", 0, "type")
    assert bad == {at: "RegularExpression query parameter matches are not supported: use Exact"}


def test_explain_decides_a_header_regular_expression_as_the_data_plane_does(cp: ControlPlane) -> None:
    assert apply(cp, service("catalog", "explained"), service("web", "explained")).status_code == 200
    regex = {"type": "RegularExpression", "name": "x-user", "value": "(alice|bob)-[0-9]+"}
    assert apply(cp, route("explained", regex)).status_code == 200

    def explain(user: str) -> dict[str, Any]:
        body = {"source": "explained/web", "destination": "explained/catalog", "headers": {"x-user": user}}
        return dict(cp.ok("POST", "/api/v1/explain", json=body))

    hit = explain("bob-42")
    assert hit["route"] == "explained/by-header" and hit["rules"][0]["matched"]
    miss = explain("carol-1")  # anchored at both ends: "bob-42x" would miss too
    assert miss["outcome"] == "no_route"
    assert "does not match regex '(alice|bob)-[0-9]+'" in miss["rules"][0]["reason"]
    assert explain("bob-42x")["outcome"] == "no_route"


def test_header_matches_compile_to_headers_and_header_regex() -> None:
    spec = HTTPRouteSpec.model_validate(route("ns", {"type": "RegularExpression", "name": "X-User", "value": "a.+"},
                                              {"name": "X-Canary", "value": "true"},
                                              {"type": "Exact", "name": "X-Zone", "value": "b"})["spec"])  # fmt: skip
    view = RouteView("ns", "by-header", now(), spec)
    rule = spec.rules[0]
    match = route_match(Entry(view, 0, 0, rule, rule.matches[0]))
    assert match == {"headers": {"x-canary": "true", "x-zone": "b"}, "header_regex": {"x-user": "a.+"}}
    # Only exact matches: no header_regex, as before.
    spec = HTTPRouteSpec.model_validate(route("ns", {"name": "X-Canary", "value": "true"})["spec"])
    rule = spec.rules[0]
    assert route_match(Entry(view, 0, 0, rule, rule.matches[0])) == {"headers": {"x-canary": "true"}}


# === messages and a listener's problems (item 5) ===


def test_messages_carry_no_pydantic_prefix(cp: ControlPlane) -> None:
    assert apply(cp, service("edge", "prefix")).status_code == 200
    listener = {"name": "plain", "port": 8080, "protocol": "HTTP", "hostname": "10.0.0.1"}
    msg = "a hostname is a DNS name, not an IP address"
    # Through a REST body (FastAPI's validation) and through apply (the spec's), the same message.
    r = cp.call(
        "POST", "/api/v1/gateways", json={"name": "edge", "namespace": "prefix", "spec": {"listeners": [listener]}}
    )
    assert errors(r) == {("body", "spec", "listeners", 0, "hostname"): msg}
    found = errors(apply(cp, doc("Gateway", "edge", "prefix", {"listeners": [listener]})))
    assert found == {("body", "documents", 0, "spec", "listeners", 0, "hostname"): msg}


def test_a_listener_with_a_bad_protocol_still_gets_its_other_problems_reported(cp: ControlPlane) -> None:
    listeners = [
        {"name": "web", "port": 8080, "protocol": "HTTP2"},  # no such protocol
        {"name": "web", "port": 8443, "protocol": "HTTPS"},  # its name is taken, and it has no tls
        {"name": "api", "port": 8443, "protocol": "HTTP", "bogus": 1},  # another protocol on 8443
    ]
    found = errors(apply(cp, doc("Gateway", "edge", "protocols", {"listeners": listeners})))
    at = ("body", "documents", 0, "spec", "listeners")
    assert found == {
        (*at, 0, "protocol"): "Input should be 'HTTPS' or 'HTTP'",
        (*at, 2, "bogus"): "unknown field",
        (*at, 1, "name"): "listener name 'web' is used by listeners[0]",
        (*at, 1, "tls"): "an HTTPS listener needs tls.certificateRefs",
        (*at, 2, "protocol"): "port 8443 is HTTPS (listener 'web'): one protocol per port",
    }


# === limits (item 6) ===


def test_a_body_over_the_size_limit_is_a_413_before_it_is_read(cp: ControlPlane) -> None:
    big = b" " * (limits.MAX_REQUEST_BYTES + 1)
    headers = {**cp.admin, "content-type": "application/json"}
    r = httpx.post(f"{cp.url}/api/v1/apply", content=big, headers=headers, timeout=30)
    assert r.status_code == 413
    assert r.json()["detail"] == (
        "request too large: 4194305 bytes, over the limit of 4 MiB (MESHCTL_MAX_REQUEST_BYTES);"
        " apply the documents in several smaller files"
    )

    # A chunked body has no length to read first: refused once it passes the limit.
    with socket.create_connection(("127.0.0.1", cp.port), timeout=30) as s:
        head = (
            "POST /api/v1/apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {cp.token('admin')}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        s.sendall(head.encode())
        chunk = b" " * 65536
        sent = 0
        while sent <= limits.MAX_REQUEST_BYTES:
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        s.sendall(b"0\r\n\r\n")
        received = b""
        while not received.endswith(b"}"):  # the head, then the JSON body
            data = s.recv(65536)
            assert data, received
            received += data
        answer = received.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "request too large: more than 4194304 bytes, over the limit of 4 MiB" in answer

    # Under the limit, other paths, and the OTLP receiver (its own limit) are untouched.
    assert apply(cp, service("small", "limits")).status_code == 200


def test_more_documents_than_the_limit_is_a_413(cp: ControlPlane) -> None:
    many = [service(f"s{i}", "many") for i in range(limits.MAX_DOCUMENTS + 1)]
    r = apply(cp, *many)
    assert r.status_code == 413
    assert r.json()["detail"] == (
        "too many documents: 1001, at most 1000 per apply (MESHCTL_APPLY_MAX_DOCUMENTS);"
        " apply them in several smaller files"
    )
    assert apply(cp, *many[:-1]).status_code == 200
