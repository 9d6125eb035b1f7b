"""Circuit breakers per cluster (issue 11): over `max_requests`, `max_connections` or
`max_pending_requests` a request gets an immediate 503 with `x-meshctl-error: overflow`, counted;
what was admitted is served as usual. TCP listeners refuse connections over `max_connections`."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from helpers import cluster, http_listener, route, wait_until

SLOW_MS = 1500


def burst(url: str, n: int) -> list[tuple[int, str, float]]:
    """`n` requests sent at the same instant, each on its own connection: status, error kind and
    seconds taken."""
    start = threading.Barrier(n)

    def one(_: int) -> tuple[int, str, float]:
        with httpx.Client(timeout=10) as c:
            start.wait()
            t0 = time.monotonic()
            r = c.get(url)
            return r.status_code, r.headers.get("x-meshctl-error", ""), time.monotonic() - t0

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_requests_over_max_requests_overflow_at_once(backend, proxy) -> None:
    slow = backend("slow", delay_ms=SLOW_MS)
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("c")])],
            "clusters": [cluster("c", [slow.address], circuit_breakers={"max_requests": 10})],
        }
    )
    got = burst(f"http://{dp.addresses()['web']}/", 50)
    admitted = [g for g in got if g[0] == 200]
    refused = [g for g in got if g[0] == 503]
    assert len(admitted) == 10 and len(refused) == 40, sorted(got)
    assert {kind for _, kind, _ in refused} == {"overflow"}
    # Refused at once, not after waiting behind the slow requests.
    assert max(took for _, _, took in refused) < SLOW_MS / 1000 / 2, refused
    assert slow.requests == 10
    stats = dp.stats()["clusters"]["c"]
    assert stats["overflow"] == 40 and stats["active_requests"] == 0
    assert stats["responses"]["2xx"] == 10


def test_max_connections_bounds_upstream_connections(backend, proxy) -> None:
    slow = backend("slow", delay_ms=SLOW_MS)
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("c")])],
            "clusters": [cluster("c", [slow.address], circuit_breakers={"max_connections": 3})],
        },
        # One worker: idle connections are pooled per worker thread, and a request on a worker
        # without one needs a new connection, which the limit counts against all that are open.
        workers=1,
    )
    # HTTP/1.1 upstream: each request in flight needs its own connection.
    got = burst(f"http://{dp.addresses()['web']}/", 8)
    assert sorted(status for status, _, _ in got) == [200] * 3 + [503] * 5, got
    stats = dp.stats()["clusters"]["c"]
    assert stats["overflow"] == 5 and stats["connections"] == 3
    # The three connections stay pooled and serve what comes next.
    with httpx.Client() as c:
        assert all(c.get(f"http://{dp.addresses()['web']}/").status_code == 200 for _ in range(5))
    assert dp.stats()["clusters"]["c"]["connections"] == 3


def test_max_pending_requests_bounds_requests_waiting_for_a_connection(proxy) -> None:
    # An upstream that never accepts, its backlog filled: a connect to it waits (the SYN is dropped)
    # until the cluster's connect timeout.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    fillers = []
    while len(fillers) < 64:
        s = socket.socket()
        s.settimeout(0.3)
        try:
            s.connect(blackhole.getsockname())
        except OSError:
            s.close()
            break
        fillers.append(s)
    address = "{}:{}".format(*blackhole.getsockname())
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("c")])],
            "clusters": [
                cluster("c", [address], connect_timeout_ms=1000, circuit_breakers={"max_pending_requests": 2})
            ],
        }
    )
    try:
        got = burst(f"http://{dp.addresses()['web']}/", 6)
    finally:
        for s in fillers:
            s.close()
        blackhole.close()
    kinds = sorted(kind for _, kind, _ in got)
    assert kinds.count("overflow") >= 4, got
    assert all(status in (502, 503) for status, _, _ in got)
    assert dp.stats()["clusters"]["c"]["pending_requests"] == 0


def test_tcp_connections_over_max_connections_are_closed(proxy) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        srv.settimeout(5)
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    dp = proxy(
        {
            "listeners": [{"name": "db", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "db"}],
            "clusters": [cluster("db", ["{}:{}".format(*srv.getsockname())], circuit_breakers={"max_connections": 2})],
        }
    )
    host, port = dp.addresses()["db"].rsplit(":", 1)
    clients = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]
    wait_until(lambda: len(held) == 2, what="two upstream connections")
    third = socket.create_connection((host, int(port)), timeout=5)
    assert third.recv(1) == b"", "the connection over the limit is closed"
    stats = wait_until(lambda: dp.stats()["clusters"]["db"] if dp.stats()["clusters"]["db"]["overflow"] else None)
    assert stats["active_connections"] == 2 and len(held) == 2
    for s in [*clients, third, *held]:
        s.close()
    srv.close()
