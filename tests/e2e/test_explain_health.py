"""Explain shows which endpoints are out right now, as the caller's sidecars
see them (issue 11): a real control plane, real sidecar processes and apps;
an instance whose app is down answers its callers with gateway errors, the
caller's sidecar ejects it, says so in its next heartbeat, and `explain`
(API and CLI) lists it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import unused_port, wait_until
from meshctl.demo.backends import DemoBackend
from meshproc import ControlPlane, Sidecar, backends_seen, service

CLUSTER = "out/default/catalog"


@pytest.fixture
def started() -> Iterator[list[Any]]:
    """Sidecars and apps the test starts, stopped after it (last first)."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.stop()


def test_explain_lists_the_endpoint_the_callers_sidecar_ejected(
    cp: ControlPlane, started: list[Any], tmp_path: Path
) -> None:
    policy = {
        "targetRef": {"name": "catalog"},
        "outlierDetection": {"consecutiveGatewayErrors": 1, "baseEjectionTime": "60s"},
    }
    cp.apply(
        service("frontend"),
        service("catalog"),
        {"kind": "TrafficPolicy", "metadata": {"name": "catalog"}, "spec": policy},
    )
    app = DemoBackend("catalog-live").start()
    started.append(app)
    token = cp.join_token("catalog")
    started.append(Sidecar(cp, "catalog", app.port, tmp_path, token).start())
    dead = Sidecar(cp, "catalog", unused_port(), tmp_path, token).start()  # nothing listens on its app port
    started.append(dead)
    port = unused_port()
    front = Sidecar(cp, "frontend", unused_port(), tmp_path, cp.join_token("frontend"), upstreams={"catalog": port})
    started.append(front.start())
    out = f"127.0.0.1:{dead.inbound_port}"
    wait_until(lambda: out in front.stats()["clusters"].get(CLUSTER, {}).get("endpoints", {}), what="both endpoints")

    def ejected() -> bool:
        backends_seen(port, 4)
        return bool(front.stats()["clusters"][CLUSTER]["endpoints"][out]["ejected"])

    wait_until(ejected, timeout=10, what="the caller's sidecar to eject the instance whose app is down")
    assert set(backends_seen(port, 20)) == {"catalog-live"}  # ejected: no request goes there now

    body = {"source": "frontend", "destination": "catalog"}

    def unhealthy() -> list[dict[str, Any]]:  # the sidecar reports it with its next heartbeat
        return list(cp.ok("POST", "/api/v1/explain", json=body)["backends"][0]["resilience"]["unhealthy"])

    (listed,) = wait_until(unhealthy, timeout=10, what="explain to list the ejected endpoint")
    assert (listed["endpoint"], listed["ejected_by"], listed["failing_health_checks_by"]) == (out, 1, 0)
    assert 0 < listed["ejected_for_ms"] <= 60_000
    assert listed["summary"].startswith("ejected by 1 of 1 sidecar of default/frontend (for ")
    cli = tmp_path / "cli"
    cli.mkdir()
    lines = cp.cli("explain", "--from", "frontend", "--to", "catalog", data_dir=cli).splitlines()
    prefix = f"    out of balancing: {out}: ejected by 1 of 1 sidecar of default/frontend (for "
    assert any(line.startswith(prefix) for line in lines), lines
    od = "    outlier detection: consecutive_gateway_errors 1, base_ejection_ms 60000; default: consecutive_5xx 5"
    assert any(line.startswith(od) for line in lines), lines
