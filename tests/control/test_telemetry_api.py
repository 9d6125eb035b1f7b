"""The Telemetry kind through a real control plane (uvicorn, SQLite file):
what is stored, what sidecars' snapshots carry (precedence included), 422s
naming the field path over REST and apply, references to services, revisions,
and `meshctl apply / get / delete`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshproc import ControlPlane, module_control_plane
from test_policy_api import doc, pruned, register, service, snapshot

TELEMETRIES = "/api/v1/telemetries"

cp = module_control_plane()

MESH_WIDE = {
    "tracing": {"samplingPercent": 10, "collector": "http://otel.example:4318/v1/traces"},
    "accessLog": {"format": "text", "path": "/var/log/meshctl/access.log"},
}
CATALOG_ONLY = {"targetRefs": [{"kind": "Service", "name": "catalog"}], "tracing": {"samplingPercent": 100}}


def test_telemetry_is_stored_compiled_by_precedence_and_holds_its_services(cp: ControlPlane) -> None:
    cp.apply(service("catalog", "tel"), service("frontend", "tel"))
    r = cp.call("POST", TELEMETRIES, json={"name": "mesh", "namespace": "tel", "spec": MESH_WIDE})
    assert r.status_code == 201, r.text
    assert pruned(r.json()["spec"]) == {**MESH_WIDE, "accessLog": {**MESH_WIDE["accessLog"], "disabled": False}}
    r = cp.call("POST", TELEMETRIES, json={"name": "catalog", "namespace": "tel", "spec": CATALOG_ONLY})
    assert r.status_code == 201, r.text
    assert [t["name"] for t in cp.ok("GET", TELEMETRIES, params={"namespace": "tel"})] == ["catalog", "mesh"]

    catalog = register(cp, "tel", "catalog", 16301).json()["id"]
    frontend = register(cp, "tel", "frontend", 16302, upstreams={"catalog": 17301}).json()["id"]
    mine = snapshot(cp, catalog)
    assert mine["telemetry"] == {
        "service": "catalog",
        "namespace": "tel",
        "workload": "catalog-127.0.0.1:16301",
        # catalog's own sampling; the collector from the mesh-wide one, which sets it alone
        "tracing": {"sample_percent": 100, "collector": "http://otel.example:4318/v1/traces"},
    }
    theirs = snapshot(cp, frontend)
    assert theirs["telemetry"]["tracing"] == {"sample_percent": 10, "collector": "http://otel.example:4318/v1/traces"}
    assert {x["name"]: (x["direction"], x["access_log"]) for x in theirs["listeners"]} == {
        "inbound": ("inbound", {"path": "/var/log/meshctl/access.log", "format": "text"}),
        "outbound/tel/catalog": ("outbound", {"path": "/var/log/meshctl/access.log", "format": "text"}),
    }
    assert {c["name"]: c["service"] for c in theirs["clusters"]} == {
        "inbound": "tel/frontend",
        "out/tel/catalog": "tel/catalog",
    }

    # Named services are references: they must exist, and cannot go while named.
    r = cp.call("DELETE", "/api/v1/services/tel/catalog")
    assert r.status_code == 409
    assert r.json()["detail"] == "service tel/catalog is used by Telemetry tel/catalog"
    ghost = {"targetRefs": [{"name": "ghost"}], "accessLog": {}}
    r = cp.call("PUT", f"{TELEMETRIES}/tel/catalog", json={"spec": ghost, "resource_version": 1})
    assert r.status_code == 422
    assert r.json()["detail"] == [
        {
            "loc": ["body", "spec", "targetRefs", 0, "name"],
            "msg": "service tel/ghost does not exist",
            "type": "reference",
        }
    ]
    # Edits reach the snapshots: a targeted Telemetry turning access logs off for frontend.
    quiet = {"targetRefs": [{"name": "frontend"}], "accessLog": {"disabled": True}}
    r = cp.call("PUT", f"{TELEMETRIES}/tel/catalog", json={"spec": quiet, "resource_version": 1})
    assert r.status_code == 200, r.text
    assert not any("access_log" in x for x in snapshot(cp, frontend)["listeners"])
    assert snapshot(cp, catalog)["telemetry"]["tracing"]["sample_percent"] == 10

    for sidecar in (catalog, frontend):
        cp.ok("DELETE", f"/api/v1/sidecars/{sidecar}")
    cp.ok("DELETE", f"{TELEMETRIES}/tel/catalog")
    assert cp.call("DELETE", "/api/v1/services/tel/catalog").status_code == 204
    kinds = [(x["action"], x["kind"]) for x in cp.ok("GET", "/api/v1/revisions")[-3:]]
    assert kinds == [("update", "Telemetry"), ("delete", "Telemetry"), ("delete", "Service")]


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ({}, []),
        ({"tracing": {"samplingPercent": 150}}, ["tracing", "samplingPercent"]),
        ({"tracing": {"collector": "localhost:4318"}}, ["tracing", "collector"]),
        ({"accessLog": {"format": "yaml"}}, ["accessLog", "format"]),
        ({"accessLog": {"path": "relative.log"}}, ["accessLog", "path"]),
        ({"targetRefs": [], "accessLog": {}}, ["targetRefs"]),
        ({"targetRefs": [{"name": "x"}, {"name": "x"}], "accessLog": {}}, ["targetRefs", 1, "name"]),
        ({"tracing": {"sampling": 5}}, ["tracing", "sampling"]),
    ],
)
def test_bad_telemetry_is_422_naming_the_field(cp: ControlPlane, spec: dict[str, Any], loc: list[Any]) -> None:
    cp.apply(service("x", "bad"))
    r = cp.call("POST", TELEMETRIES, json={"name": "t", "namespace": "bad", "spec": spec})
    assert r.status_code == 422 and [e["loc"] for e in r.json()["detail"]] == [["body", "spec", *loc]], r.text
    r = cp.call("POST", "/api/v1/apply", json={"documents": [doc("Telemetry", "t", "bad", spec)]})
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "documents", 0, "spec", *loc]], r.text
    assert cp.call("GET", f"{TELEMETRIES}/bad/t").status_code == 404


def test_telemetry_through_the_cli(cp: ControlPlane, tmp_path: Path) -> None:
    def meshctl(*args: str) -> str:
        return cp.cli(*args, data_dir=tmp_path)

    docs = [
        service("catalog", "cli-tel"),
        doc("Telemetry", "mesh", "cli-tel", MESH_WIDE),
        doc("Telemetry", "catalog", "cli-tel", CATALOG_ONLY),
    ]
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    assert meshctl("apply", "-f", str(path)).splitlines()[-2:] == [
        "telemetry/cli-tel/mesh created",
        "telemetry/cli-tel/catalog created",
    ]
    shown = yaml.safe_load(meshctl("get", "telemetry", "cli-tel/catalog", "-o", "yaml"))
    assert shown["metadata"].pop("resourceVersion") == 1 and shown == docs[2]
    table = meshctl("get", "telemetries", "-n", "cli-tel")
    assert "(every service)" in table and "10%" in table and "text /var/log/meshctl/access.log" in table
    row = next(line for line in table.splitlines() if " catalog " in line)
    assert row.split()[2:4] == ["catalog", "100%"]  # its target, in its own namespace
    assert meshctl("delete", "telemetry", "cli-tel/catalog").strip() == "telemetry/cli-tel/catalog deleted"
    assert "telemetry/cli-tel/mesh deleted" in meshctl("delete", "-f", str(path))
