"""Live config: updates under load drop nothing, bad updates change nothing,
listeners open and drain, and stop finishes what is in flight."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from helpers import cluster, http_listener, route, unused_port, wait_until
from meshctl import BindError, ConfigError, DataPlane


@dataclass
class Load:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    backends: set[str] = field(default_factory=set)


@contextmanager
def steady_load(url: str, clients: int = 4) -> Iterator[Load]:
    """Keep-alive clients hammering `url` until the block ends."""
    load = Load()
    lock = threading.Lock()
    done = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=10) as c:
            while not done.is_set():
                try:
                    r = c.get(url)
                    outcome = r.status_code == 200
                    detail = f"{r.status_code} {r.text[:80]}"
                except httpx.HTTPError as e:
                    outcome, detail = False, repr(e)
                with lock:
                    if outcome:
                        load.ok += 1
                        load.backends.add(r.headers["x-backend"])
                    else:
                        load.failures.append(detail)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: load.ok + len(load.failures) > 20, what="load to start")
        yield load
    finally:
        done.set()
        for t in threads:
            t.join(15)


def two_way_configs(addr: str, a: str, b: str) -> list[dict]:
    """Two configs that differ in routes, clusters, balancers and listeners."""
    first = {
        "listeners": [http_listener("web", [route("one")], address=addr)],
        "clusters": [cluster("one", [a])],
    }
    second = {
        "listeners": [
            http_listener(
                "web",
                [route("canary", headers={"x-never": "1"}), route(("one", 1), ("two", 1))],
                address=addr,
            ),
            http_listener("extra", [route("two")]),
        ],
        "clusters": [
            cluster("one", [a], lb="least_request"),
            cluster("two", [b], lb="random"),
            cluster("canary", []),
        ],
    }
    return [first, second]


def test_fifty_updates_under_load_drop_nothing(backend, proxy) -> None:
    a, b = backend("a"), backend("b")
    dp = proxy(two_way_configs("127.0.0.1:0", a.address, b.address)[0])
    addr = dp.addresses()["web"]
    configs = two_way_configs(addr, a.address, b.address)
    with steady_load(f"http://{addr}/") as load:
        for i in range(50):
            version = dp.update(configs[(i + 1) % 2])
            assert version == i + 2
            seen = load.ok
            wait_until(lambda seen=seen: load.ok > seen + 5, what="requests after the update")
    assert load.failures == []
    assert load.ok > 300
    assert load.backends == {"a", "b"}
    assert dp.stats()["version"] == 51


def test_bad_update_is_rejected_and_traffic_continues(backend, proxy) -> None:
    a = backend("a")
    config = {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [http_listener("web", [route("one")])],
        "clusters": [cluster("one", [a.address])],
    }
    dp = proxy(config)
    addr = dp.addresses()["web"]
    before = dp.config()
    bad = {
        **config,
        "listeners": [http_listener("web", [route("api-v3"), route("one", path="no-slash")], address=addr)],
        "clusters": [cluster("one", [a.address], lb="fastest")],
    }
    with steady_load(f"http://{addr}/") as load:
        with pytest.raises(ConfigError) as exc:
            dp.update(bad)
        seen = load.ok
        wait_until(lambda: load.ok > seen + 20, what="traffic after the rejected update")
    paths = [p for p, _ in exc.value.errors]
    assert paths == [
        "clusters[0].lb",
        "listeners[0].routes[0].backends[0].cluster",
        "listeners[0].routes[1].match.path",
    ]
    assert load.failures == []
    assert dp.config() == before
    assert dp.stats()["version"] == 1
    # The refusal is counted, with its error, where an operator looks (admin /stats too).
    config_stats = httpx.get(f"http://{dp.addresses()['admin']}/stats").json()["config"]
    assert config_stats["version"] == 1
    assert (config_stats["applied"], config_stats["rejected"]) == (1, 1)
    assert "clusters[0].lb" in config_stats["last_error"]


def test_bind_failure_on_update_changes_nothing(backend, proxy) -> None:
    a = backend("a")
    dp = proxy({"listeners": [http_listener("web", [route("one")])], "clusters": [cluster("one", [a.address])]})
    addr = dp.addresses()["web"]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(BindError, match=f"listener 'new': cannot bind {busy}"):
            dp.update(
                {
                    "listeners": [
                        http_listener("web", [], address=addr),
                        http_listener("new", [route("one")], address=busy),
                    ],
                    "clusters": [cluster("one", [a.address])],
                }
            )
    assert httpx.get(f"http://{addr}/").status_code == 200  # old routes still in force
    assert set(dp.addresses()) == {"web"}
    assert dp.stats()["version"] == 1
    assert dp.stats()["config"]["rejected"] == 1
    assert f"cannot bind {busy}" in dp.stats()["config"]["last_error"]


def test_listeners_open_and_close_with_updates(backend, proxy) -> None:
    a = backend("a")
    base = {"listeners": [http_listener("web", [route("one")])], "clusters": [cluster("one", [a.address])]}
    dp = proxy(base)
    web = dp.addresses()["web"]
    extra_port = unused_port()
    with_extra = {
        "listeners": [
            http_listener("web", [route("one")], address=web),
            http_listener("extra", [route("one")], address=f"127.0.0.1:{extra_port}"),
        ],
        "clusters": [cluster("one", [a.address])],
    }
    dp.update(with_extra)
    assert httpx.get(f"http://127.0.0.1:{extra_port}/").status_code == 200
    # Same name, same address: the socket is kept (no refused connections in between).
    assert dp.addresses()["web"] == web

    dp.update({**base, "listeners": [http_listener("web", [route("one")], address=web)]})

    def refused() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", extra_port), timeout=1) as s:
                # With nothing listening, the kernel may pick the target port as the source
                # port and connect the socket to itself: that is not a listener either.
                return bool(s.getsockname() == s.getpeername())
        except ConnectionRefusedError:
            return True

    wait_until(refused, what="the removed listener to close")
    assert "extra" not in dp.addresses()
    assert httpx.get(f"http://{web}/").status_code == 200


def test_update_before_start_replaces_the_initial_config(backend) -> None:
    a = backend("a")
    dp = DataPlane({"listeners": []})
    dp.update({"listeners": [http_listener("web", [route("one")])], "clusters": [cluster("one", [a.address])]})
    dp.start()
    try:
        assert httpx.get(f"http://{dp.addresses()['web']}/").status_code == 200
    finally:
        dp.stop(0)


def test_stop_finishes_requests_in_flight(backend, proxy) -> None:
    slow = backend("slow")
    dp = proxy({"listeners": [http_listener("web", [route("one")])], "clusters": [cluster("one", [slow.address])]})
    addr = dp.addresses()["web"]
    result: dict[str, httpx.Response] = {}
    t = threading.Thread(target=lambda: result.update(r=httpx.get(f"http://{addr}/?ms=800", timeout=10)))
    t.start()
    wait_until(lambda: slow.requests == 1, what="the request to reach the backend")
    started = time.monotonic()
    dp.stop(10)
    took = time.monotonic() - started
    t.join(10)
    assert result["r"].status_code == 200
    assert took < 5, "stop waits for in-flight work, not for the whole grace period"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{addr}/", timeout=2)


def test_stop_cuts_off_what_outlives_the_grace(backend, proxy) -> None:
    slow = backend("slow")
    dp = proxy({"listeners": [http_listener("web", [route("one")])], "clusters": [cluster("one", [slow.address])]})
    addr = dp.addresses()["web"]
    errors: list[Exception] = []

    def call() -> None:
        try:
            httpx.get(f"http://{addr}/?ms=20000", timeout=30)
        except httpx.HTTPError as e:
            errors.append(e)

    t = threading.Thread(target=call)
    t.start()
    wait_until(lambda: slow.requests == 1, what="the request to reach the backend")
    started = time.monotonic()
    dp.stop(0.3)
    assert time.monotonic() - started < 3
    t.join(10)
    assert len(errors) == 1
