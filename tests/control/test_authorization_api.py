"""AuthorizationPolicy and the Service's mtls field through a real control
plane (uvicorn, SQLite file): CRUD with revisions, 422 field paths, 409s,
references, apply and the generic CLI, snapshots and explain; and the
mesh-wide authorization default (flag and environment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshctl.control.settings import Settings
from meshproc import ControlPlane, module_control_plane

BASE = "/api/v1/authorizationpolicies"


cp = module_control_plane("--trust-domain", "example.org")


def service(name: str, ns: str, protocol: str = "http", **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"port": 80, "protocol": protocol}], **spec},
    }


DENY_ADMIN = {
    "targetRef": {"name": "catalog"},
    "action": "DENY",
    "rules": [
        {
            "from": [
                {"source": {"principals": ["spiffe://example.org/ns/shop/sa/frontend", "spiffe://*/ns/ops/sa/*"]}}
            ],
            "to": [{"operation": {"paths": ["/admin/*", "/healthz"], "methods": ["GET", "POST"]}}],
        }
    ],
}


def authz_doc(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "AuthorizationPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def pruned(value: Any) -> Any:
    """The API shows absent optional fields as nulls; the stored spec has none."""
    if isinstance(value, dict):
        return {k: pruned(v) for k, v in value.items() if v is not None}
    return [pruned(v) for v in value] if isinstance(value, list) else value


def revisions(cp: ControlPlane) -> list[dict[str, Any]]:
    return list(cp.ok("GET", "/api/v1/revisions"))


def test_create_read_update_delete_with_revisions(cp: ControlPlane) -> None:
    cp.apply(service("catalog", "crud"), service("frontend", "crud"))
    before = len(revisions(cp))
    r = cp.call("POST", BASE, json={"name": "deny-admin", "namespace": "crud", "spec": DENY_ADMIN})
    assert r.status_code == 201, r.text
    assert pruned(r.json()["spec"]) == DENY_ADMIN and r.json()["resource_version"] == 1
    got = cp.ok("GET", f"{BASE}/crud/deny-admin")
    assert pruned(got["spec"]) == DENY_ADMIN
    assert [p["name"] for p in cp.ok("GET", BASE, params={"namespace": "crud"})] == ["deny-admin"]
    assert cp.call("GET", f"{BASE}/crud/deny-admin", role="reader").status_code == 200
    assert cp.call("POST", BASE, role="reader", json={"name": "x", "spec": DENY_ADMIN}).status_code == 403

    # Defaults are stored: the action is ALLOW, no rules (which allows nothing).
    update = {"spec": {"targetRef": {"name": "catalog"}}, "resource_version": 1}
    r = cp.call("PUT", f"{BASE}/crud/deny-admin", json=update)
    assert r.status_code == 200, r.text
    assert pruned(r.json()["spec"]) == {"targetRef": {"name": "catalog"}, "action": "ALLOW", "rules": []}
    assert r.json()["resource_version"] == 2
    stale = cp.call("PUT", f"{BASE}/crud/deny-admin", json=update)
    assert stale.status_code == 409 and "resource_version 2" in stale.json()["detail"]
    duplicate = cp.call("POST", BASE, json={"name": "deny-admin", "namespace": "crud", "spec": DENY_ADMIN})
    assert duplicate.status_code == 409

    assert cp.call("DELETE", f"{BASE}/crud/deny-admin").status_code == 204
    assert cp.call("GET", f"{BASE}/crud/deny-admin").status_code == 404
    assert [(x["action"], x["kind"], x["name"]) for x in revisions(cp)[before:]] == [
        ("create", "AuthorizationPolicy", "crud/deny-admin"),
        ("update", "AuthorizationPolicy", "crud/deny-admin"),
        ("delete", "AuthorizationPolicy", "crud/deny-admin"),
    ]


def test_invalid_policies_are_422_with_field_paths(cp: ControlPlane) -> None:
    cp.apply(service("catalog", "bad"))
    spec = {
        "targetRef": {"name": "catalog"},
        "action": "MAYBE",
        "rules": [
            {"from": [{"source": {}}], "to": [{"operation": {"paths": ["admin"], "methods": ["get"]}}]},
            {"to": [{"operation": {}}]},
        ],
    }
    r = cp.call("POST", BASE, json={"name": "p", "namespace": "bad", "spec": spec})
    assert r.status_code == 422
    errors = {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}
    op = ("body", "spec", "rules", 0, "to", 0, "operation")
    assert set(errors) == {
        ("body", "spec", "action"),
        ("body", "spec", "rules", 0, "from", 0, "source"),
        (*op, "paths", 0),
        (*op, "methods", 0),
        ("body", "spec", "rules", 1, "to", 0, "operation"),
    }
    assert "write 'GET'" in errors[(*op, "methods", 0)]

    r = cp.call(
        "POST", BASE, json={"name": "p", "namespace": "bad", "spec": {**DENY_ADMIN, "targetRef": {"name": "x"}}}
    )
    assert r.status_code == 422
    assert r.json()["detail"] == [
        {"loc": ["body", "spec", "targetRef", "name"], "msg": "service bad/x does not exist", "type": "reference"}
    ]
    assert cp.call("GET", f"{BASE}/bad/p").status_code == 404


def test_a_service_cannot_go_while_a_policy_names_it(cp: ControlPlane) -> None:
    cp.apply(service("catalog", "ref"), service("other", "ref2"))
    # Several policies may target one service, from another namespace too.
    cross = {**DENY_ADMIN, "targetRef": {"name": "catalog", "namespace": "ref"}}
    cp.apply(authz_doc("a", "ref", DENY_ADMIN), authz_doc("b", "ref2", cross))
    r = cp.call("DELETE", "/api/v1/services/ref/catalog")
    assert r.status_code == 409
    assert r.json()["detail"] == "service ref/catalog is used by AuthorizationPolicy ref/a, AuthorizationPolicy ref2/b"
    cp.ok("DELETE", f"{BASE}/ref/a")
    cp.ok("DELETE", f"{BASE}/ref2/b")
    assert cp.call("DELETE", "/api/v1/services/ref/catalog").status_code == 204


def test_service_mtls_mode(cp: ControlPlane) -> None:
    r = cp.call("POST", "/api/v1/services", json={"name": "legacy", "namespace": "tls", "mtls": "PERMISSIVE"})
    assert r.status_code == 201, r.text
    assert r.json()["mtls"] == "PERMISSIVE"
    assert cp.ok("POST", "/api/v1/services", json={"name": "new", "namespace": "tls"})["mtls"] == "STRICT"
    bad = cp.call("POST", "/api/v1/services", json={"name": "x", "namespace": "tls", "mtls": "OFF"})
    assert bad.status_code == 422 and [e["loc"] for e in bad.json()["detail"]] == [["body", "mtls"]]
    bad = cp.call("PUT", "/api/v1/services/tls/legacy", json={"ports": [], "mtls": "strict", "resource_version": 1})
    assert bad.status_code == 422 and [e["loc"] for e in bad.json()["detail"]] == [["body", "mtls"]]
    bad = cp.call("POST", "/api/v1/apply", json={"documents": [service("x", "tls", mtls="NONE")]})
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["detail"]] == [["body", "documents", 0, "spec", "mtls"]]

    # A PUT replaces the spec: mtls left out is STRICT again; the revision records the change.
    revision = revisions(cp)[-1]["id"]
    r = cp.call("PUT", "/api/v1/services/tls/legacy", json={"ports": [], "resource_version": 1})
    assert r.status_code == 200 and r.json()["mtls"] == "STRICT"
    changes = cp.ok("GET", f"/api/v1/revisions/{revision}/diff/{revisions(cp)[-1]['id']}")
    assert changes == [
        {
            "kind": "Service",
            "name": "tls/legacy",
            "change": "changed",
            "before": {"spec": {"ports": [], "mtls": "PERMISSIVE"}},
            "after": {"spec": {"ports": [], "mtls": "STRICT"}},
        }
    ]
    # Rollback restores it; apply with the same mtls is unchanged, with another one configured.
    cp.ok("POST", f"/api/v1/revisions/{revision}/rollback")
    assert cp.ok("GET", "/api/v1/services/tls/legacy")["mtls"] == "PERMISSIVE"
    doc = {"kind": "Service", "metadata": {"name": "legacy", "namespace": "tls"}, "spec": {"mtls": "PERMISSIVE"}}
    assert cp.apply(doc)[0]["action"] == "unchanged"
    assert cp.apply({**doc, "spec": {}})[0]["action"] == "configured"
    assert cp.ok("GET", "/api/v1/services/tls/legacy")["mtls"] == "STRICT"


def _inbound(cp: ControlPlane, ns: str, svc: str, port: int) -> dict[str, Any]:
    body = {"namespace": ns, "service": svc, "address": "127.0.0.1", "inbound_port": port, "app_port": 9000}
    sidecar = cp.ok("PUT", "/api/v1/sidecars", json=body)["id"]
    snapshot = cp.ok("GET", f"/api/v1/sidecars/{sidecar}/snapshot", params={"wait": 0})
    cp.ok("DELETE", f"/api/v1/sidecars/{sidecar}")
    return next(x for x in snapshot["config"]["listeners"] if x["name"] == "inbound")


def test_snapshots_carry_the_authorization_and_explain_decides_like_the_data_plane(cp: ControlPlane) -> None:
    # explain's callers are mesh services: ops/anyone too.
    cp.apply(
        service("catalog", "snap"),
        service("frontend", "snap"),
        service("anyone", "ops"),
        authz_doc("deny-admin", "snap", DENY_ADMIN),
    )
    assert _inbound(cp, "snap", "catalog", 15201)["authorization"] == {
        "default": "allow",
        "rules": [
            {
                "name": "snap/deny-admin[0]",
                "action": "deny",
                "principals": ["spiffe://example.org/ns/shop/sa/frontend", "spiffe://*/ns/ops/sa/*"],
                "paths": ["/admin/*", "/healthz"],
                "methods": ["GET", "POST"],
            }
        ],
    }
    assert "authorization" not in _inbound(cp, "snap", "frontend", 15202)

    def explain(source: str, path: str) -> dict[str, Any]:
        body = {"source": source, "destination": "snap/catalog", "path": path}
        return dict(cp.ok("POST", "/api/v1/explain", json=body))

    # The trust domain the control plane was started with is the identities'.
    denied = explain("ops/anyone", "/admin/x")
    assert denied["outcome"] == "denied"
    assert denied["authorization"]["principal"] == "spiffe://example.org/ns/ops/sa/anyone"
    assert denied["authorization"]["decided_by"] == "snap/deny-admin[0]"
    assert explain("snap/frontend", "/admin/x")["outcome"] == "forward"
    assert explain("ops/anyone", "/items")["authorization"]["decided_by"] == "default allow"


def test_apply_get_and_delete_through_the_cli(cp: ControlPlane, tmp_path: Path) -> None:
    def meshctl(*args: str) -> str:
        return cp.cli(*args, data_dir=tmp_path)

    docs = [service("catalog", "cli", mtls="PERMISSIVE"), authz_doc("deny-admin", "cli", DENY_ADMIN)]
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    assert meshctl("apply", "-f", str(path)).splitlines() == [
        "service/cli/catalog created",
        "authorizationpolicy/cli/deny-admin created",
    ]
    got = yaml.safe_load(meshctl("get", "authorizationpolicy", "cli/deny-admin", "-o", "yaml"))
    assert got["metadata"].pop("resourceVersion") == 1 and got == docs[1]
    assert yaml.safe_load(meshctl("get", "svc", "cli/catalog", "-o", "yaml"))["spec"]["mtls"] == "PERMISSIVE"
    table = meshctl("get", "authz", "-n", "cli")
    assert "deny-admin" in table and "DENY" in table and "/admin/*" in table
    assert "PERMISSIVE" in meshctl("get", "svc", "-n", "cli")
    again = tmp_path / "again.yaml"
    again.write_text(
        meshctl("get", "authz", "-n", "cli", "-o", "yaml") + meshctl("get", "svc", "-n", "cli", "-o", "yaml")
    )
    assert meshctl("apply", "-f", str(again)).splitlines() == [
        "authorizationpolicy/cli/deny-admin unchanged",
        "service/cli/catalog unchanged",
    ]
    cp.apply(service("x", "ops"))  # the caller explain is asked about
    explained = meshctl("explain", "--from", "ops/x", "--to", "cli/catalog", "--path", "/admin/a", "-X", "POST")
    lines = explained.splitlines()
    assert lines[0] == (
        "denied by the authorization of cli/catalog: cli/deny-admin[0]"
        " (no HTTPRoute attached to cli/catalog: the whole service)"
    )
    assert "  ✓ DENY cli/deny-admin[0]: matched" in lines
    assert "  -> DENY (cli/deny-admin[0])" in lines
    assert meshctl("delete", "-f", str(path)).splitlines() == [
        "authorizationpolicy/cli/deny-admin deleted",
        "service/cli/catalog deleted",
    ]


def test_the_mesh_default_deny_from_the_flag_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHCTL_AUTHZ_DEFAULT", "deny")
    assert Settings().authz_default == "deny"
    monkeypatch.setenv("MESHCTL_AUTHZ_DEFAULT", "maybe")
    with pytest.raises(ValueError, match="authz_default"):
        Settings()

    cp = ControlPlane(tmp_path, args=("--authz-default", "deny")).start()
    try:
        cp.apply(service("catalog", "dd"), service("web", "dd"))
        assert _inbound(cp, "dd", "catalog", 15301)["authorization"] == {"default": "deny", "rules": []}
        body = {"source": "dd/web", "destination": "dd/catalog"}
        out = cp.ok("POST", "/api/v1/explain", json=body)
        assert (out["outcome"], out["authorization"]["decided_by"]) == ("denied", "default deny")
        allow_web = {"targetRef": {"name": "catalog"}, "rules": [{"from": [{"source": {"services": ["web"]}}]}]}
        cp.apply(authz_doc("web", "dd", allow_web))
        assert cp.ok("POST", "/api/v1/explain", json=body)["outcome"] == "forward"
        assert _inbound(cp, "dd", "catalog", 15302)["authorization"] == {
            "default": "deny",
            "rules": [{"name": "dd/web[0]", "action": "allow", "services": ["web"]}],
        }
    finally:
        cp.stop()
