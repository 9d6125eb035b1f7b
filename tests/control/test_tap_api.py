"""Tap through a real control plane (uvicorn, SQLite file): who may tap (admin
only), an unknown service, bad filters, and the relay protocol as a sidecar
speaks it (the long-poll for sessions, POSTed batches, 410 once the session
ended): events pass the filters, headers outside the allow-list are dropped,
the stream ends at its limit, at its time, or when the operator goes away."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from helpers import unused_port, wait_until
from meshctl.control.tap import MAX_SESSIONS_PER_SERVICE
from meshproc import ControlPlane, module_control_plane, service

cp = module_control_plane()


@pytest.fixture(scope="module")
def pricing(cp: ControlPlane) -> dict[str, Any]:
    """A registered sidecar of default/pricing: its id and its join token's headers."""
    cp.apply(service("pricing"), service("frontend"))
    token = cp.join_token("pricing")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"service": "pricing", "address": "127.0.0.1", "inbound_port": unused_port(), "app_port": unused_port()}
    r = httpx.put(f"{cp.url}/api/v1/sidecars", json=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return {"id": r.json()["id"], "headers": headers}


@dataclass
class Stream:
    """`GET /api/v1/tap/...` read on a thread: its status and lines as they come."""

    url: str
    headers: dict[str, str]
    status: int | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Stream:
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=30) as r:
                self.status = r.status_code
                for line in r.iter_lines():
                    if line.strip():
                        self.lines.append(json.loads(line))
        finally:
            self.done.set()

    @property
    def events(self) -> list[dict[str, Any]]:
        return [x for x in self.lines if "end" not in x]

    @property
    def end(self) -> dict[str, Any] | None:
        return next((x["end"] for x in self.lines if "end" in x), None)


def tap(cp: ControlPlane, query: str = "", svc: str = "pricing") -> Stream:
    return Stream(f"{cp.url}/api/v1/tap/default/{svc}?{query}", cp.admin).start()


def sessions(cp: ControlPlane, sidecar: dict[str, Any], known: str = "", wait: float = 20) -> httpx.Response:
    return httpx.get(
        f"{cp.url}/api/v1/sidecars/{sidecar['id']}/tap",
        params={"known": known, "wait": wait},
        headers=sidecar["headers"],
        timeout=wait + 10,
    )


def post(
    cp: ControlPlane, sidecar: dict[str, Any], session: str, events: list[dict[str, Any]], dropped: int = 0
) -> int:
    r = httpx.post(
        f"{cp.url}/api/v1/sidecars/{sidecar['id']}/tap/{session}",
        json={"events": events, "dropped": dropped},
        headers=sidecar["headers"],
        timeout=10,
    )
    return r.status_code


def event(path: str, status: int = 200, **more: Any) -> dict[str, Any]:
    """A tap event as the data plane makes it (the contract's shape)."""
    return {
        "ts": 1_700_000_000.5,
        "direction": "inbound",
        "listener": "inbound",
        "route": "",
        "method": "GET",
        "authority": "pricing",
        "path": path,
        "status": status,
        "grpc_status": None,
        "duration_ms": 1.25,
        "source": "spiffe://cluster.local/ns/default/sa/frontend",
        "client": "127.0.0.1:40000",
        "upstream": "127.0.0.1:8080",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "request_id": "r-1",
        "flags": [],
        "request_headers": {"user-agent": "curl/8", "accept": "*/*"},
        **more,
    }


# === who may tap, and bad input ===


def test_tap_needs_the_admin_token(cp: ControlPlane, pricing: dict[str, Any]) -> None:
    url = f"{cp.url}/api/v1/tap/default/pricing?seconds=1"
    assert httpx.get(url).status_code == 401
    r = httpx.get(url, headers=cp.reader)
    assert r.status_code == 403 and "admin token" in r.json()["detail"]
    assert httpx.get(url, headers=pricing["headers"]).status_code == 403  # a join token of that very service


def test_tap_of_an_unknown_service_is_a_404_naming_it(cp: ControlPlane) -> None:
    r = httpx.get(f"{cp.url}/api/v1/tap/shop/nope", headers=cp.admin)
    assert r.status_code == 404
    assert r.json()["detail"] == "service shop/nope not found"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=99", "status"),
        ("status=abc", "status"),
        ("method=G%20T", "method"),
        ("path=api", "path"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("seconds=0", "seconds"),
        ("seconds=301", "seconds"),
    ],
)
def test_bad_filters_are_a_422_naming_the_field(cp: ControlPlane, query: str, field: str) -> None:
    r = httpx.get(f"{cp.url}/api/v1/tap/default/pricing?{query}", headers=cp.admin)
    assert r.status_code == 422, r.text
    assert ["query", field] in [e["loc"] for e in r.json()["detail"]]


def test_sidecars_of_other_services_cannot_follow_or_feed_a_tap(cp: ControlPlane, pricing: dict[str, Any]) -> None:
    other = {"id": pricing["id"], "headers": {"Authorization": f"Bearer {cp.join_token('frontend')}"}}
    assert sessions(cp, other, wait=0).status_code == 403
    assert post(cp, other, "whatever", [event("/")]) == 403


# === the relay, as a sidecar speaks it ===


def test_events_pass_the_filters_redacted_and_the_tap_ends_at_its_limit(
    cp: ControlPlane, pricing: dict[str, Any]
) -> None:
    stream = tap(cp, "path=/api&method=get&limit=2&seconds=60")
    r = sessions(cp, pricing)  # answers once the session opens
    assert r.status_code == 200, r.text
    [info] = r.json()["sessions"]
    assert (info["method"], info["path"], info["status"], info["limit"]) == ("GET", "/api", None, 2)
    assert 0 < info["seconds_left"] <= 60

    secret = {"authorization": "Bearer hunter2", "cookie": "session=s3cret", "User-Agent": "curl/8"}
    batch = [
        event("/health"),  # outside the path filter
        event("/api/a", request_headers=secret, password="hunter2"),  # an unknown field too
        {**event("/api/post"), "method": "POST"},  # outside the method filter
    ]
    assert post(cp, pricing, info["id"], batch, dropped=3) == 204
    assert post(cp, pricing, info["id"], [event("/api/b", status=503)]) == 204
    assert stream.done.wait(20), "the tap did not end at its limit"

    assert stream.status == 200
    assert [(e["path"], e["status"]) for e in stream.events] == [("/api/a", 200), ("/api/b", 503)]
    first = stream.events[0]
    assert first["request_headers"] == {"user-agent": "curl/8"}
    assert "password" not in first and "hunter2" not in json.dumps(stream.lines)
    assert first["sidecar"] == pricing["id"]
    assert (first["source"], first["duration_ms"], first["trace_id"]) == (
        "spiffe://cluster.local/ns/default/sa/frontend",
        1.25,
        "4bf92f3577b34da6a3ce929d0e0e4736",
    )
    assert stream.end == {"reason": "limit", "events": 2, "dropped": 3}

    # The session is gone: the sidecar is told so (410) and its long-poll lists it no more.
    assert post(cp, pricing, info["id"], [event("/api/c")]) == 410
    r = sessions(cp, pricing, known=info["id"])
    assert r.status_code == 200 and r.json()["sessions"] == []


def test_with_no_tap_open_a_sidecar_waits_and_a_tap_ends_when_its_time_is_up(
    cp: ControlPlane, pricing: dict[str, Any]
) -> None:
    assert sessions(cp, pricing, wait=0.5).status_code == 204
    stream = tap(cp, "seconds=1")
    assert stream.done.wait(20), "the tap did not end after its time"
    assert stream.events == [] and stream.end == {"reason": "time", "events": 0, "dropped": 0}


def test_the_operator_going_away_ends_the_session(cp: ControlPlane, pricing: dict[str, Any]) -> None:
    operator = socket.create_connection(("127.0.0.1", cp.port), timeout=10)
    token = cp.token("admin")
    request = f"GET /api/v1/tap/default/pricing?seconds=120 HTTP/1.1\r\nHost: cp\r\nAuthorization: Bearer {token}\r\n"
    operator.sendall(request.encode() + b"\r\n")
    [info] = sessions(cp, pricing).json()["sessions"]
    operator.close()
    # The control plane notices the closed connection and ends the session (its sidecars are told).
    r = sessions(cp, pricing, known=info["id"], wait=10)
    assert r.status_code == 200 and r.json()["sessions"] == []
    assert post(cp, pricing, info["id"], [event("/")]) == 410


def test_a_service_has_a_bounded_number_of_taps_open(cp: ControlPlane, pricing: dict[str, Any]) -> None:
    streams = [tap(cp, "seconds=5", svc="frontend") for _ in range(MAX_SESSIONS_PER_SERVICE)]
    wait_until(lambda: all(s.status == 200 for s in streams), timeout=20, what="the taps to open")
    r = httpx.get(f"{cp.url}/api/v1/tap/default/frontend?seconds=1", headers=cp.admin, timeout=10)
    assert r.status_code == 429 and f"{MAX_SESSIONS_PER_SERVICE} taps open" in r.json()["detail"]
