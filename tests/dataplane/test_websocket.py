"""WebSocket upgrades are tunnelled through an HTTP/1.1 listener."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from helpers import cluster, http_listener, route, wait_until


def _echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


@pytest.fixture
def ws_backend() -> Iterator[str]:
    server = serve(_echo, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.socket.getsockname()[:2]
    yield f"{host}:{port}"
    server.shutdown()
    thread.join(5)


def test_websocket_echo(ws_backend, backend, proxy) -> None:
    plain = backend("plain")
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("ws", path_prefix="/ws"), route("plain")])],
            "clusters": [cluster("ws", [ws_backend]), cluster("plain", [plain.address])],
        }
    )
    with connect(f"ws://{dp.addresses()['web']}/ws/chat", open_timeout=5, close_timeout=5) as ws:
        assert dp.stats()["clusters"]["ws"]["active_requests"] == 1
        for i in range(100):
            ws.send(f"text {i}")
            assert ws.recv(timeout=5) == f"text {i}"
        payload = os.urandom(100_000)  # incompressible: permessage-deflate is on
        ws.send(payload)
        assert ws.recv(timeout=5) == payload
    stats = dp.stats()
    assert stats["clusters"]["ws"]["responses"]["1xx"] == 1
    wait_until(lambda: dp.stats()["listeners"]["web"]["bytes_in"] > len(payload), what="tunnel bytes counted")
    # The tunnel ends with the connection: nothing stays active.
    wait_until(lambda: dp.stats()["clusters"]["ws"]["active_requests"] == 0, what="tunnel closed")
    assert plain.requests == 0
