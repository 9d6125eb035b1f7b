"""End to end: `meshctl up -f` as a user runs it (the real binary, its embedded control plane,
each app under `meshctl run`): three services from a compose file in tmp_path come up, print
one status table, and answer end to end through their sidecars over mTLS; SIGINT stops every
process it started (run supervisors, sidecars, apps, the control plane) and exits 0; a bad file
exits 2 naming the field."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import wait_until
from meshctl.up.procs import descendants, start_time

MESHCTL = [sys.executable, "-m", "meshctl"]


def backend(name: str, upstream: str | None = None) -> str:
    """The demo backend as a command (`{python}` and `{port}` filled in by up)."""
    return f"{{python}} -m meshctl.demo.backends --name {name} --port {{port}}" + (
        f" --upstream {upstream}" if upstream else ""
    )


COMPOSE: dict[str, Any] = {
    "apps": {
        "web": {"command": backend("web", "orders"), "upstreams": ["orders"], "labels": {"tier": "edge"}},
        "orders": {"command": backend("orders", "stock"), "upstreams": ["stock"]},
        "stock": {"command": backend("stock"), "httpProxy": False},
    },
    # web takes plaintext from the test (outside the mesh); between sidecars every hop is mTLS.
    "resources": [
        {"kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}], "mtls": "PERMISSIVE"}}
    ],
}


class Up:
    """A running `meshctl up`, its output collected by a reader thread."""

    def __init__(self, compose: Path, workdir: Path):
        self.workdir = workdir
        self.proc = subprocess.Popen(
            [*MESHCTL, "up", "-f", str(compose), "--workdir", str(workdir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "160"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.workdir / "up.json").read_text()))

    def app(self, name: str) -> dict[str, Any]:
        return next(a for a in self.state()["apps"] if a["name"] == name)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    compose = tmp_path / "apps.yaml"
    compose.write_text(yaml.safe_dump(COMPOSE))
    running = Up(compose, tmp_path / "work")
    try:
        wait_until(
            lambda: "all up" in running.output() or running.proc.poll() is not None,
            timeout=150,
            what="meshctl up to bring the mesh up",
        )
        assert running.proc.poll() is None, running.output()
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            for pid in descendants(running.proc.pid):
                os.kill(pid, signal.SIGKILL)
        running.proc.wait(30)


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return dict(json.loads(r.read()))


def test_three_services_answer_through_their_sidecars_and_sigint_leaves_nothing(up: Up) -> None:
    out = up.output()
    # One status table, a row per app with its ports, every one running and ready.
    for name in ("web", "orders", "stock"):
        row = next(line for line in out.splitlines() if line.startswith(f"│ {name} "))
        assert "running" in row and "ready" in row, out
        assert str(up.app(name)["inbound_port"]) in row, out
    # Each app's output is relayed, prefixed by its name.
    assert any(line.startswith("stock") and "| stock on 127.0.0.1:" in line for line in up.lines), out

    # web -> orders -> stock, each hop through the caller's sidecar and the callee's.
    answer = get(f"http://127.0.0.1:{up.app('web')['inbound_port']}/items/7")
    assert answer["backend"] == "web"
    assert answer["upstream"]["backend"] == "orders"
    assert answer["upstream"]["upstream"]["backend"] == "stock"
    assert answer["upstream"]["upstream"]["path"] == "/items/7"
    # mTLS between sidecars: the callees' inbound listeners counted handshakes, and no plaintext.
    for name in ("orders", "stock"):
        tls = get(f"http://127.0.0.1:{up.app(name)['admin_port']}/stats")["listeners"]["inbound"]["tls"]
        assert tls["handshakes"] >= 1 and tls["plaintext_accepted"] == 0, (name, tls)
    # httpProxy: false -> stock's sidecar has no HTTP proxy listener; the others have one.
    listeners = {n: get(f"http://127.0.0.1:{up.app(n)['admin_port']}/stats")["listeners"] for n in ("web", "stock")}
    assert "http-proxy" in listeners["web"] and "http-proxy" not in listeners["stock"]
    # The token files are the owner's alone.
    for token in (up.workdir / "tokens").iterdir():
        assert token.stat().st_mode & 0o777 == 0o600, token

    # Every process below `up`: the control plane, three `meshctl run`s, their sidecars and apps.
    below = descendants(up.proc.pid)
    started = {pid: start_time(pid) for pid in below}
    runs = [a["pid"] for a in up.state()["apps"]]
    assert set(runs) <= set(below) and up.state()["control_plane"]["pid"] in below
    assert all(len(descendants(pid)) >= 2 for pid in runs), "each run has a sidecar and an app"
    assert len(below) >= 1 + 3 * 3

    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(60) == 0, up.output()
    left = [pid for pid, t in started.items() if start_time(pid) == t]
    assert left == [], (left, up.output())
    out = up.output()
    # Callers stopped before what they call: web's app exits before orders', orders' before stock's.
    exits = [
        next(i for i, line in enumerate(up.lines) if line.startswith(n) and "app exited" in line)
        for n in ("web", "orders", "stock")
    ]
    assert exits == sorted(exits), out
    assert "stopped" in up.lines[-1]


def test_a_bad_file_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = {"apps": {"web": {"command": "x {port}", "upstreams": ["ghost"], "protocol": "smtp"}}}
    compose = tmp_path / "apps.yaml"
    compose.write_text(yaml.safe_dump(bad))
    out = subprocess.run([*MESHCTL, "up", "-f", str(compose)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "apps.web.protocol: Input should be 'http', 'http2', 'grpc' or 'tcp'" in out.stderr
    # Nothing was started: no control plane, no work dir output.
    assert out.stdout == ""

    unknown = {"apps": {"web": {"command": "x", "upstreams": ["ghost"]}}}
    compose.write_text(yaml.safe_dump(unknown))
    out = subprocess.run([*MESHCTL, "up", "-f", str(compose)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "apps.web.upstreams[0]: no app serves 'ghost' and no resource defines it" in out.stderr
