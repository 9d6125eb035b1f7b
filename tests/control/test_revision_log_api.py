"""The revision log through a real control plane (uvicorn, SQLite file): every
write records who made it (the token's name) and why (`?message=`, at most
500 characters), a rollback with nothing to undo records nothing and says so,
and a dry run of apply (`?dry_run=true`) reports each spec before and after
as the server would store it, writing nothing."""

from __future__ import annotations

from typing import Any

import pytest

from meshproc import ControlPlane, http_route, module_control_plane, service

cp = module_control_plane()


def revisions(cp: ControlPlane) -> list[dict[str, Any]]:
    return list(cp.ok("GET", "/api/v1/revisions"))


def in_ns(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    return {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}


def pruned(value: Any) -> Any:
    """Without nulls, as revisions record specs."""
    if isinstance(value, dict):
        return {k: pruned(v) for k, v in value.items() if v is not None}
    return [pruned(v) for v in value] if isinstance(value, list) else value


def split(namespace: str, *weights: int) -> dict[str, Any]:
    backends = [{"name": name, "weight": w} for name, w in zip(("v1", "v2"), weights, strict=False)]
    return in_ns(http_route("split", "web", {"backendRefs": backends}), namespace)


def test_every_write_records_its_author_and_message(cp: ControlPlane) -> None:
    docs = [in_ns(service(name), "au") for name in ("web", "v1", "v2")]
    cp.ok("POST", "/api/v1/apply", params={"message": "first cut"}, json={"documents": docs})
    cp.ok("POST", "/api/v1/apply", json={"documents": [split("au", 100)]})  # no message
    body = {"spec": split("au", 90, 10)["spec"], "resource_version": 1}
    cp.ok("PUT", "/api/v1/httproutes/au/split", params={"message": "canary 10%"}, json=body)
    cp.ok("DELETE", "/api/v1/httproutes/au/split", params={"message": "canary over"})
    ports = {"ports": [{"port": 81}], "resource_version": 1}
    cp.ok("PUT", "/api/v1/services/au/v2", params={"message": "port 81"}, json=ports)

    log = revisions(cp)[-5:]
    assert [(r["action"], r["name"], r["author"], r["message"]) for r in log] == [
        ("apply", "3 resources", "admin", "first cut"),
        ("apply", "au/split", "admin", None),
        ("update", "au/split", "admin", "canary 10%"),
        ("delete", "au/split", "admin", "canary over"),
        ("update", "au/v2", "admin", "port 81"),
    ]
    # The detail and the rollback's answer carry them too.
    detail = cp.ok("GET", f"/api/v1/revisions/{log[2]['id']}")
    assert (detail["author"], detail["message"]) == ("admin", "canary 10%")
    back = cp.ok("POST", f"/api/v1/revisions/{log[2]['id']}/rollback", params={"message": "undo"})
    assert (back["action"], back["author"], back["message"], back["recorded"]) == ("rollback", "admin", "undo", True)
    assert revisions(cp)[-1]["message"] == "undo"


def test_a_message_over_500_characters_is_a_422_and_nothing_is_written(cp: ControlPlane) -> None:
    before = revisions(cp)
    r = cp.call("POST", "/api/v1/apply", params={"message": "x" * 501}, json={"documents": [service("long")]})
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [["query", "message"]]
    assert revisions(cp) == before
    assert cp.call("GET", "/api/v1/services/default/long").status_code == 404
    # A reader may not write, message or not.
    r = cp.call("POST", "/api/v1/apply", role="reader", params={"message": "hi"}, json={"documents": [service("long")]})
    assert r.status_code == 403


def test_a_rollback_with_nothing_to_undo_records_nothing_and_says_so(cp: ControlPlane) -> None:
    cp.apply(in_ns(service("same"), "rb0"))
    log = revisions(cp)
    latest = log[-1]["id"]
    r = cp.ok("POST", f"/api/v1/revisions/{latest}/rollback", params={"message": "no-op"})
    assert (r["recorded"], r["changes"], r["id"]) == (False, [], latest)
    assert revisions(cp) == log

    cp.apply(in_ns(service("other"), "rb0"))
    r = cp.ok("POST", f"/api/v1/revisions/{latest}/rollback")
    assert r["recorded"] is True and r["id"] == latest + 2
    assert [(c["kind"], c["name"], c["change"]) for c in r["changes"]] == [("Service", "rb0/other", "removed")]
    assert r["changes"][0]["before"]["spec"]["ports"][0]["port"] == 80
    assert revisions(cp)[-1]["id"] == r["id"]


def test_a_dry_run_reports_each_spec_before_and_after_and_writes_nothing(cp: ControlPlane) -> None:
    docs = [in_ns(service(name), "dr") for name in ("web", "v1", "v2")]
    cp.apply(*docs, split("dr", 100))
    log = revisions(cp)
    stored = cp.ok("GET", "/api/v1/httproutes/dr/split")

    new = in_ns(service("v3"), "dr")
    results = cp.ok(
        "POST", "/api/v1/apply", params={"dry_run": "true"}, json={"documents": [*docs, split("dr", 90, 10), new]}
    )
    by_name = {r["name"]: r for r in results}
    # Unchanged ones carry no specs; the others carry both sides, the server's defaults filled in.
    assert by_name["dr/web"] == {"kind": "Service", "name": "dr/web", "action": "unchanged"}
    route = by_name["dr/split"]
    assert route["action"] == "configured" and route["before"] == pruned(stored["spec"])
    assert [b["weight"] for b in route["before"]["rules"][0]["backendRefs"]] == [100]
    assert [b["weight"] for b in route["after"]["rules"][0]["backendRefs"]] == [90, 10]
    created = by_name["dr/v3"]
    assert created["action"] == "created" and "before" not in created
    assert created["after"] == {"ports": [{"name": "http", "port": 80, "protocol": "http"}], "mtls": "STRICT"}

    assert revisions(cp) == log
    assert cp.ok("GET", "/api/v1/httproutes/dr/split") == stored
    assert cp.call("GET", "/api/v1/services/dr/v3").status_code == 404


@pytest.mark.parametrize("where", ["query", "body"])
def test_a_dry_run_with_a_dangling_reference_is_the_apply_s_422(cp: ControlPlane, where: str) -> None:
    body: dict[str, Any] = {"documents": [in_ns(http_route("r", "nowhere", {"backendRefs": [{"name": "x"}]}), "dd")]}
    params = {"dry_run": "true"} if where == "query" else {}
    if where == "body":
        body["dry_run"] = True
    r = cp.call("POST", "/api/v1/apply", params=params, json=body)
    assert r.status_code == 422, r.text
    assert ["body", "documents", 0, "spec", "parentRefs", 0, "name"] in [e["loc"] for e in r.json()["detail"]]
