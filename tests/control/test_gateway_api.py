"""The Gateway resource and HTTPRoutes attached to it through a real control
plane (uvicorn, SQLite file): CRUD with revisions, 422s naming each field,
references both ways (the Service a Gateway joins as, the Gateway and
listener a route names), gateway registrations, and the generic CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from meshproc import ControlPlane, module_control_plane
from meshproc import https_listener as https

BASE = "/api/v1/gateways"


cp = module_control_plane()


def service(name: str, ns: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": {"ports": [{"port": 80}]}}


EDGE = {"listeners": [https("shop", "shop.example.com"), {"name": "plain", "port": 8080, "protocol": "HTTP"}]}


def gateway_doc(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Gateway", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def route_doc(name: str, ns: str, parents: list[dict[str, Any]], backend: str, **spec: Any) -> dict[str, Any]:
    rules = [{"backendRefs": [{"name": backend}]}]
    return {
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": parents, "rules": rules, **spec},
    }


def pruned(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: pruned(v) for k, v in value.items() if v is not None}
    return [pruned(v) for v in value] if isinstance(value, list) else value


def errors(r: Any) -> dict[tuple[Any, ...], str]:
    assert r.status_code == 422, r.text
    return {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}


def test_create_read_update_delete_with_revisions(cp: ControlPlane) -> None:
    cp.apply(service("edge", "crud"))
    before = len(cp.ok("GET", "/api/v1/revisions"))
    r = cp.call("POST", BASE, json={"name": "edge", "namespace": "crud", "spec": EDGE})
    assert r.status_code == 201, r.text
    stored = pruned(r.json()["spec"])
    assert stored["listeners"][0]["tls"] == {"mode": "Terminate", "certificateRefs": [{"name": "shop"}]}
    assert pruned(cp.ok("GET", f"{BASE}/crud/edge")["spec"]) == stored
    assert [g["name"] for g in cp.ok("GET", BASE, params={"namespace": "crud"})] == ["edge"]
    assert cp.call("GET", f"{BASE}/crud/edge", role="reader").status_code == 200
    assert cp.call("POST", BASE, role="reader", json={"name": "x", "spec": EDGE}).status_code == 403
    assert cp.call("POST", BASE, json={"name": "edge", "namespace": "crud", "spec": EDGE}).status_code == 409

    update = {"spec": {"listeners": [https("shop", "*.example.com")]}, "resource_version": 1}
    r = cp.call("PUT", f"{BASE}/crud/edge", json=update)
    assert r.status_code == 200 and r.json()["resource_version"] == 2
    assert cp.call("PUT", f"{BASE}/crud/edge", json=update).status_code == 409  # stale

    # The Service its instances join as cannot go while the Gateway is there.
    r = cp.call("DELETE", "/api/v1/services/crud/edge")
    assert r.status_code == 409 and r.json()["detail"] == "service crud/edge is used by Gateway crud/edge"
    assert cp.call("DELETE", f"{BASE}/crud/edge").status_code == 204
    assert cp.call("DELETE", "/api/v1/services/crud/edge").status_code == 204
    assert [(x["action"], x["kind"], x["name"]) for x in cp.ok("GET", "/api/v1/revisions")[before:]] == [
        ("create", "Gateway", "crud/edge"),
        ("update", "Gateway", "crud/edge"),
        ("delete", "Gateway", "crud/edge"),
        ("delete", "Service", "crud/edge"),
    ]


LISTENERS = ("body", "spec", "listeners")


@pytest.mark.parametrize(
    ("listeners", "loc", "msg"),
    [
        ([https("a"), https("a", "x.example")], (1, "name"), "listener name 'a' is used by listeners[0]"),
        ([https("a", port=0)], (0, "port"), "greater than or equal to 1"),
        ([https("a", port=70000)], (0, "port"), "less than or equal to 65535"),
        ([{"name": "a", "port": 443, "protocol": "HTTPS"}], (0, "tls"), "an HTTPS listener needs tls"),
        ([{**https("a"), "protocol": "HTTP"}], (0, "tls"), "an HTTP listener takes no tls"),
        ([{"name": "a", "port": 443, "protocol": "TLS"}], (0, "protocol"), "'HTTPS' or 'HTTP'"),
        ([https("a", "Shop.Example")], (0, "hostname"), "should match pattern"),
        ([https("a", "a..example")], (0, "hostname"), "should match pattern"),
        ([https("a", "*.*.example")], (0, "hostname"), "should match pattern"),
        ([https("a", "a.*.example")], (0, "hostname"), "should match pattern"),
        ([https("a", "10.0.0.1")], (0, "hostname"), "not an IP address"),
        ([https("a", "x.example"), https("b", "x.example")], (1, "hostname"), "listener 'a' serves port 8443"),
        ([https("a"), https("b")], (1, "hostname"), "with no hostname already"),
        (
            [https("a", "x.example"), {"name": "b", "port": 8443, "protocol": "HTTP", "hostname": "y.example"}],
            (1, "protocol"),
            "port 8443 is HTTPS (listener 'a'): one protocol per port",
        ),
        ([{**https("a"), "tls": {"certificateRefs": []}}], (0, "tls", "certificateRefs"), "at least 1 item"),
        (
            [{**https("a"), "tls": {"certificateRefs": [{"name": "a"}, {"name": "b"}]}}],
            (0, "tls", "certificateRefs"),
            "at most 1 item",
        ),
        ([https("a", cert="../etc/key")], (0, "tls", "certificateRefs", 0, "name"), "should match pattern"),
        (
            [{**https("a"), "tls": {"mode": "Passthrough", "certificateRefs": [{"name": "a"}]}}],
            (0, "tls", "mode"),
            "'Terminate'",
        ),
        (
            [{**https("a"), "tls": {"certificateRefs": [{"name": "a", "kind": "Secret"}]}}],
            (0, "tls", "certificateRefs", 0, "kind"),
            "unknown field",
        ),
    ],
)
def test_invalid_listeners_are_422s_naming_the_field(
    cp: ControlPlane, listeners: list[dict[str, Any]], loc: tuple[Any, ...], msg: str
) -> None:
    cp.apply(service("edge", "bad"))
    found = errors(cp.call("POST", BASE, json={"name": "edge", "namespace": "bad", "spec": {"listeners": listeners}}))
    assert list(found) == [(*LISTENERS, *loc)] and msg in found[(*LISTENERS, *loc)]
    # apply names the same field, within its document
    found = errors(
        cp.call("POST", "/api/v1/apply", json={"documents": [gateway_doc("edge", "bad", {"listeners": listeners})]})
    )
    assert list(found) == [("body", "documents", 0, "spec", "listeners", *loc)]
    assert cp.call("GET", f"{BASE}/bad/edge").status_code == 404


def test_a_gateway_needs_the_service_of_its_name(cp: ControlPlane) -> None:
    found = errors(cp.call("POST", BASE, json={"name": "lonely", "namespace": "nosvc", "spec": EDGE}))
    assert found == {
        ("body", "name"): "service nosvc/lonely does not exist: a Gateway's instances join as the Service of its name"
    }
    found = errors(cp.call("POST", "/api/v1/apply", json={"documents": [gateway_doc("lonely", "nosvc", EDGE)]}))
    assert list(found) == [("body", "documents", 0, "metadata", "name")]
    # Applied together, the Service comes first.
    assert [r["action"] for r in cp.apply(gateway_doc("lonely", "nosvc", EDGE), service("lonely", "nosvc"))] == [
        "created",
        "created",
    ]


def test_routes_attach_to_gateways_and_their_listeners(cp: ControlPlane) -> None:
    cp.apply(service("edge", "rt"), service("shop", "rt"), gateway_doc("edge", "rt", EDGE))
    at = ("body", "documents", 0, "spec")

    def apply(*docs: dict[str, Any]) -> Any:
        return cp.call("POST", "/api/v1/apply", json={"documents": list(docs)})

    ghost = route_doc("r", "rt", [{"kind": "Gateway", "name": "ghost"}], "shop")
    assert errors(apply(ghost)) == {(*at, "parentRefs", 0, "name"): "gateway rt/ghost does not exist"}
    section = route_doc("r", "rt", [{"kind": "Gateway", "name": "edge", "sectionName": "nope"}], "shop")
    assert errors(apply(section)) == {(*at, "parentRefs", 0, "sectionName"): "gateway rt/edge has no listener 'nope'"}
    on_service = route_doc("r", "rt", [{"name": "shop", "sectionName": "http"}], "shop")
    assert "only for kind Gateway" in errors(apply(on_service))[(*at, "parentRefs", 0)]
    bad_host = route_doc("r", "rt", [{"kind": "Gateway", "name": "edge"}], "shop", hostnames=["ok.example", "Bad"])
    assert list(errors(apply(bad_host))) == [(*at, "hostnames", 1)]
    # A Gateway parent is no service: a service of that name need not exist.
    cp.apply(service("edge2", "rt"), gateway_doc("edge2", "rt", EDGE))
    cp.ok("DELETE", f"{BASE}/rt/edge2")

    good = route_doc(
        "r", "rt", [{"kind": "Gateway", "name": "edge", "sectionName": "shop"}], "shop", hostnames=["shop.example.com"]
    )
    assert cp.apply(good)[0]["action"] == "created"
    stored = pruned(cp.ok("GET", "/api/v1/httproutes/rt/r")["spec"])
    assert stored["parentRefs"] == [{"kind": "Gateway", "name": "edge", "sectionName": "shop"}]
    assert stored["hostnames"] == ["shop.example.com"]
    # A Service parent is stored as written (no kind), as before Gateways.
    cp.apply(route_doc("svc", "rt", [{"name": "shop"}], "shop"))
    assert cp.ok("GET", "/api/v1/httproutes/rt/svc")["spec"]["parentRefs"] == [
        {"name": "shop", "namespace": None, "kind": None, "sectionName": None}
    ]

    # The Gateway cannot go while a route attaches to it, nor lose the listener a route names.
    r = cp.call("DELETE", f"{BASE}/rt/edge")
    assert r.status_code == 409 and r.json()["detail"] == "gateway rt/edge is used by HTTPRoute rt/r"
    gw = cp.ok("GET", f"{BASE}/rt/edge")
    r = cp.call(
        "PUT",
        f"{BASE}/rt/edge",
        json={"spec": {"listeners": [https("other")]}, "resource_version": gw["resource_version"]},
    )
    assert errors(r) == {
        ("body", "spec", "listeners"): "HTTPRoute rt/r attaches to listener 'shop' (parentRefs[0].sectionName)"
    }
    # Both changed in one apply: fine.
    moved = {
        **good,
        "spec": {**good["spec"], "parentRefs": [{"kind": "Gateway", "name": "edge", "sectionName": "other"}]},
    }
    assert [x["action"] for x in cp.apply(gateway_doc("edge", "rt", {"listeners": [https("other")]}), moved)] == [
        "configured",
        "configured",
    ]
    cp.ok("DELETE", "/api/v1/httproutes/rt/r")
    cp.ok("DELETE", f"{BASE}/rt/edge")


def test_gateway_registrations_are_no_endpoints_and_get_the_gateway_listeners(cp: ControlPlane) -> None:
    cp.apply(service("edge", "reg"), service("shop", "reg"), gateway_doc("edge", "reg", EDGE))
    body = {"namespace": "reg", "service": "edge", "address": "127.0.0.1", "gateway": True}
    token = {"Authorization": f"Bearer {cp.join_token('edge', 'reg')}"}
    r = httpx.put(f"{cp.url}/api/v1/sidecars", json=body, headers=token)
    assert r.status_code == 200, r.text
    sidecar = r.json()
    assert sidecar["gateway"] is True and sidecar["inbound_port"] == 0 and sidecar["live"]
    assert cp.ok("GET", "/api/v1/services/reg/edge/endpoints") == []  # nobody routes to a gateway
    snapshot = httpx.get(f"{cp.url}/api/v1/sidecars/{sidecar['id']}/snapshot", params={"wait": 0}, headers=token)
    listeners = snapshot.json()["config"]["listeners"]
    assert [x["name"] for x in listeners] == ["gateway/8080", "gateway/8443"]
    assert listeners[1]["tls"]["certificates"] == [
        {"server_names": ["shop.example.com"], "cert_chain_file": "shop.pem", "private_key_file": "shop.key"}
    ]
    bad = httpx.put(f"{cp.url}/api/v1/sidecars", json={**body, "inbound_port": 15006}, headers=token)
    assert errors(bad) == {("body", "inbound_port"): "a gateway has no inbound or app port: leave it out"}
    plain = {k: v for k, v in body.items() if k != "gateway"}
    assert set(errors(httpx.put(f"{cp.url}/api/v1/sidecars", json=plain, headers=token))) == {
        ("body", "inbound_port"),
        ("body", "app_port"),
    }
    assert httpx.delete(f"{cp.url}/api/v1/sidecars/{sidecar['id']}", headers=token).status_code == 204
    assert all(s["id"] != sidecar["id"] for s in cp.sidecars())


def test_apply_get_and_delete_through_the_cli(cp: ControlPlane, tmp_path: Path) -> None:
    def meshctl(*args: str) -> str:
        return cp.cli(*args, data_dir=tmp_path)

    docs = [
        service("edge", "cli"),
        service("shop", "cli"),
        gateway_doc("edge", "cli", EDGE),
        route_doc(
            "shop",
            "cli",
            [{"kind": "Gateway", "name": "edge", "sectionName": "shop"}],
            "shop",
            hostnames=["shop.example.com"],
        ),
    ]
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    assert meshctl("apply", "-f", str(path)).splitlines() == [
        "service/cli/edge created",
        "service/cli/shop created",
        "gateway/cli/edge created",
        "httproute/cli/shop created",
    ]
    got = yaml.safe_load(meshctl("get", "gateway", "cli/edge", "-o", "yaml"))
    assert got["spec"]["listeners"][1] == {"name": "plain", "port": 8080, "protocol": "HTTP"}
    table = meshctl("get", "gw", "-n", "cli")
    assert "shop :8443 HTTPS shop.example.com [shop]" in table and "plain :8080 HTTP *" in table
    assert "gateway/edge#shop (shop.example.com)" in meshctl("get", "httproutes", "-n", "cli")
    again = tmp_path / "again.yaml"
    again.write_text(
        meshctl("get", "gw", "-n", "cli", "-o", "yaml") + meshctl("get", "httproutes", "-n", "cli", "-o", "yaml")
    )
    assert meshctl("apply", "-f", str(again)).splitlines() == [
        "gateway/cli/edge unchanged",
        "httproute/cli/shop unchanged",
    ]
    # Routes go before the Gateway they attach to, the Gateway before its Service.
    assert meshctl("delete", "-f", str(path)).splitlines() == [
        "httproute/cli/shop deleted",
        "gateway/cli/edge deleted",
        "service/cli/edge deleted",
        "service/cli/shop deleted",
    ]
