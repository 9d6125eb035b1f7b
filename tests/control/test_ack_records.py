"""ACKs reach the sidecar's row (written in batches, see control.push): what
`meshctl status` and `apply --wait` read. Against a real control plane."""

from __future__ import annotations

from helpers import wait_until
from meshproc import ControlPlane, module_control_plane, service

cp = module_control_plane()


def test_an_ack_is_recorded_and_clears_an_older_nack(cp: ControlPlane) -> None:
    cp.apply(service("acked"))
    body = {"service": "acked", "address": "127.0.0.1", "inbound_port": 15201, "app_port": 9000}
    sidecar = cp.ok("PUT", "/api/v1/sidecars", json=body)
    generation = sidecar["mesh_generation"]

    def row() -> dict[str, object]:
        return next(r for r in cp.sidecars() if r["id"] == sidecar["id"])

    cp.ok("POST", f"/api/v1/sidecars/{sidecar['id']}/status", json={"version": generation - 1, "error": "bad"})
    assert row()["last_error"] == "bad"
    cp.ok("POST", f"/api/v1/sidecars/{sidecar['id']}/status", json={"version": generation})
    # (Sidecar has a `version` column: the batch's bind parameter once clashed with it, and no ACK was written.)
    wait_until(lambda: row()["acked_version"] == generation, timeout=15, what="the ACK to be recorded")
    assert row()["last_error"] is None
