"""Zones end to end: `meshctl proxy --zone` registers its instance's zone
(the endpoint's `zone` label), and a caller's sidecar keeps its requests in its
own zone, failing over to the zone its TrafficPolicy names, with real sidecar
processes and apps."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import unused_port, wait_until
from meshctl.cli.gateway import parser as gateway_parser
from meshctl.cli.proxy import member_options
from meshctl.demo.backends import DemoBackend
from meshproc import ControlPlane, Sidecar, backends_seen, service


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[ControlPlane, list[Any]]]:
    """A control plane, and a list that the test fills with sidecars and apps to stop."""
    cp = ControlPlane(tmp_path).start()
    started: list[Any] = []
    yield cp, started
    for thing in reversed(started):
        thing.stop()
    cp.stop()


def test_meshctl_proxy_zone_is_the_registrations_zone(running: tuple[ControlPlane, list[Any]], tmp_path: Path) -> None:
    cp, started = running
    cp.apply(service("catalog"))
    app = DemoBackend("catalog-a").start()
    started.append(app)
    sidecar = Sidecar(cp, "catalog", app.port, tmp_path, cp.join_token("catalog"), args=("--zone", "us-east-1a"))
    started.append(sidecar.start())
    assert [s["zone"] for s in cp.sidecars()] == ["us-east-1a"]
    endpoints = cp.ok("GET", "/api/v1/services/default/catalog/endpoints")
    assert [e["labels"] for e in endpoints] == [{"zone": "us-east-1a"}]
    # `meshctl gateway` takes it too (a gateway is no endpoint, but its calls have a zone).
    args = ["--control-plane", cp.url, "--name", "edge", "--cert-dir", str(tmp_path), "--zone", "b"]
    assert member_options(gateway_parser().parse_args(args))["zone"] == "b"


def test_calls_stay_in_the_callers_zone_then_fail_over_in_the_policys_order(
    running: tuple[ControlPlane, list[Any]], tmp_path: Path
) -> None:
    """Needs the data plane of issue 11 (locality)."""
    cp, started = running
    policy = {
        "kind": "TrafficPolicy",
        "metadata": {"name": "catalog"},
        "spec": {
            "targetRef": {"name": "catalog"},
            "loadBalancer": {"localityLbSetting": {"failover": [{"from": "a", "to": "c"}]}},
            "outlierDetection": {"consecutiveGatewayErrors": 1, "baseEjectionTime": "30s"},
        },
    }
    cp.apply(service("catalog"), service("frontend"), policy)
    token = cp.join_token("catalog")
    sidecars = {}
    for zone in ("a", "b", "c"):
        app = DemoBackend(f"catalog-{zone}").start()
        started.append(app)
        sidecars[zone] = Sidecar(cp, "catalog", app.port, tmp_path, token, args=("--zone", zone)).start()
        started.append(sidecars[zone])
    port = unused_port()
    front = Sidecar(
        cp,
        "frontend",
        unused_port(),
        tmp_path,
        cp.join_token("frontend"),
        upstreams={"catalog": port},
        args=("--zone", "a"),
    )
    started.append(front.start())
    # Every instance is live in the caller's config: then all of its calls stay in zone a.
    wait_until(lambda: len(cp.ok("GET", "/api/v1/services/default/catalog/endpoints")) == 3, timeout=10)
    wait_until(lambda: set(backends_seen(port, 30)) == {"catalog-a"}, timeout=15, what="calls to stay in zone a")
    # Zone a's only instance dies without deregistering: calls go to zone c (the failover), not b.
    assert sidecars["a"].proc is not None
    sidecars["a"].proc.send_signal(signal.SIGKILL)
    sidecars["a"].proc.wait(10)
    wait_until(lambda: set(backends_seen(port, 30)) == {"catalog-c"}, timeout=20, what="calls to fail over to zone c")
