"""The sidecar's tap relay (``meshctl.sidecar.tap``) against a real control
plane. The data plane here is a stand-in that speaks the extension's tap
contract (``DataPlane.tap(...) -> Tap`` with ``poll``/``close``/``dropped``,
events as literal dicts of its shape), so the relay is tested without a
data-plane build; tests/e2e/test_tap.py runs it with the real one."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers import unused_port, wait_until
from meshctl.client import ApiClient
from meshctl.sidecar.tap import TapRelay
from meshproc import ControlPlane, module_control_plane, service

cp = module_control_plane()


class ContractTap:
    """A tap as the contract describes it: events come from `feed`, poll returns early."""

    def __init__(self, filters: dict[str, Any]):
        self.filters = filters
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.closed = threading.Event()
        self.dropped = 0

    def poll(self, timeout: float = 1.0, max_events: int = 100) -> list[dict[str, Any]]:
        try:
            out = [self.events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(out) < max_events and not self.events.empty():
            out.append(self.events.get_nowait())
        return out

    def close(self) -> None:
        self.closed.set()


class ContractDataPlane:
    def __init__(self) -> None:
        self.taps: list[ContractTap] = []

    def tap(self, **filters: Any) -> ContractTap:
        t = ContractTap(filters)
        self.taps.append(t)
        return t


def event(path: str, **more: Any) -> dict[str, Any]:
    return {
        "ts": 1_700_000_000.0,
        "direction": "inbound",
        "listener": "inbound",
        "route": "pricing",
        "method": "GET",
        "authority": "pricing",
        "path": path,
        "status": 200,
        "grpc_status": None,
        "duration_ms": 2.5,
        "source": "spiffe://cluster.local/ns/default/sa/frontend",
        "client": "127.0.0.1:40000",
        "upstream": "127.0.0.1:8080",
        "trace_id": "",
        "request_id": "",
        "flags": [],
        "request_headers": {"user-agent": "curl/8", "authorization": "Bearer hunter2"},
        **more,
    }


@pytest.fixture
def relay(cp: ControlPlane) -> Iterator[tuple[TapRelay, ContractDataPlane]]:
    cp.apply(service("pricing"))
    token = cp.join_token("pricing")
    body = {"service": "pricing", "address": "127.0.0.1", "inbound_port": unused_port(), "app_port": unused_port()}
    r = httpx.put(f"{cp.url}/api/v1/sidecars", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    sidecar_id, dataplane = r.json()["id"], ContractDataPlane()
    relay = TapRelay(ApiClient(cp.url, token), sidecar_id=lambda: sidecar_id, dataplane=lambda: dataplane)
    relay.start()
    yield relay, dataplane
    relay.stop()


def read_tap(cp: ControlPlane, query: str, out: list[dict[str, Any]]) -> threading.Thread:
    def read() -> None:
        with httpx.stream("GET", f"{cp.url}/api/v1/tap/default/pricing?{query}", headers=cp.admin, timeout=60) as r:
            out.extend(json.loads(line) for line in r.iter_lines() if line.strip())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_the_relay_taps_with_the_sessions_filters_and_closes_the_tap_at_the_limit(
    cp: ControlPlane, relay: tuple[TapRelay, ContractDataPlane]
) -> None:
    _, dataplane = relay
    lines: list[dict[str, Any]] = []
    reader = read_tap(cp, "method=GET&path=/api&status=200&limit=3&seconds=60", lines)
    wait_until(lambda: dataplane.taps, timeout=30, what="the sidecar to open a tap")
    [tap] = dataplane.taps
    assert tap.filters["method"] == "GET" and tap.filters["path_prefix"] == "/api" and tap.filters["status"] == 200
    tap.dropped = 2  # the data plane's queue overflowed: the relay says so with its next batch
    for i in range(5):
        tap.events.put(event(f"/api/{i}"))
    reader.join(30)
    assert not reader.is_alive(), "the tap did not end at its limit"
    assert [x.get("path") for x in lines[:-1]] == ["/api/0", "/api/1", "/api/2"]
    assert all(x["request_headers"] == {"user-agent": "curl/8"} for x in lines[:-1])
    assert lines[-1]["end"]["reason"] == "limit" and lines[-1]["end"]["dropped"] >= 2
    assert tap.closed.wait(10), "the sidecar kept its tap open after the session ended"


def test_stopping_the_sidecar_closes_its_taps(cp: ControlPlane, relay: tuple[TapRelay, ContractDataPlane]) -> None:
    tap_relay, dataplane = relay
    lines: list[dict[str, Any]] = []
    read_tap(cp, "seconds=5", lines)
    wait_until(lambda: dataplane.taps, timeout=30, what="the sidecar to open a tap")
    tap_relay.stop()
    assert dataplane.taps[0].closed.is_set(), "stop() returned with a tap open"
