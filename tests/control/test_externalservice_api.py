"""The ExternalService kind and the outbound policy through a real control plane (uvicorn,
SQLite file, started with --outbound-policy REGISTRY_ONLY): what is stored and given back,
apply round-trips, 422s naming the field path over REST and apply, a sidecar registered
`transparent` (stored, shown, compiled), and `meshctl apply / get / delete`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshproc import ControlPlane, module_control_plane
from pki import TestPki
from test_policy_api import doc, pruned, register, service, snapshot

EXTERNALS = "/api/v1/externalservices"

cp = module_control_plane("--outbound-policy", "REGISTRY_ONLY")

CA = TestPki(Path(tempfile.mkdtemp(prefix="meshctl-external-pki-"))).roots.read_text()
SECURE = {
    "hosts": ["secure.test"],
    "ports": [{"port": 80, "protocol": "HTTP", "targetPort": 8443}],
    "tls": {"caCertificates": CA, "sni": "secure.test"},
    "endpoints": [{"address": "127.0.0.1"}],
    "allowedServices": ["frontend"],
}


def test_external_services_are_stored_applied_and_compiled(cp: ControlPlane) -> None:
    cp.apply(service("frontend", "eg"), service("catalog", "eg"))
    r = cp.call("POST", EXTERNALS, json={"name": "secure", "namespace": "eg", "spec": SECURE})
    assert r.status_code == 201, r.text
    assert pruned(r.json()["spec"]) == SECURE
    assert pruned(cp.ok("GET", f"{EXTERNALS}/eg/secure")["spec"]) == SECURE
    # apply: the same document again changes nothing; another creates one.
    wild = {"hosts": ["*.wild.example"], "ports": [{"port": 443, "protocol": "TLS"}]}
    result = cp.apply(doc("ExternalService", "secure", "eg", SECURE), doc("ExternalService", "wild", "eg", wild))
    assert [(x["name"], x["action"]) for x in result] == [("eg/secure", "unchanged"), ("eg/wild", "created")]

    frontend = register(cp, "eg", "frontend", 16401, http_proxy_port=16480).json()["id"]
    config = snapshot(cp, frontend)
    proxy = next(x for x in config["listeners"] if x["name"] == "http-proxy")
    assert proxy["egress"] == {"policy": "registry_only", "connect": [{"host": "*.wild.example", "port": 443}]}
    assert proxy["routes"][-1]["backends"] == [{"cluster": "external/eg/secure/80"}]
    secure = next(c for c in config["clusters"] if c["name"] == "external/eg/secure/80")
    assert secure["endpoints"] == [{"address": "127.0.0.1:8443"}] and secure["tls"]["server_name"] == "secure.test"

    # catalog may not call secure: a deny route for its host.
    catalog = register(cp, "eg", "catalog", 16402, http_proxy_port=16481).json()["id"]
    proxy = next(x for x in snapshot(cp, catalog)["listeners"] if x["name"] == "http-proxy")
    assert proxy["routes"][-1] == {
        "name": "external/eg/secure/secure.test",
        "match": {"host": "secure.test"},
        "deny": True,
    }

    assert cp.call("DELETE", f"{EXTERNALS}/eg/wild").status_code == 204
    assert [x["name"] for x in cp.ok("GET", EXTERNALS, params={"namespace": "eg"})] == ["secure"]


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ({**SECURE, "ports": [{"port": 443, "protocol": "HTTPS"}]}, ["tls"]),
        ({**SECURE, "tls": None, "hosts": ["*.secure.test"]}, ["hosts", 0]),
        ({**SECURE, "tls": {"caCertificates": "not a certificate"}}, ["tls", "caCertificates"]),
        ({**SECURE, "ports": [{"port": 80, "protocol": "QUIC"}]}, ["ports", 0, "protocol"]),
        ({**SECURE, "hosts": ["Secure Test"]}, ["hosts", 0]),
        ({**SECURE, "allowedServices": ["a/b/c"]}, ["allowedServices", 0]),
        ({**SECURE, "extra": 1}, ["extra"]),
    ],
)
def test_bad_external_services_are_422_naming_the_field(cp: ControlPlane, spec: dict[str, Any], loc: list[Any]) -> None:
    r = cp.call("POST", EXTERNALS, json={"name": "bad", "namespace": "bad", "spec": spec})
    assert r.status_code == 422 and ["body", "spec", *loc] in [e["loc"] for e in r.json()["detail"]], r.text
    r = cp.call("POST", "/api/v1/apply", json={"documents": [doc("ExternalService", "bad", "bad", spec)]})
    assert r.status_code == 422 and any(e["loc"][-len(loc) :] == loc for e in r.json()["detail"]), r.text
    assert cp.call("GET", f"{EXTERNALS}/bad/bad").status_code == 404  # nothing half-written


def test_a_transparent_sidecar_is_stored_shown_and_compiled(cp: ControlPlane) -> None:
    cp.apply(service("pricing", "tp-eg"), service("frontend", "tp-eg"))
    r = register(cp, "tp-eg", "frontend", 16403, transparent={"outbound_port": 15001, "dns_port": 15053})
    assert r.status_code == 200, r.text
    assert r.json()["transparent"] == {"outbound_port": 15001, "dns_port": 15053}
    config = snapshot(cp, r.json()["id"])
    names = [x["name"] for x in config["listeners"]]
    assert "transparent-outbound" in names and "vip/tp-eg/pricing/80" in names
    assert config["dns"]["address"] == "127.0.0.1:15053"
    assert config["dns"]["records"]["pricing"] == config["dns"]["records"]["pricing.tp-eg.svc"]
    # A heartbeat without it: not transparent any more.
    r = register(cp, "tp-eg", "frontend", 16403)
    assert r.json()["transparent"] is None
    assert "dns" not in snapshot(cp, r.json()["id"])
    bad = register(cp, "tp-eg", "frontend", 16403, transparent={"outbound_port": 0})
    assert bad.status_code == 422 and ["body", "transparent", "outbound_port"] in [
        e["loc"] for e in bad.json()["detail"]
    ]


def test_external_services_through_the_cli(cp: ControlPlane, tmp_path: Path) -> None:
    def meshctl(*args: str) -> str:
        return cp.cli(*args, data_dir=tmp_path)

    path = tmp_path / "egress.yaml"
    path.write_text(yaml.safe_dump(doc("ExternalService", "payments", "cli-eg", SECURE)))
    assert "created" in meshctl("apply", "-f", str(path))
    shown = yaml.safe_load(meshctl("get", "externalservice", "cli-eg/payments", "-o", "yaml"))
    assert shown["kind"] == "ExternalService" and shown["spec"]["hosts"] == ["secure.test"]
    table = meshctl("get", "externalservices", "-n", "cli-eg")
    assert "secure.test" in table and "80/HTTP->8443 (TLS origination)" in table and "frontend" in table
    assert meshctl("delete", "externalservice", "cli-eg/payments").strip() == "externalservice/cli-eg/payments deleted"
