"""TCP listeners: bidirectional forwarding with half-close, and prompt
closing when the upstream is down."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from helpers import cluster, unused_port, wait_until


def _read_all(s: socket.socket) -> bytes:
    data = bytearray()
    while chunk := s.recv(65536):
        data += chunk
    return bytes(data)


@pytest.fixture
def half_close_server() -> Iterator[str]:
    """Reads until the client's FIN, then answers with the reversed bytes and closes."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                data = _read_all(conn)
                conn.sendall(data[::-1])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join(5)
    srv.close()


def tcp_config(upstream: str) -> dict:
    return {
        "listeners": [{"name": "db", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "echo"}],
        "clusters": [cluster("echo", [upstream])],
    }


def test_half_close_round_trip(half_close_server, proxy) -> None:
    dp = proxy(tcp_config(half_close_server))
    host, port = dp.addresses()["db"].rsplit(":", 1)
    payload = bytes(range(256)) * 8192  # 2 MiB
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)  # the server answers only after seeing our FIN
        assert _read_all(s) == payload[::-1]
    wait_until(lambda: dp.stats()["listeners"]["db"]["bytes_out"] == len(payload), what="bytes counted")
    stats = dp.stats()
    assert stats["listeners"]["db"]["bytes_in"] == len(payload)
    assert stats["clusters"]["echo"]["bytes_sent"] == len(payload)
    assert stats["listeners"]["db"]["connections"] == 1


def test_concurrent_connections(half_close_server, proxy) -> None:
    dp = proxy(tcp_config(half_close_server))
    host, port = dp.addresses()["db"].rsplit(":", 1)
    results: list[bool] = []

    def one(i: int) -> None:
        msg = f"connection {i} ".encode() * 100
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(msg)
            s.shutdown(socket.SHUT_WR)
            results.append(_read_all(s) == msg[::-1])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert results == [True] * 20


def test_upstream_down_closes_promptly(proxy) -> None:
    dp = proxy(tcp_config(f"127.0.0.1:{unused_port()}"))
    host, port = dp.addresses()["db"].rsplit(":", 1)
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"hello")
        # Closed with our unread bytes in its buffer, the kernel may reset instead.
        with contextlib.suppress(ConnectionResetError):
            assert _read_all(s) == b""
    assert time.monotonic() - start < 2
    # The first try and 2 retries (the default policy), then the close.
    stats = wait_until(
        lambda: (s := dp.stats()["clusters"]["echo"])["retries_exhausted"] == 1 and s, what="retries exhausted"
    )
    assert (stats["connect_failures"], stats["retries"]) == (3, 2)


def test_a_dead_endpoint_costs_no_connection(half_close_server, proxy) -> None:
    dead = f"127.0.0.1:{unused_port()}"
    dp = proxy(
        {
            "listeners": [{"name": "db", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "echo"}],
            "clusters": [cluster("echo", [dead, half_close_server], lb="round_robin")],
        }
    )
    host, port = dp.addresses()["db"].rsplit(":", 1)
    for i in range(6):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(f"hello {i}".encode())
            s.shutdown(socket.SHUT_WR)
            assert _read_all(s) == f"hello {i}".encode()[::-1]
    stats = dp.stats()["clusters"]["echo"]
    assert stats["retries"] >= 1 and stats["retries"] == stats["connect_failures"]
