"""Labels and annotations of every kind (issue 13, items 1 and 12), through a
real control plane: kept by apply and the REST bodies, shown by reads,
checked by Kubernetes' rules (422 at the entry), a change of labels alone a
new revision, recorded so that diff shows it and rollback restores it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from meshctl.control.kinds.labels import record, split
from meshctl.control.kinds.registry import KINDS
from meshproc import ControlPlane, module_control_plane

cp = module_control_plane()


def svc(name: str, ns: str, **metadata: Any) -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, **metadata},
        "spec": {"ports": [{"port": 80}]},
    }


def policy(ns: str, **metadata: Any) -> dict[str, Any]:
    meta = {"name": "p", "namespace": ns, **metadata}
    return {"kind": "TrafficPolicy", "metadata": meta, "spec": {"targetRef": {"name": "web"}}}


def apply(cp: ControlPlane, *docs: dict[str, Any], **params: Any) -> httpx.Response:
    return cp.call("POST", "/api/v1/apply", json={"documents": list(docs)}, params=params)


def actions(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [x["action"] for x in r.json()]


def errors(r: httpx.Response) -> dict[tuple[Any, ...], str]:
    assert r.status_code == 422, r.text
    return {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}


def latest(cp: ControlPlane) -> int:
    return int(cp.ok("GET", "/api/v1/revisions")[-1]["id"])


def test_every_kind_takes_and_shows_labels_and_annotations() -> None:
    for k in KINDS:
        for model in (k.create, k.update, k.public, k.table):
            assert {"labels", "annotations"} <= set(model.model_fields), f"{model.__name__} has no labels"
        # What revisions record is told from the spec by a key no spec can have.
        assert "metadata" not in {f.alias or n for n, f in k.spec.model_fields.items()}


def test_apply_keeps_labels_and_a_change_of_labels_alone_is_a_revision(cp: ControlPlane) -> None:
    labels, notes = {"app": "web", "example.com/tier": "front"}, {"owner": "team a, with spaces"}
    assert actions(apply(cp, svc("web", "lab", labels=labels, annotations=notes))) == ["created"]
    got = cp.ok("GET", "/api/v1/services/lab/web")
    assert (got["labels"], got["annotations"]) == (labels, notes)
    assert cp.ok("GET", "/api/v1/services?namespace=lab")[0]["labels"] == labels

    first = latest(cp)
    assert actions(apply(cp, svc("web", "lab", labels=labels, annotations=notes))) == ["unchanged"]
    assert latest(cp) == first
    relabelled = {"app": "web", "example.com/tier": "back"}
    assert actions(apply(cp, svc("web", "lab", labels=relabelled, annotations=notes))) == ["configured"]
    assert latest(cp) == first + 1
    got = cp.ok("GET", "/api/v1/services/lab/web")
    assert got["labels"] == relabelled and got["resource_version"] == 2

    # The revision log shows it, and rollback restores it.
    changes = cp.ok("GET", f"/api/v1/revisions/{first}/diff/{first + 1}")
    assert [(c["before"]["spec"]["metadata"]["labels"], c["after"]["spec"]["metadata"]["labels"]) for c in changes] == [
        (labels, relabelled)
    ]
    done = cp.ok("POST", f"/api/v1/revisions/{first}/rollback")
    assert done["recorded"] and len(done["changes"]) == 1
    assert cp.ok("GET", "/api/v1/services/lab/web")["labels"] == labels

    # A document is the whole resource: one without labels leaves none.
    assert actions(apply(cp, svc("web", "lab"))) == ["configured"]
    got = cp.ok("GET", "/api/v1/services/lab/web")
    assert (got["labels"], got["annotations"]) == ({}, {})


def test_rollback_to_a_revision_from_before_labels_takes_them_away(cp: ControlPlane) -> None:
    # Records written without labels (as every revision before they were kept) read back as none.
    assert actions(apply(cp, svc("web", "old"), policy("old"))) == ["created", "created"]
    plain = latest(cp)
    assert "metadata" not in cp.ok("GET", f"/api/v1/revisions/{plain}")["state"]["TrafficPolicy"]["old/p"]
    assert actions(apply(cp, svc("web", "old"), policy("old", labels={"team": "a"}))) == ["unchanged", "configured"]
    state = cp.ok("GET", f"/api/v1/revisions/{latest(cp)}")["state"]["TrafficPolicy"]["old/p"]
    assert state["metadata"] == {"labels": {"team": "a"}} and state["targetRef"]["name"] == "web"
    cp.ok("POST", f"/api/v1/revisions/{plain}/rollback")
    assert cp.ok("GET", "/api/v1/trafficpolicies/old/p")["labels"] == {}


def test_a_dry_run_shows_a_change_of_labels(cp: ControlPlane) -> None:
    assert actions(apply(cp, svc("web", "dry", labels={"app": "web"}))) == ["created"]
    r = apply(cp, svc("web", "dry", labels={"app": "shop"}), dry_run="true")
    [result] = r.json()
    assert result["action"] == "configured"
    assert (result["before"]["metadata"], result["after"]["metadata"]) == (
        {"labels": {"app": "web"}},
        {"labels": {"app": "shop"}},
    )
    assert cp.ok("GET", "/api/v1/services/dry/web")["labels"] == {"app": "web"}  # nothing written


@pytest.mark.parametrize(
    ("metadata", "loc", "words"),
    [
        ({"labels": {"-app": "x"}}, ("labels", "-app", "[key]"), "starts and ends with a letter or digit"),
        ({"labels": {"Example.com/app": "x"}}, ("labels", "Example.com/app", "[key]"), "DNS subdomain"),
        ({"labels": {"/app": "x"}}, ("labels", "/app", "[key]"), "prefix before '/' is empty"),
        ({"labels": {"a" * 64: "x"}}, ("labels", "a" * 64, "[key]"), "64 characters: at most 63"),
        ({"labels": {"app": "web shop"}}, ("labels", "app"), "letters, digits"),
        ({"labels": {"app": "v" * 64}}, ("labels", "app"), "64 characters: at most 63"),
        ({"labels": {"app": 1}}, ("labels", "app"), "valid string"),
        ({"annotations": {"a b": "x"}}, ("annotations", "a b", "[key]"), "letters, digits"),
        ({"annotations": {"big": "x" * (256 * 1024)}}, ("annotations",), "at most 262144 (256 KiB)"),
    ],
)
def test_a_bad_label_or_annotation_is_a_422_at_its_entry(
    cp: ControlPlane, metadata: dict[str, Any], loc: tuple[Any, ...], words: str
) -> None:
    before = latest(cp)
    found = errors(apply(cp, svc("web", "bad"), svc("api", "bad", **metadata)))
    at = ("body", "documents", 1, "metadata", *loc)
    assert set(found) == {at} and words in found[at], found
    assert latest(cp) == before and cp.call("GET", "/api/v1/services/bad/web").status_code == 404
    # The REST bodies check them alike.
    body = {"name": "api", "namespace": "bad", "ports": [], **metadata}
    assert set(errors(cp.call("POST", "/api/v1/services", json=body))) == {("body", *loc)}


def test_empty_values_and_prefixed_keys_are_labels(cp: ControlPlane) -> None:
    labels = {"canary": "", "app.kubernetes.io/name": "web", "a.b-c_d": "Z.9"}
    assert actions(apply(cp, svc("web", "fine", labels=labels))) == ["created"]
    assert cp.ok("GET", "/api/v1/services/fine/web")["labels"] == labels


def test_the_rest_bodies_keep_labels_and_an_update_without_them_keeps_them(cp: ControlPlane) -> None:
    cp.ok("POST", "/api/v1/services", json={"name": "web", "namespace": "rest", "ports": [{"port": 80}]})
    body = {"name": "p", "namespace": "rest", "labels": {"app": "web"}, "spec": {"targetRef": {"name": "web"}}}
    made = cp.ok("POST", "/api/v1/trafficpolicies", json=body)
    assert made["labels"] == {"app": "web"} and made["annotations"] == {}
    update = {"spec": {"targetRef": {"name": "web"}}, "resource_version": 1, "annotations": {"why": "test"}}
    changed = cp.ok("PUT", "/api/v1/trafficpolicies/rest/p", json=update)
    assert (changed["labels"], changed["annotations"], changed["resource_version"]) == (
        {"app": "web"},
        {"why": "test"},
        2,
    )
    cleared = cp.ok("PUT", "/api/v1/trafficpolicies/rest/p", json=update | {"labels": {}, "resource_version": 2})
    assert cleared["labels"] == {} and cleared["annotations"] == {"why": "test"}
    svc_update = {"ports": [{"port": 80}], "resource_version": 1, "labels": {"tier": "db"}}
    assert cp.ok("PUT", "/api/v1/services/rest/web", json=svc_update)["labels"] == {"tier": "db"}
    [last] = cp.ok("GET", f"/api/v1/revisions/{latest(cp) - 1}/diff/{latest(cp)}")
    assert last["after"]["spec"]["metadata"] == {"labels": {"tier": "db"}}


def test_records_split_back_into_spec_and_labels() -> None:
    spec = {"ports": [], "mtls": "STRICT"}
    assert record(spec, {}, None) is spec and split(spec) == (spec, {}, {})
    both = record(spec, {"a": "b"}, {"n": "x"})
    assert split(both) == (spec, {"a": "b"}, {"n": "x"})
    assert split(None) == (None, {}, {})
