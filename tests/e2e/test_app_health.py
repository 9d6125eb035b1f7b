"""App health end to end (issue 15, item 3): a real control plane, two `meshctl proxy` sidecars
with --health-http in front of small apps whose /healthz answers 200 or 503 as a file the test
toggles says, and a caller's sidecar. An instance is not in the caller's cluster (its admin
/config) until its probe passes; turning it unhealthy takes it out while calls keep succeeding
through the other one; turning it healthy brings it back; `meshctl get endpoints` shows each
state. The Service's `healthCheck` (no flags) works the same way."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import unused_port, wait_until
from meshproc import ControlPlane, Sidecar, backends_seen, ok, run_meshctl

#: Probe every 0.2 s; two failures in a row make a healthy instance unhealthy.
HEALTH_FLAGS = ("--health-http", "/healthz", "--health-interval", "0.2", "--health-unhealthy-threshold", "2")


class App:
    """An app on 127.0.0.1: /healthz answers 200 while `healthy_file` exists, else 503; any other
    path answers 200 with its name in X-Backend."""

    def __init__(self, name: str, workdir: Path):
        self.name, self.healthy_file = name, workdir / f"{name}.healthy"
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                status = 503 if self.path == "/healthz" and not app.healthy_file.exists() else 200
                body = app.name.encode()
                self.send_response(status)
                self.send_header("X-Backend", app.name)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set_healthy(self, healthy: bool) -> None:
        if healthy:
            self.healthy_file.touch()
        else:
            self.healthy_file.unlink(missing_ok=True)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[dict[str, App]]:
    started = {name: App(name, tmp_path) for name in ("a", "b")}
    yield started
    for app in started.values():
        app.stop()


@pytest.fixture
def sidecars() -> Iterator[list[Sidecar]]:
    started: list[Sidecar] = []
    yield started
    for sc in started:
        sc.stop()


def web_endpoints(caller: Sidecar) -> set[str]:
    """The web cluster's endpoints in the config the caller's data plane runs now."""
    config = httpx.get(f"http://127.0.0.1:{caller.admin_port}/config", timeout=5).json()
    return {e["address"] for c in config["clusters"] if c["name"].endswith("default/web") for e in c["endpoints"]}


def listed(cp: ControlPlane, data_dir: Path) -> dict[int, str | None]:
    """Inbound port -> health, as `meshctl get endpoints web -o json` shows them."""
    out = ok(run_meshctl(cp, "get", "endpoints", "web", "-o", "json", data_dir=data_dir))
    return {e["port"]: e["health"] for e in json.loads(out)}


def table(cp: ControlPlane, data_dir: Path) -> dict[str, str]:
    """ADDRESS -> HEALTH, from the `meshctl get endpoints web` table."""
    lines = ok(run_meshctl(cp, "get", "endpoints", "web", data_dir=data_dir)).splitlines()
    assert lines[0].split()[:3] == ["ID", "ADDRESS", "HEALTH"], lines
    return {line.split()[1]: line.split()[2] for line in lines[1:]}


def start(cp: ControlPlane, workdir: Path, sidecars: list[Sidecar], service: str, app_port: int, **kw: Any) -> Sidecar:
    sc = Sidecar(cp, service, app_port, workdir, cp.join_token(service), **kw)
    sidecars.append(sc)
    return sc.start()


def test_only_healthy_instances_take_calls_and_get_endpoints_shows_it(
    cp: ControlPlane, apps: dict[str, App], sidecars: list[Sidecar], tmp_path: Path
) -> None:
    cp.apply(
        {"kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}},
        {"kind": "Service", "metadata": {"name": "caller"}, "spec": {"ports": [{"port": 80}]}},
    )
    apps["a"].set_healthy(True)  # b's app starts unhealthy
    a = start(cp, tmp_path, sidecars, "web", apps["a"].port, args=HEALTH_FLAGS)
    b = start(cp, tmp_path, sidecars, "web", apps["b"].port, args=HEALTH_FLAGS)
    port = unused_port()
    caller = start(cp, tmp_path, sidecars, "caller", unused_port(), upstreams={"web": port})
    at = {name: f"127.0.0.1:{sc.inbound_port}" for name, sc in (("a", a), ("b", b))}

    # b never passed: it is no endpoint, only a takes calls.
    wait_until(lambda: web_endpoints(caller) == {at["a"]}, timeout=30, what="only a in the caller's cluster")
    assert set(backends_seen(port, 10)) == {"a"}
    wait_until(lambda: listed(cp, tmp_path) == {a.inbound_port: "healthy", b.inbound_port: "unhealthy"}, timeout=20)
    assert table(cp, tmp_path) == {at["a"]: "healthy", at["b"]: "unhealthy"}

    # b turns healthy: it joins.
    apps["b"].set_healthy(True)
    wait_until(lambda: web_endpoints(caller) == set(at.values()), timeout=30, what="b to join the caller's cluster")
    wait_until(lambda: set(backends_seen(port, 20)) == {"a", "b"}, timeout=20, what="calls reaching both")

    # a turns unhealthy under load: it leaves, and every call succeeds through b.
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            failures.extend(s for s in backends_seen(port, 5) if s.startswith("!"))

    loader = threading.Thread(target=load)
    loader.start()
    try:
        apps["a"].set_healthy(False)
        wait_until(lambda: web_endpoints(caller) == {at["b"]}, timeout=30, what="a to leave the caller's cluster")
        assert set(backends_seen(port, 10)) == {"b"}
        assert listed(cp, tmp_path)[a.inbound_port] == "unhealthy"
        # ... and back when healthy again.
        apps["a"].set_healthy(True)
        wait_until(lambda: web_endpoints(caller) == set(at.values()), timeout=30, what="a to come back")
    finally:
        stop.set()
        loader.join(timeout=30)
    assert failures == [], failures
    assert listed(cp, tmp_path) == {a.inbound_port: "healthy", b.inbound_port: "healthy"}


def test_the_services_health_check_applies_without_flags(
    cp: ControlPlane, apps: dict[str, App], sidecars: list[Sidecar], tmp_path: Path
) -> None:
    check = {"httpGet": {"path": "/healthz"}, "periodSeconds": 1, "failureThreshold": 1}
    cp.apply(
        {"kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}], "healthCheck": check}},
        {"kind": "Service", "metadata": {"name": "caller"}, "spec": {"ports": [{"port": 80}]}},
    )
    a = start(cp, tmp_path, sidecars, "web", apps["a"].port)  # its app unhealthy
    port = unused_port()
    caller = start(cp, tmp_path, sidecars, "caller", unused_port(), upstreams={"web": port})
    wait_until(lambda: listed(cp, tmp_path) == {a.inbound_port: "unhealthy"}, timeout=20, what="a probed unhealthy")
    assert web_endpoints(caller) == set()
    apps["a"].set_healthy(True)
    wait_until(lambda: web_endpoints(caller) == {f"127.0.0.1:{a.inbound_port}"}, timeout=30, what="a to join")
    assert set(backends_seen(port, 5)) == {"a"}
    # The caller probes nothing: its health is None ("-"), and it was an endpoint all along.
    caller_eps = json.loads(ok(run_meshctl(cp, "get", "endpoints", "caller", "-o", "json", data_dir=tmp_path)))
    assert [e["health"] for e in caller_eps] == [None]
