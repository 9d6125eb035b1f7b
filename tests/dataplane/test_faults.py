"""Fault injection (issue 11): a route's abort (an HTTP status, or a gRPC status as a trailers-only
answer) and delay, each rolled for its own share of the requests, independently of each other;
a tcp listener's reset and delay of a share of its connections. Aborted requests never reach the
upstream, and the listener counts every fault in `faults.aborted` / `faults.delayed`."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import pytest

from helpers import cluster, http_listener, route
from meshctl import Bench, BenchBackend, DataPlane


def with_fault(r: dict[str, Any], **fault: Any) -> dict[str, Any]:
    return {**r, "fault": fault}


def start(proxy: Callable[..., DataPlane], upstream: str, *routes: dict[str, Any]) -> tuple[DataPlane, str]:
    """A proxy whose listener `web` has these `routes` to cluster `c` at `upstream`; and its URL."""
    dp = proxy({"listeners": [http_listener("web", list(routes))], "clusters": [cluster("c", [upstream])]})
    return dp, f"http://{dp.addresses()['web']}"


def timed_gets(urls: list[str], threads: int = 8) -> list[tuple[int, str, float]]:
    """GETs of `urls`, shared round-robin among `threads` keep-alive clients: status,
    x-meshctl-error and seconds taken, in the order of `urls`."""

    def client(first: int) -> list[tuple[int, str, float]]:
        out = []
        with httpx.Client(timeout=10) as c:
            for url in urls[first::threads]:
                t0 = time.perf_counter()
                r = c.get(url)
                out.append((r.status_code, r.headers.get("x-meshctl-error", ""), time.perf_counter() - t0))
        return out

    with ThreadPoolExecutor(threads) as pool:
        batches = list(pool.map(client, range(threads)))
    return [batches[i % threads][i // threads] for i in range(len(urls))]


def assert_slow_matches(took: list[float], delay_ms: int, delayed: int) -> None:
    """The requests the client saw take at least the delay are the `delayed` the proxy held:
    each held one did, and a busy machine may make a few others as slow, not more."""
    slow = sum(t >= delay_ms / 1000 for t in took)
    assert delayed <= slow <= delayed + 0.03 * len(took), (slow, delayed)


def faults(dp: DataPlane, listener: str = "web") -> dict[str, int]:
    return dict(dp.stats()["listeners"][listener]["faults"])


def test_a_ten_percent_abort_lands_near_ten_percent_and_spares_the_backend(backend, proxy) -> None:
    app = backend("app")
    dp, base = start(proxy, app.address, with_fault(route("c"), abort={"percent": 10, "http_status": 503}))
    url = f"{base}/"
    n = 10_000
    bench = Bench({"url": url, "requests": n, "connections": 4, "threads": 1})
    bench.start()
    report = bench.wait(60)
    assert report is not None
    statuses = report["statuses"]
    assert statuses["2xx"] + statuses["5xx"] == n and report["errors"]["io"] == 0, report
    aborted = statuses["5xx"]
    assert 0.085 * n <= aborted <= 0.115 * n, aborted
    assert faults(dp) == {"aborted": aborted, "delayed": 0}
    # The aborted requests were answered by the proxy itself.
    assert app.requests == n - aborted
    assert dp.stats()["clusters"]["c"]["requests"] == n - aborted

    # What an aborted answer looks like (the bench counts status classes only).
    answers = timed_gets([url] * 300, threads=4)
    assert {(s, e) for s, e, _ in answers} == {(200, ""), (503, "fault")}


@pytest.fixture
def rust_backend() -> Iterator[dict[str, str]]:
    """The load generator's backend ("ok" over HTTP; a TCP echo): it runs off the GIL, so the
    latencies the test's client threads see are the proxy's, not a Python server's queueing."""
    server = BenchBackend(http="127.0.0.1:0", tcp_echo="127.0.0.1:0")
    yield server.addresses
    server.stop()


def test_a_fixed_delay_shifts_the_median_by_the_delay(rust_backend, proxy) -> None:
    delay_ms = 200
    dp, url = start(
        proxy,
        rust_backend["http"],
        with_fault(route("c", path="/slow"), delay={"percent": 100, "fixed_ms": delay_ms}),
        route("c"),
    )
    # The same route without a fault is the baseline, measured alongside: each client alternates.
    answers = timed_gets([f"{url}/plain", f"{url}/slow"] * 40, threads=4)
    plain, slow = answers[0::2], answers[1::2]
    assert {s for s, _, _ in plain + slow} == {200}
    assert min(t for _, _, t in slow) >= delay_ms / 1000, "every request is held"
    shift = statistics.median(t for _, _, t in slow) - statistics.median(t for _, _, t in plain)
    assert abs(shift - delay_ms / 1000) <= 0.1 * delay_ms / 1000, shift
    assert faults(dp) == {"aborted": 0, "delayed": 40}
    assert dp.stats()["clusters"]["c"]["responses"]["2xx"] == 80


def test_a_partial_delay_holds_only_its_share(rust_backend, proxy) -> None:
    delay_ms = 200
    dp, url = start(proxy, rust_backend["http"], with_fault(route("c"), delay={"percent": 50, "fixed_ms": delay_ms}))
    n = 400
    answers = timed_gets([f"{url}/"] * n, threads=20)
    assert {s for s, _, _ in answers} == {200}
    took = sorted(t for _, _, t in answers)
    delayed = faults(dp)["delayed"]
    assert 0.40 * n <= delayed <= 0.60 * n, delayed
    assert_slow_matches(took, delay_ms, delayed)
    # Those not held are as fast as without a fault; those held are late by the delay.
    assert took[n // 4] < delay_ms / 1000 / 2
    assert delay_ms / 1000 <= took[3 * n // 4] < delay_ms / 1000 * 1.5


def test_delay_and_abort_are_rolled_independently(rust_backend, proxy) -> None:
    # Long enough that hardly any request the fault spared is as slow, even on a busy machine.
    delay_ms = 250
    fault = with_fault(
        route("c"), delay={"percent": 50, "fixed_ms": delay_ms}, abort={"percent": 50, "http_status": 503}
    )
    dp, url = start(proxy, rust_backend["http"], fault)
    n = 400
    answers = timed_gets([f"{url}/"] * n, threads=20)
    aborted = [s == 503 for s, _, _ in answers]
    assert {(s, e) for s, e, _ in answers} <= {(200, ""), (503, "fault")}
    assert faults(dp)["aborted"] == sum(aborted)
    assert dp.stats()["clusters"]["c"]["requests"] == n - sum(aborted)
    delayed = faults(dp)["delayed"]
    assert 0.40 * n <= delayed <= 0.60 * n, delayed
    assert 0.40 * n <= sum(aborted) <= 0.60 * n, sum(aborted)
    assert_slow_matches([t for _, _, t in answers], delay_ms, delayed)
    # Independent: the delayed and the aborted overlap as chance has it (a quarter), neither
    # excluding the other nor always coming together.
    both = sum(s == 503 and t >= delay_ms / 1000 for s, _, t in answers)
    assert 0.17 * n <= both <= 0.33 * n, both


GRPC_SERVICE = "demo.Echo"
NO_PROXY = [("grpc.enable_http_proxy", 0)]


@pytest.fixture
def grpc_backend() -> Iterator[tuple[str, Callable[[], int]]]:
    """A grpcio server with one unary echo method: its address and how many calls it served."""
    calls = 0
    lock = threading.Lock()

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        nonlocal calls
        with lock:
            calls += 1
        return b"echo:" + request

    server = grpc.server(ThreadPoolExecutor(max_workers=4), options=NO_PROXY)
    handler = grpc.method_handlers_generic_handler(GRPC_SERVICE, {"Unary": grpc.unary_unary_rpc_method_handler(unary)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", lambda: calls
    server.stop(0)


def test_a_grpc_abort_reaches_a_grpc_client_as_its_status(grpc_backend, proxy) -> None:
    address, calls = grpc_backend
    chaos = {"x-chaos": "on"}
    dp = proxy(
        {
            "listeners": [
                http_listener(
                    "grpc",
                    [
                        with_fault(route("echo", headers=chaos), abort={"percent": 100, "grpc_status": 14}),
                        route("echo"),
                    ],
                )
            ],
            "clusters": [cluster("echo", [address], protocol="http2")],
        }
    )
    with grpc.insecure_channel(dp.addresses()["grpc"], options=NO_PROXY) as channel:
        unary = channel.unary_unary(f"/{GRPC_SERVICE}/Unary")
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as exc:
                unary(b"hello", timeout=10, metadata=tuple(chaos.items()))
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "fault" in (exc.value.details() or "")
        # Calls without the header take the route without a fault, to the backend.
        assert unary(b"hello", timeout=10) == b"echo:hello"
    assert calls() == 1
    assert faults(dp, "grpc") == {"aborted": 5, "delayed": 0}


# === tcp listeners ===


def tcp_listener(upstream: str, **extra: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "db", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "echo", **extra}],
        "clusters": [cluster("echo", [upstream])],
    }


def exchange(address: str) -> tuple[str, float]:
    """Connects, sends a line and reads it back: "echo", "reset" or "eof", and seconds taken."""
    host, port = address.rsplit(":", 1)
    t0 = time.perf_counter()
    got = b""
    try:
        # A reset can come before connect() even returns: the proxy accepts at once.
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"ping\n")
            while len(got) < 5:
                chunk = s.recv(64)
                if not chunk:
                    return "eof", time.perf_counter() - t0
                got += chunk
    except (ConnectionResetError, BrokenPipeError):
        return "reset", time.perf_counter() - t0
    assert got == b"ping\n"
    return "echo", time.perf_counter() - t0


def test_a_tcp_listener_resets_and_delays_shares_of_its_connections(rust_backend, proxy) -> None:
    delay_ms = 150
    dp = proxy(
        tcp_listener(
            rust_backend["tcp_echo"], fault={"abort": {"percent": 30}, "delay": {"percent": 50, "fixed_ms": delay_ms}}
        )
    )
    n = 200
    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(lambda _: exchange(dp.addresses()["db"]), range(n)))
    kinds = [k for k, _ in outcomes]
    # A reset, never a clean end: the client can tell a fault from a closed service.
    assert set(kinds) == {"echo", "reset"}, kinds
    resets = kinds.count("reset")
    assert 0.20 * n <= resets <= 0.40 * n, resets
    assert faults(dp, "db")["aborted"] == resets
    delayed = faults(dp, "db")["delayed"]
    assert 0.38 * n <= delayed <= 0.62 * n, delayed
    assert_slow_matches([took for _, took in outcomes], delay_ms, delayed)
    assert dp.stats()["clusters"]["echo"]["connections"] == n - resets
