"""`meshctl tap` end to end: a real control plane, pricing and frontend behind
real sidecars (mTLS), real traffic, and `meshctl tap pricing` as a process.
The requests pricing's sidecar serves arrive with method, path, status,
latency and the caller's identity; filters apply; headers outside the
allow-list never appear; the tap ends by itself at --limit. And with no tap
open, heartbeats and snapshots go on as before."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import unused_port, wait_until
from meshctl.demo.backends import DemoBackend
from meshproc import ControlPlane, Sidecar, get, meshctl_env, service

FRONTEND_ID = "spiffe://cluster.local/ns/default/sa/frontend"
ALLOWED_HEADERS = {"user-agent", "content-type", "content-length", "accept", "x-request-id"}
#: Sent with every request: none of it may reach the tap's output.
SECRET_HEADERS = {"Authorization": "Bearer hunter2", "Cookie": "session=s3cret", "User-Agent": "tap-test"}


@dataclass
class Mesh:
    cp: ControlPlane
    pricing: Sidecar
    frontend: Sidecar
    workdir: Path

    @property
    def pricing_port(self) -> int:
        """The frontend sidecar's local port for pricing."""
        return self.frontend.upstreams["pricing"]

    def call(self, path: str) -> int:
        return get("127.0.0.1", self.pricing_port, path, SECRET_HEADERS)[0]

    def tap(self, *args: str) -> subprocess.Popen[str]:
        """`meshctl tap ARGS` running, with the admin token."""
        cmd = [sys.executable, "-m", "meshctl", "tap", *args]
        env = meshctl_env(self.cp, self.workdir / "cli")
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def until_done(self, proc: subprocess.Popen[str], *paths: str) -> tuple[str, str]:
        """Send requests to `paths` in turn until the tap ends (its sidecar opens its tap a moment
        after the session does: the first requests may come before it); its (stdout, stderr)."""

        def sent() -> bool:
            for path in paths:
                self.call(path)
            return proc.poll() is not None

        wait_until(sent, timeout=90, what="meshctl tap to end at its --limit")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
        return out, err


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    cp = ControlPlane(tmp_path / "cp")
    cp.data_dir.mkdir()
    cp.start()
    app = DemoBackend("pricing").start()
    started: list[Sidecar] = []
    try:
        cp.apply(service("frontend"), service("pricing"))
        pricing = Sidecar(cp, "pricing", app.port, tmp_path, cp.join_token("pricing")).start()
        started.append(pricing)
        frontend = Sidecar(
            cp, "frontend", unused_port(), tmp_path, cp.join_token("frontend"), upstreams={"pricing": unused_port()}
        ).start()
        started.append(frontend)
        mesh = Mesh(cp, pricing, frontend, tmp_path)
        wait_until(lambda: mesh.call("/") == 200, timeout=30, what="pricing to answer through the frontend sidecar")
        yield mesh
    finally:
        for s in started:
            s.stop()
        app.stop()
        cp.stop()


def test_tap_streams_the_requests_with_their_metadata_filtered_and_redacted(mesh: Mesh) -> None:
    proc = mesh.tap("pricing", "-o", "json", "--path", "/api", "--limit", "4", "--seconds", "120")
    out, err = mesh.until_done(proc, "/api/items", "/other")

    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 4, out
    for e in events:
        assert (e["direction"], e["method"], e["path"], e["status"]) == ("inbound", "GET", "/api/items", 200)
        assert e["duration_ms"] > 0
        assert e["source"] == FRONTEND_ID  # the peer's identity from its mTLS certificate
        assert set(e["request_headers"]) <= ALLOWED_HEADERS
        assert e["request_headers"].get("user-agent") == "tap-test"
    assert "hunter2" not in out and "s3cret" not in out
    assert "the limit was reached; 4 requests" in err


def test_tap_table_with_a_status_filter(mesh: Mesh) -> None:
    proc = mesh.tap("default/pricing", "--status", "503", "--limit", "2", "--seconds", "120")
    out, _ = mesh.until_done(proc, "/status/503", "/api/items")

    header, *rows = out.splitlines()
    assert header.split() == ["TIME", "DIR", "METHOD", "AUTHORITY+PATH", "STATUS", "LATENCY", "PEER", "TRACE"]
    assert len(rows) == 2, out
    for row in rows:
        cells = row.split()
        assert cells[1:3] == ["in", "GET"] and cells[3].endswith("/status/503") and cells[4] == "503"
        assert cells[5].endswith("ms") and cells[6] == FRONTEND_ID


def test_with_no_tap_open_heartbeats_and_snapshots_go_on(mesh: Mesh) -> None:
    cp = mesh.cp

    def in_sync() -> bool:
        generation = cp.ok("GET", "/api/v1/mesh")["generation"]
        rows = cp.sidecars()
        return len(rows) == 2 and all(r["live"] and r["acked_version"] == generation for r in rows)

    wait_until(in_sync, timeout=30, what="both sidecars in sync")
    seen = {r["id"]: r["last_seen"] for r in cp.sidecars()}
    wait_until(
        lambda: all(r["last_seen"] > seen[r["id"]] for r in cp.sidecars()), timeout=30, what="a heartbeat from each"
    )
    cp.apply(service("inventory"))  # a new generation: both sidecars take and ACK it
    wait_until(in_sync, timeout=30, what="both sidecars to ACK the new generation")
    assert mesh.call("/") == 200
