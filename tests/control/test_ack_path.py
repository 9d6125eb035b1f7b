"""The ACKs' short path (control/ackpath.py): the ACKs it answers itself are
recorded and counted as the route's are, and every other request to the
status URL gets the route's answer, with its body intact. Against a real
control plane, and the middleware alone with a downstream app that records
what reaches it."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from helpers import wait_until
from meshctl.control.ackpath import TEMPLATE, AckPath
from meshctl.control.deps import Caller, TokenCache
from meshctl.control.metrics import Metrics
from meshproc import ControlPlane, module_control_plane, service

cp = module_control_plane()


def _acks_counted(cp: ControlPlane, code: str) -> float:
    text = cp.call("GET", "/metrics").text
    for line in text.splitlines():
        ours = line.startswith("meshctl_control_api_requests_total{") and f'route="{TEMPLATE}"' in line
        if ours and f'code="{code}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def sidecar(cp: ControlPlane) -> dict[str, Any]:
    cp.apply(service("acking"), service("other"))
    token = cp.join_token("acking")
    body = {"service": "acking", "address": "127.0.0.1", "inbound_port": 15301, "app_port": 9000}
    r = httpx.put(f"{cp.url}/api/v1/sidecars", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    return {**r.json(), "token": token}


def _post(cp: ControlPlane, sidecar_id: int, token: str | None, content: bytes, ctype: str = "application/json") -> int:
    headers = {"Content-Type": ctype}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    r = httpx.post(f"{cp.url}/api/v1/sidecars/{sidecar_id}/status", content=content, headers=headers, timeout=10)
    return r.status_code


def test_an_ack_on_the_short_path_is_recorded_and_counted(cp: ControlPlane, sidecar: dict[str, Any]) -> None:
    before = _acks_counted(cp, "204")
    version = sidecar["mesh_generation"]
    assert _post(cp, sidecar["id"], sidecar["token"], b'{"version": %d}' % version) == 204
    wait_until(
        lambda: next(r for r in cp.sidecars() if r["id"] == sidecar["id"])["acked_version"] == version,
        timeout=15,
        what="the ACK in the sidecar's row",
    )
    assert _acks_counted(cp, "204") == before + 1


def test_the_other_requests_get_the_routes_answers(cp: ControlPlane, sidecar: dict[str, Any]) -> None:
    sid, own = sidecar["id"], sidecar["token"]
    other = cp.join_token("other")
    cases = [
        (sid, None, b'{"version": 1}', "application/json", 401),  # no token
        (sid, "not-a-token", b'{"version": 1}', "application/json", 401),
        (sid, other, b'{"version": 1}', "application/json", 403),  # another service's join token
        (sid + 1000, own, b'{"version": 1}', "application/json", 404),  # no such sidecar
        (sid, own, b'{"version": -1}', "application/json", 422),
        (sid, own, b'{"version": 2147483648}', "application/json", 422),  # past the database's integers
        (sid, own, b'{"version": true}', "application/json", 204),  # (pydantic takes true for 1)
        (sid, own, b'{"version": 1', "application/json", 422),  # not JSON
        (sid, own, b"[1]", "application/json", 422),
        (sid, own, b'{"version": "1"}', "application/json", 204),  # the route's lax integers
        (sid, own, b'{"version": 1, "error": "refused"}', "application/json", 204),  # a NACK
        (sid, own, b'{"version": 1, "error": null}' + b" " * 200, "application/json", 204),  # long: the route
    ]
    got = [(content, _post(cp, s, tok, content, ctype)) for s, tok, content, ctype, _ in cases]
    assert got == [(c[2], c[4]) for c in cases]
    # A NACK goes through the route, which writes it at once.
    assert _post(cp, sid, own, b'{"version": 1, "error": "refused"}') == 204
    assert next(r for r in cp.sidecars() if r["id"] == sid)["last_error"] == "refused"


# === the middleware alone ===


class _Hub:
    def __init__(self) -> None:
        self.sidecars = {7: ("spec", "default/acking", 3)}
        self.acks: list[tuple[int, int]] = []

    def note_ack(self, sidecar_id: int, version: int) -> None:
        self.acks.append((sidecar_id, version))


def _call(body: bytes, *, path: str = "/api/v1/sidecars/7/status", chunks: int = 1) -> tuple[Any, list[bytes], int]:
    """Runs one request through AckPath; returns (the hub, the body the app downstream read, or
    nothing when it was not called, the status answered)."""
    hub = _Hub()
    cache = TokenCache()
    cache["t"] = (Caller("join", "default/acking", id=3), time.monotonic() + 60)
    state = SimpleNamespace(hub=hub, token_cache=cache, engine=None)
    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        seen.append(body)
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    step = max(1, len(body) // chunks)
    parts = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    answered: list[int] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answered.append(message["status"])

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json"), (b"authorization", b"Bearer t")],
        "app": SimpleNamespace(state=state),
    }
    asyncio.run(AckPath(app, Metrics())(scope, receive, send))
    return hub, seen, answered[0]


def test_an_ack_is_answered_without_the_app() -> None:
    hub, seen, code = _call(b'{"version": 12}')
    assert (hub.acks, seen, code) == ([(7, 12)], [], 204)


@pytest.mark.parametrize(
    "body",
    [
        b'{"version": 12, "error": "no"}',
        b'{"version": 12, "extra": 1}',
        b'{"version": 1.5}',
        b'{"version": 12}' + b" " * 100,
        b"not json",
    ],
)
def test_anything_else_reaches_the_app_with_its_body(body: bytes) -> None:
    hub, seen, code = _call(body, chunks=3)
    assert (hub.acks, seen, code) == ([], [body], 299)


def test_an_unknown_sidecar_or_another_path_reaches_the_app() -> None:
    for path in ("/api/v1/sidecars/8/status", "/api/v1/sidecars/07/status", "/api/v1/sidecars/7/statuses"):
        hub, seen, code = _call(b'{"version": 1}', path=path)
        assert (hub.acks, seen, code) == ([], [b'{"version": 1}'], 299), path
