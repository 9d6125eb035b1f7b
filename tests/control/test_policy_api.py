"""TrafficPolicy's resilience fields, RateLimitPolicy and sidecar zones
through a real control plane (uvicorn, SQLite file): what is stored, 422s
naming the field path (REST and apply), 409s for a second policy on a service,
references from clientRefs, zones on registrations and what snapshots carry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshproc import ControlPlane, module_control_plane

LIMITS = "/api/v1/ratelimitpolicies"
POLICIES = "/api/v1/trafficpolicies"


cp = module_control_plane("--trust-domain", "example.org")


def service(name: str, ns: str, protocol: str = "http") -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"port": 80, "protocol": protocol}]},
    }


def doc(kind: str, name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}


def pruned(value: Any) -> Any:
    """The API shows absent optional fields as nulls; the stored spec has none."""
    if isinstance(value, dict):
        return {k: pruned(v) for k, v in value.items() if v is not None}
    return [pruned(v) for v in value] if isinstance(value, list) else value


RESILIENT = {
    "targetRef": {"name": "catalog"},
    "loadBalancer": {
        "type": "PeakEWMA",
        "localityLbSetting": {"enabled": True, "failover": [{"from": "a", "to": "b"}], "minHealthPercent": 60},
    },
    "connectionPool": {"http": {"maxRetries": 4}},
    "outlierDetection": {"consecutive5xxErrors": 3, "baseEjectionTime": "15s", "maxEjectionPercent": 30},
    "healthCheck": {"http": {"path": "/healthz", "expectedStatuses": [200]}, "interval": "1s", "timeout": "250ms"},
    "retryBudget": {"retryRatio": 0.3, "minRetriesPerSecond": 2, "ttl": "5s"},
}
LIMIT = {
    "targetRef": {"kind": "Service", "name": "catalog"},
    "total": {"requestsPerSecond": 100, "burst": 10},
    "identity": {"requestsPerSecond": 10},
    "overrides": [{"requestsPerSecond": 50, "clientRefs": [{"kind": "Service", "name": "frontend"}]}],
}


def register(cp: ControlPlane, ns: str, svc: str, port: int, **extra: Any) -> Any:
    body = {"namespace": ns, "service": svc, "address": "127.0.0.1", "inbound_port": port, "app_port": 9000, **extra}
    return cp.call("PUT", "/api/v1/sidecars", json=body)


def snapshot(cp: ControlPlane, sidecar: int) -> dict[str, Any]:
    return dict(cp.ok("GET", f"/api/v1/sidecars/{sidecar}/snapshot", params={"wait": 0})["config"])


def test_traffic_policy_fields_are_stored_and_compiled(cp: ControlPlane) -> None:
    cp.apply(service("catalog", "tp"), service("frontend", "tp"))
    r = cp.call("POST", POLICIES, json={"name": "resilient", "namespace": "tp", "spec": RESILIENT})
    assert r.status_code == 201, r.text
    assert pruned(r.json()["spec"]) == RESILIENT
    catalog = register(cp, "tp", "catalog", 16001, zone="b").json()["id"]
    frontend = register(cp, "tp", "frontend", 16002, zone="a", upstreams={"catalog": 17001}).json()["id"]
    cluster = next(c for c in snapshot(cp, frontend)["clusters"] if c["name"] == "out/tp/catalog")
    assert cluster["endpoints"] == [{"address": "127.0.0.1:16001", "weight": 1, "zone": "b"}]
    assert {k: cluster[k] for k in ("lb", "locality", "circuit_breakers", "outlier_detection", "retry_budget")} == {
        "lb": "peak_ewma",
        "locality": {"zone": "a", "failover": ["b"], "min_healthy_percent": 60},
        "circuit_breakers": {"max_retries": 4},
        "outlier_detection": {"consecutive_5xx": 3, "base_ejection_ms": 15_000, "max_ejection_percent": 30},
        "retry_budget": {"percent": 30, "min_per_second": 2, "window_ms": 5000},
    }
    assert cluster["health_check"] == {
        "type": "http",
        "path": "/healthz",
        "expected_statuses": [200],
        "interval_ms": 1000,
        "timeout_ms": 250,
    }
    for sidecar in (catalog, frontend):
        cp.ok("DELETE", f"/api/v1/sidecars/{sidecar}")


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ({"healthCheck": {"tcp": {}, "interval": "1s", "timeout": "2s"}}, ["healthCheck", "timeout"]),
        ({"healthCheck": {"http": {"path": "/"}, "jitter": "1 s"}}, ["healthCheck", "jitter"]),
        ({"outlierDetection": {"consecutive5XxErrors": 1}}, ["outlierDetection", "consecutive5XxErrors"]),
        (
            {"outlierDetection": {"baseEjectionTime": "1m", "maxEjectionTime": "30s"}},
            ["outlierDetection", "maxEjectionTime"],
        ),
        ({"retryBudget": {"retryRatio": 20}}, ["retryBudget", "retryRatio"]),
        ({"loadBalancer": {"type": "EWMA"}}, ["loadBalancer", "type"]),
        (
            {"loadBalancer": {"localityLbSetting": {"failover": [{"from": "a"}]}}},
            ["loadBalancer", "localityLbSetting", "failover", 0, "to"],
        ),
        ({"connectionPool": {"http": {"maxRetries": 0}}}, ["connectionPool", "http", "maxRetries"]),
    ],
)
def test_bad_traffic_policies_are_422_naming_the_field(cp: ControlPlane, spec: dict[str, Any], loc: list[Any]) -> None:
    cp.apply(service("catalog", "bad"))
    full = {"targetRef": {"name": "catalog"}, **spec}
    r = cp.call("POST", POLICIES, json={"name": "p", "namespace": "bad", "spec": full})
    assert r.status_code == 422 and [e["loc"] for e in r.json()["detail"]] == [["body", "spec", *loc]], r.text
    r = cp.call("POST", "/api/v1/apply", json={"documents": [doc("TrafficPolicy", "p", "bad", full)]})
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "documents", 0, "spec", *loc]], r.text
    assert cp.call("GET", f"{POLICIES}/bad/p").status_code == 404


def test_rate_limit_policy_crud_exclusivity_and_references(cp: ControlPlane) -> None:
    cp.apply(service("catalog", "rl"), service("frontend", "rl"), service("pricing", "rl"))
    r = cp.call("POST", LIMITS, json={"name": "limits", "namespace": "rl", "spec": LIMIT})
    assert r.status_code == 201, r.text
    assert pruned(r.json()["spec"]) == LIMIT
    # One per service: a second one on catalog is a conflict, whoever it names as clients.
    second = cp.call("POST", LIMITS, json={"name": "more", "namespace": "rl", "spec": LIMIT})
    assert second.status_code == 409
    assert second.json()["detail"] == "service rl/catalog already has RateLimitPolicy rl/limits"
    # A service may be a client in several policies (only the target is held).
    on_pricing = {**LIMIT, "targetRef": {"name": "pricing"}}
    assert cp.call("POST", LIMITS, json={"name": "pricing", "namespace": "rl", "spec": on_pricing}).status_code == 201
    # Clients are references: they must exist, and cannot go while named.
    ghost = {**LIMIT, "overrides": [{"requestsPerSecond": 1, "clientRefs": [{"name": "ghost"}]}]}
    r = cp.call("PUT", f"{LIMITS}/rl/limits", json={"spec": ghost, "resource_version": 1})
    assert r.status_code == 422
    assert r.json()["detail"] == [
        {
            "loc": ["body", "spec", "overrides", 0, "clientRefs", 0, "name"],
            "msg": "service rl/ghost does not exist",
            "type": "reference",
        }
    ]
    r = cp.call("DELETE", "/api/v1/services/rl/frontend")
    assert r.status_code == 409
    assert r.json()["detail"] == "service rl/frontend is used by RateLimitPolicy rl/limits, RateLimitPolicy rl/pricing"
    twice = {
        **LIMIT,
        "overrides": [{"requestsPerSecond": 1, "clientRefs": [{"name": "frontend"}, {"name": "frontend"}]}],
    }
    r = cp.call("POST", "/api/v1/apply", json={"documents": [doc("RateLimitPolicy", "limits", "rl", twice)]})
    assert r.status_code == 422
    assert [(e["loc"], e["msg"]) for e in r.json()["detail"]] == [
        (
            ["body", "documents", 0, "spec", "overrides", 0, "clientRefs", 1, "name"],
            "service frontend is already a client of overrides[0]",
        )
    ]
    r = cp.call("POST", LIMITS, json={"name": "x", "namespace": "rl", "spec": {"targetRef": {"name": "frontend"}}})
    assert r.status_code == 422 and [e["loc"] for e in r.json()["detail"]] == [["body", "spec"]]

    # The target's inbound listener carries it; identities are the clients' SPIFFE IDs.
    sidecar = register(cp, "rl", "catalog", 16101).json()["id"]
    inbound = next(x for x in snapshot(cp, sidecar)["listeners"] if x["name"] == "inbound")
    assert inbound["rate_limit"] == {
        "total": {"rps": 100, "burst": 10},
        "per_identity": {"rps": 10},
        "overrides": [{"identities": ["spiffe://example.org/ns/rl/sa/frontend"], "rps": 50}],
    }
    cp.ok("DELETE", f"/api/v1/sidecars/{sidecar}")
    cp.ok("DELETE", f"{LIMITS}/rl/limits")
    cp.ok("DELETE", f"{LIMITS}/rl/pricing")
    assert cp.call("DELETE", "/api/v1/services/rl/frontend").status_code == 204
    kinds = [(x["action"], x["kind"]) for x in cp.ok("GET", "/api/v1/revisions")[-3:]]
    assert kinds == [("delete", "RateLimitPolicy"), ("delete", "RateLimitPolicy"), ("delete", "Service")]


def test_sidecar_zones_become_endpoint_labels(cp: ControlPlane) -> None:
    cp.apply(service("catalog", "zones"))
    r = register(cp, "zones", "catalog", 16201, zone="us-east-1a", labels={"version": "v1"})
    assert r.status_code == 200, r.text
    assert r.json()["zone"] == "us-east-1a"
    endpoints = cp.ok("GET", "/api/v1/services/zones/catalog/endpoints")
    assert [e["labels"] for e in endpoints] == [{"version": "v1", "zone": "us-east-1a"}]
    # A zone label says the same; one that differs from `zone`, or is no zone, is refused.
    assert register(cp, "zones", "catalog", 16202, labels={"zone": "b"}).json()["zone"] == "b"
    bad = register(cp, "zones", "catalog", 16203, zone="a", labels={"zone": "b"})
    assert bad.status_code == 422 and [e["loc"] for e in bad.json()["detail"]] == [["body", "zone"]]
    bad = register(cp, "zones", "catalog", 16203, zone="a b")
    assert bad.status_code == 422 and [e["loc"] for e in bad.json()["detail"]] == [["body", "zone"]]
    zones = {s["inbound_port"]: s["zone"] for s in cp.sidecars() if s["namespace"] == "zones"}
    assert zones == {16201: "us-east-1a", 16202: "b"}


def test_rate_limit_policies_through_the_cli(cp: ControlPlane, tmp_path: Path) -> None:
    def meshctl(*args: str) -> str:
        return cp.cli(*args, data_dir=tmp_path)

    docs = [service("catalog", "cli"), service("frontend", "cli"), doc("RateLimitPolicy", "limits", "cli", LIMIT)]
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    assert meshctl("apply", "-f", str(path)).splitlines()[-1] == "ratelimitpolicy/cli/limits created"
    shown = yaml.safe_load(meshctl("get", "ratelimitpolicy", "cli/limits", "-o", "yaml"))
    assert shown["metadata"].pop("resourceVersion") == 1 and shown == docs[2]
    table = meshctl("get", "ratelimit", "-n", "cli")
    assert "limits" in table and "100/s (burst 10)" in table and "frontend: 50/s" in table
    assert meshctl("delete", "-f", str(path)).splitlines()[0] == "ratelimitpolicy/cli/limits deleted"
