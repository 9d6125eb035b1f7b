"""The control plane's CLI verbs as a user runs them: `meshctl apply/get/
delete/history/diff/rollback/explain/status` as real processes against a
real control plane. Each test works in its own namespace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from helpers import unused_port, wait_until
from meshproc import ControlPlane, Run, module_control_plane, module_meshctl, ok

cp = module_control_plane()
meshctl = module_meshctl()


def write(path: Path, *docs: dict[str, Any], extra: str = "") -> Path:
    path.write_text(extra + yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True))
    return path


def svc(name: str, ns: str, port: int = 80, protocol: str = "http") -> dict[str, Any]:
    return {
        "apiVersion": "meshctl/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"port": port, "protocol": protocol}]},
    }


def canary(ns: str, stable: int = 90, canary: int = 10, backend: str = "catalog") -> dict[str, Any]:
    return {
        "kind": "HTTPRoute",
        "metadata": {"name": "canary", "namespace": ns},
        "spec": {
            "parentRefs": [{"name": "catalog"}],
            "rules": [
                {
                    "matches": [{"headers": [{"name": "x-canary", "value": "true"}]}],
                    "backendRefs": [{"name": "catalog", "subset": {"version": "v2"}}],
                },
                {
                    "backendRefs": [
                        {"name": backend, "weight": stable, "subset": {"version": "v1"}},
                        {"name": backend, "weight": canary, "subset": {"version": "v2"}},
                    ]
                },
            ],
        },
    }


def policy(ns: str) -> dict[str, Any]:
    return {
        "kind": "TrafficPolicy",
        "metadata": {"name": "catalog-lb", "namespace": ns},
        "spec": {
            "targetRef": {"name": "catalog"},
            "loadBalancer": {"type": "RingHash", "hashOn": {"header": "x-user"}},
        },
    }


def tcp_route(ns: str) -> dict[str, Any]:
    return {
        "kind": "TCPRoute",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"parentRefs": [{"name": "db"}], "rules": [{"backendRefs": [{"name": "db"}]}]},
    }


def mesh_docs(ns: str, stable: int = 90, canary_weight: int = 10) -> list[dict[str, Any]]:
    return [
        svc("catalog", ns),
        svc("web", ns),
        svc("db", ns, 5432, "tcp"),
        canary(ns, stable, canary_weight),
        policy(ns),
        tcp_route(ns),
    ]


def test_apply_is_idempotent_and_get_round_trips(meshctl: Run, tmp_path: Path) -> None:
    # An empty document between separators is skipped; apiVersion is ignored.
    path = write(tmp_path / "mesh.yaml", *mesh_docs("shop"), extra="---\n")
    assert ok(meshctl("apply", "-f", str(path))).splitlines() == [
        "service/shop/catalog created",
        "service/shop/web created",
        "service/shop/db created",
        "httproute/shop/canary created",
        "trafficpolicy/shop/catalog-lb created",
        "tcproute/shop/db created",
    ]
    again = ok(meshctl("apply", "-f", str(path))).splitlines()
    assert len(again) == 6 and all(line.endswith(" unchanged") for line in again)

    write(path, *mesh_docs("shop", 50, 50))
    dry = ok(meshctl("apply", "-f", str(path), "--dry-run")).splitlines()
    assert dry[3] == "httproute/shop/canary configured (dry run)"
    assert "90%" in ok(meshctl("get", "httproute", "canary", "-n", "shop"))
    changed = ok(meshctl("apply", "-f", str(path))).splitlines()
    assert [line for line in changed if not line.endswith("unchanged")] == ["httproute/shop/canary configured"]

    routes = ok(meshctl("get", "httproutes", "-n", "shop"))
    assert "NAMESPACE" in routes and "canary" in routes
    assert "x-canary=true -> catalog{version=v2}" in routes
    assert "catalog{version=v1} 50%, catalog{version=v2} 50%" in routes
    services = ok(meshctl("get", "svc", "-n", "shop"))
    assert "http:80/http" in services and "http:5432/tcp" in services
    assert "RingHash (header x-user)" in ok(meshctl("get", "trafficpolicies", "-n", "shop"))
    assert "db" in ok(meshctl("get", "tcproute", "shop/db"))

    # One resource as YAML and JSON: the document shape apply takes.
    doc = yaml.safe_load(ok(meshctl("get", "httproute", "shop/canary", "-o", "yaml")))
    assert doc["kind"] == "HTTPRoute" and doc["metadata"] == {
        "name": "canary",
        "namespace": "shop",
        "resourceVersion": 2,  # created, then configured once above
    }
    assert [b["weight"] for b in doc["spec"]["rules"][1]["backendRefs"]] == [50, 50]
    assert json.loads(ok(meshctl("get", "httproute", "canary", "-n", "shop", "-o", "json"))) == doc

    # Lists: multi-document YAML and a JSON list, both re-appliable with nothing changed.
    listed = tmp_path / "listed.yaml"
    listed.write_text(ok(meshctl("get", "svc", "-n", "shop", "-o", "yaml")))
    assert len([d for d in yaml.safe_load_all(listed.read_text()) if d]) == 3
    single = tmp_path / "single.yaml"
    single.write_text(ok(meshctl("get", "httproute", "canary", "-n", "shop", "-o", "yaml")))
    as_json = tmp_path / "policies.json"
    as_json.write_text(ok(meshctl("get", "trafficpolicy", "-n", "shop", "-o", "json")))
    reapplied = ok(meshctl("apply", "-f", str(listed), "-f", str(single), "-f", str(as_json))).splitlines()
    assert len(reapplied) == 5 and all(line.endswith(" unchanged") for line in reapplied), reapplied

    # stdin works too.
    assert ok(meshctl("apply", "-f", "-", stdin=single.read_text())) == "httproute/shop/canary unchanged\n"


def test_a_dangling_reference_is_a_422_with_its_field_path_and_nothing_is_written(meshctl: Run, tmp_path: Path) -> None:
    history_before = json.loads(ok(meshctl("history", "-o", "json")))
    path = write(tmp_path / "bad.yaml", svc("catalog", "bad"), canary("bad", backend="ghost"))
    out = meshctl("apply", "-f", str(path))
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert lines[0] == "error: 422 invalid input"
    # Indices count from 0 in the field path and in the file alike.
    assert "documents[1].spec.rules[1].backendRefs[0].name: service bad/ghost does not exist" in lines[1]
    assert lines[1].endswith(f"(HTTPRoute bad/canary, {path}[1])")

    # All or nothing: the valid service beside it was not created either.
    missing = meshctl("get", "svc", "catalog", "-n", "bad")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: 404 service bad/catalog not found"
    assert json.loads(ok(meshctl("history", "-o", "json"))) == history_before


def test_file_errors_exit_2_naming_the_file(meshctl: Run, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Service\nmetadata: {name: x\n")
    out = meshctl("apply", "-f", str(broken))
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: {broken}: invalid YAML at line 3")

    out = meshctl("apply", "-f", str(tmp_path / "absent.yaml"))
    assert out.returncode == 2 and "cannot read" in out.stderr and "absent.yaml" in out.stderr

    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("---\n---\njust text\n")
    out = meshctl("apply", "-f", str(scalar))
    assert out.returncode == 2 and f"{scalar}[1]: expected a mapping" in out.stderr

    assert meshctl("get", "gizmos").returncode == 2


def test_tokens_401_403_and_the_default_token_file(meshctl: Run, cp: ControlPlane, tmp_path: Path) -> None:
    path = write(tmp_path / "svc.yaml", svc("lonely", "auth"))
    out = meshctl("apply", "-f", str(path), token=None)
    assert out.returncode == 1
    assert out.stderr.strip() == "error: 401 a valid bearer token is required (give --token or --token-file)"

    out = meshctl("apply", "-f", str(path), "--token-file", str(cp.data_dir / "reader.token"), token=None)
    assert out.returncode == 1
    assert out.stderr.startswith("error: 403 a reader token cannot write")
    # The reader may read, though.
    ok(meshctl("get", "services", token="reader"))

    # Flags beat the environment; the data dir's admin.token is the default.
    out = meshctl("get", "svc", "--token", "nope", token="admin")
    assert out.returncode == 1 and "the token from --token was refused" in out.stderr
    created = meshctl("apply", "-f", str(path), token=None, MESHCTL_DATA_DIR=str(cp.data_dir))
    assert ok(created) == "service/auth/lonely created\n"


def test_an_unreachable_server_is_a_message(meshctl: Run) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    out = meshctl("get", "svc", "--server", url)
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: cannot reach the control plane at {url}: ")


def test_history_diff_and_rollback_restore_the_earlier_spec(meshctl: Run, tmp_path: Path) -> None:
    path = write(tmp_path / "mesh.yaml", svc("catalog", "rb"), canary("rb"))
    ok(meshctl("apply", "-f", str(path)))
    before = json.loads(ok(meshctl("history", "-o", "json")))[-1]["id"]
    write(path, svc("catalog", "rb"), canary("rb", 50, 50))
    ok(meshctl("apply", "-f", str(path)))
    after = json.loads(ok(meshctl("history", "-o", "json")))[-1]["id"]

    table = ok(meshctl("history"))
    assert "rb/canary" in table and "apply" in table

    diff = ok(meshctl("diff", str(before), str(after)))
    assert diff.splitlines()[0] == "changed httproute/rb/canary"
    assert f"--- revision {before}" in diff and f"+++ revision {after}" in diff
    assert "-    weight: 90" in diff and "+    weight: 50" in diff
    assert "-    weight: 10" in diff and "+    weight: 50" in diff
    assert ok(meshctl("diff", str(after))) == f"no changes from revision {after} to {after}\n"

    out = ok(meshctl("rollback", str(before))).splitlines()
    assert out[0] == "httproute/rb/canary configured"
    assert out[1] == f"rolled back to revision {before}: 1 change, recorded as revision {after + 1}"
    doc = yaml.safe_load(ok(meshctl("get", "httproute", "rb/canary", "-o", "yaml")))
    assert [b["weight"] for b in doc["spec"]["rules"][1]["backendRefs"]] == [90, 10]
    assert ok(meshctl("apply", "-f", str(tmp_path / "mesh.yaml"))).count("configured") == 1

    missing = meshctl("rollback", "999999")
    assert missing.returncode == 1 and "404 revision 999999 not found" in missing.stderr


def test_explain_names_the_rule_that_matched(meshctl: Run, cp: ControlPlane) -> None:
    cp.apply(*mesh_docs("ex"))
    out = ok(meshctl("explain", "--from", "ex/web", "--to", "ex/catalog", "-H", "X-Canary: true", "--path", "/a?b=1"))
    lines = out.splitlines()
    assert lines[0] == "ex/canary/rule0/match0 matched"
    assert "  ✓ ex/canary/rule0/match0: matched" in lines
    assert "  ✗ ex/canary/rule1/match0: not tried: ex/canary/rule0/match0 matched first" in lines
    assert "  ex/catalog{version=v2}  100% (weight 1)  RingHash, policy ex/catalog-lb" in lines

    out = ok(meshctl("explain", "--from", "ex/web", "--host", "catalog.ex"))
    assert "✗ ex/canary/rule0/match0: header x-canary is absent, not 'true'" in out
    assert "ex/catalog{version=v1}  90% (weight 90)" in out and "ex/catalog{version=v2}  10% (weight 10)" in out
    assert "endpoints: none live" in out

    as_json = json.loads(ok(meshctl("explain", "--from", "ex/web", "--to", "ex/db", "-o", "json")))
    assert as_json["outcome"] == "forward" and as_json["route"] == "ex/db"
    assert meshctl("explain", "--from", "ex/web", "--to", "ex/catalog", "-H", "no-colon").returncode == 2


def test_status_shows_each_sidecar_in_sync_or_not(meshctl: Run, cp: ControlPlane) -> None:
    cp.apply(svc("api", "st"))
    ids = []
    for port in (15101, 15102):
        body = {"namespace": "st", "service": "api", "address": "127.0.0.1", "inbound_port": port, "app_port": 9000}
        ids.append(cp.ok("PUT", "/api/v1/sidecars", json=body)["id"])
    generation = cp.sidecars()[0]["mesh_generation"]
    cp.ok("POST", f"/api/v1/sidecars/{ids[0]}/status", json={"version": generation})
    cp.ok("POST", f"/api/v1/sidecars/{ids[1]}/status", json={"version": generation, "error": "listeners[0]: bad"})
    # ACKs are written in batches (a fraction of a second later).
    wait_until(lambda: any(s["acked_version"] == generation for s in cp.sidecars()), timeout=10, what="the ACK")

    out = meshctl("status", "-n", "st")
    assert out.returncode == 1  # a sidecar NACKs the current generation
    assert f"error: sidecar {ids[1]} (st/api) refused generation {generation}: listeners[0]: bad" in out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"mesh generation {generation}, revision ")
    assert lines[0].endswith(": 2 sidecars, 1 in sync, 1 NACK")
    (synced,) = [line for line in lines if "127.0.0.1:15101" in line]
    (refused,) = [line for line in lines if "127.0.0.1:15102" in line]
    assert "st/api" in synced and "in sync" in synced and f" {generation} " in synced
    assert f"NACK v{generation}" in refused and "listeners[0]: bad" in refused

    assert "127.0.0.1:15101" in ok(meshctl("get", "sidecars", "api", "-n", "st"))
    assert "127.0.0.1:15102" in ok(meshctl("get", "endpoints", "st/api"))
    assert ok(meshctl("status", "-n", "nowhere")).endswith(": no sidecars registered in namespace nowhere\n")


def test_delete_by_name_and_by_file(meshctl: Run, tmp_path: Path) -> None:
    path = write(tmp_path / "mesh.yaml", *mesh_docs("del"))
    ok(meshctl("apply", "-f", str(path)))

    used = meshctl("delete", "svc", "catalog", "-n", "del")
    assert used.returncode == 1
    assert "error: 409 service del/catalog is used by HTTPRoute del/canary, TrafficPolicy del/catalog-lb" in used.stderr

    assert ok(meshctl("delete", "httproute", "del/canary")) == "httproute/del/canary deleted\n"
    assert meshctl("get", "httproute", "canary", "-n", "del").returncode == 1
    gone = meshctl("delete", "httproute/del/canary")
    assert gone.returncode == 1 and "404 HTTPRoute del/canary not found" in gone.stderr

    # Routes and policies go before the services they use; the route already gone is reported, not fatal.
    out = ok(meshctl("delete", "-f", str(path))).splitlines()
    assert out == [
        "trafficpolicy/del/catalog-lb deleted",
        "tcproute/del/db deleted",
        "httproute/del/canary not found, skipped",
        "service/del/catalog deleted",
        "service/del/web deleted",
        "service/del/db deleted",
    ]
    empty = ok(meshctl("get", "svc", "-n", "del"))
    assert empty == ""


def test_tap_errors_are_clear_and_an_idle_tap_ends_at_its_time(meshctl: Run, cp: ControlPlane) -> None:
    out = meshctl("tap", "nope", "-n", "tapns")
    assert out.returncode == 1 and "service tapns/nope not found" in out.stderr
    cp.apply(svc("api", "tapns"))
    out = meshctl("tap", "tapns/api", token="reader")
    assert out.returncode == 1 and "tap needs the admin token, not a reader token" in out.stderr
    out = meshctl("tap", "tapns/api", "--status", "42")
    assert out.returncode == 1 and "query.status: Input should be greater than or equal to 100" in out.stderr
    out = meshctl("tap", "tapns/api", "--seconds", "1")
    assert out.returncode == 0 and out.stdout == ""
    assert "tap ended: the time was up; 0 requests" in out.stderr
