"""A control plane restarted after losing a sidecar's ACK (issue 14, item 7, found by
bench/chaos.py's cp-kill case): ACKs are written in batches every 0.2 s (control.push), so a
kill -9 right after a push loses those it had answered 204 to. The sidecar, running that version
and asking only for newer ones, never sent it again: `meshctl status` showed it behind (and
`apply --wait` waited) until the next change. Now the sidecar sends its last report again each time
its watch reconnects. The lost ACK is made here the way the kill leaves it, by rolling the row back
while the control plane is down. Real processes: a control plane and a `meshctl proxy` sidecar."""

from __future__ import annotations

from pathlib import Path

from helpers import wait_until
from meshctl.demo.backends import DemoBackend
from meshproc import ControlPlane, Sidecar, service


def test_a_lost_ack_is_sent_again_when_the_watch_reconnects(cp: ControlPlane, tmp_path: Path) -> None:
    cp.apply(service("web"))
    app = DemoBackend("web").start()
    sidecar = Sidecar(cp, "web", app.port, tmp_path, cp.join_token("web"))
    try:
        sidecar.start()

        def in_sync() -> bool:
            mesh = cp.ok("GET", "/api/v1/mesh")
            return bool(mesh["live_sidecars"] == 1 and mesh["in_sync"] == 1)

        wait_until(in_sync, timeout=20, what="the sidecar's ACK")
        cp.stop()
        assert cp.sql("UPDATE sidecar SET acked_version = NULL") == [(1,)]
        cp.start()
        # Nothing changed in the mesh: no new snapshot, so only a re-sent ACK brings it back in sync.
        wait_until(in_sync, timeout=30, what="the sidecar in sync after the restart")
    finally:
        sidecar.stop()
        app.stop()
