"""Only the sidecars a change affects get a new snapshot (control/fanout.py), and
none misses a real one. Against a real control plane: sidecars long-poll their
snapshot as `meshctl proxy` follows its stream."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from helpers import wait_until
from meshproc import ControlPlane, http_route, service

#: Seconds a watch that must not be woken is held: long enough for a wrongly woken one to answer.
QUIET_WAIT = 3.0


def weighted(name: str, parent: str, v2: int) -> dict[str, Any]:
    refs = [
        {"name": parent, "subset": {"v": "1"}, "weight": 100 - v2},
        {"name": parent, "subset": {"v": "2"}, "weight": v2},
    ]
    return http_route(name, parent, {"backendRefs": refs})


def register(cp: ControlPlane, svc: str, port: int, upstreams: dict[str, int] | None = None) -> int:
    body = {"service": svc, "address": "127.0.0.1", "inbound_port": port, "app_port": port + 1000}
    return int(cp.ok("PUT", "/api/v1/sidecars", json=body | {"upstreams": upstreams or {}})["id"])


def poll(cp: ControlPlane, sidecar: int, version: int, wait: float) -> dict[str, Any] | None:
    """The long-poll's answer: the snapshot, or None (304: nothing newer for it within `wait`)."""
    r = cp.call("GET", f"/api/v1/sidecars/{sidecar}/snapshot", params={"version": version, "wait": wait})
    assert r.status_code in (200, 304), r.text
    return r.json() if r.status_code == 200 else None


def weights(snapshot: dict[str, Any], listener: str) -> list[int]:
    out = next(x for x in snapshot["config"]["listeners"] if x["name"] == listener)
    return [b["weight"] for b in out["routes"][0]["backends"]]


def row(cp: ControlPlane, sidecar: int) -> dict[str, Any]:
    return next(r for r in cp.sidecars() if r["id"] == sidecar)


def test_a_change_to_a_service_wakes_its_callers_and_not_an_unrelated_sidecar(cp: ControlPlane) -> None:
    cp.apply(service("api"), service("web"), service("batch"), weighted("api-split", "api", 0))
    caller = register(cp, "web", 15301, {"api": 16301})
    unrelated = register(cp, "batch", 15302)
    first = {s: poll(cp, s, -1, 0) for s in (caller, unrelated)}
    for s, snap in first.items():  # both run their first snapshot
        assert snap is not None
        cp.ok("POST", f"/api/v1/sidecars/{s}/status", json={"version": snap["version"]})
    held = {s: snap["version"] for s, snap in first.items() if snap is not None}
    with ThreadPoolExecutor(2) as pool:
        woken = pool.submit(poll, cp, caller, held[caller], 30)
        quiet = pool.submit(poll, cp, unrelated, held[unrelated], QUIET_WAIT)
        wait_until(lambda: watching(cp) == 2, timeout=15, what="both watches to be held")
        cp.apply(weighted("api-split", "api", 30))
        pushed = woken.result()
        assert quiet.result() is None  # the unrelated sidecar was not woken
    assert pushed is not None and pushed["version"] > held[caller]
    assert weights(pushed, "outbound/default/api") == [70, 30]
    generation = cp.ok("GET", "/api/v1/mesh")["generation"]
    assert generation >= pushed["version"]
    # Its snapshot is the one it holds, at the version it holds, though the mesh moved on ...
    again = poll(cp, unrelated, -1, 0)
    assert again is not None and again["version"] == held[unrelated]
    # ... and its ACK of that config stands for the new generation: `apply --wait` and `meshctl
    # status` see it in sync without a push.
    wait_until(lambda: row(cp, unrelated)["acked_version"] == generation, timeout=15, what="the ACK carried")


def watching(cp: ControlPlane) -> float:
    text = cp.call("GET", "/metrics").text
    line = next(x for x in text.splitlines() if x.startswith('meshctl_control_watchers{kind="long_poll"}'))
    return float(line.rsplit(" ", 1)[1])


def test_a_real_change_is_never_missed_and_versions_never_go_back(cp: ControlPlane) -> None:
    cp.apply(service("api"), service("web"), service("batch"), weighted("api-split", "api", 0))
    caller = register(cp, "web", 15311, {"api": 16311})
    snap = poll(cp, caller, -1, 0)
    assert snap is not None
    # Changes one after another while the sidecar follows: it ends on the last, always moving up.
    seen = [snap["version"]]
    for v2 in range(1, 21):
        cp.apply(weighted("api-split", "api", v2))
        snap = poll(cp, caller, seen[-1], 30)
        assert snap is not None and snap["version"] > seen[-1]
        seen.append(snap["version"])
        while (newer := poll(cp, caller, seen[-1], 0.2)) is not None:  # a coalesced step in between
            assert newer["version"] > seen[-1]
            seen.append(newer["version"])
            snap = newer
        assert weights(snap, "outbound/default/api") == [100 - v2, v2]
    # Changes elsewhere move the generation past the sidecar's version, its config unchanged.
    held = seen[-1]
    cp.apply(weighted("batch-split", "batch", 10))
    cp.apply(weighted("batch-split", "batch", 20))
    generation = cp.ok("GET", "/api/v1/mesh")["generation"]
    assert generation >= held + 2
    assert poll(cp, caller, held, 1.0) is None
    # A version this process never handed out (another replica's, or its own before a restart):
    # its content is unknown here, so the current config comes at once, stamped the current
    # generation: one redundant push, never a lower version.
    foreign = poll(cp, caller, held + 1, 0)
    assert foreign is not None and foreign["version"] == generation
    assert foreign["config"] == snap["config"]
    assert poll(cp, caller, generation, 1.0) is None
    # A version from a replica further on than this one: nothing to send until the mesh passes it.
    assert poll(cp, caller, generation + 5, 1.0) is None


def test_a_nack_of_an_unchanged_config_is_carried_to_the_new_generation(cp: ControlPlane) -> None:
    cp.apply(service("api"), service("batch"))
    refusing = register(cp, "batch", 15321)
    snap = poll(cp, refusing, -1, 0)
    assert snap is not None
    cp.ok("POST", f"/api/v1/sidecars/{refusing}/status", json={"version": snap["version"], "error": "refused"})
    with ThreadPoolExecutor(1) as pool:
        quiet = pool.submit(poll, cp, refusing, snap["version"], QUIET_WAIT)
        wait_until(lambda: watching(cp) == 1, timeout=15, what="the watch to be held")
        cp.apply(weighted("api-split", "api", 10))
        assert quiet.result() is None
    generation = cp.ok("GET", "/api/v1/mesh")["generation"]
    # It refuses the config of the new generation too (the same config): `apply --wait` says so.
    wait_until(lambda: row(cp, refusing)["nacked_version"] == generation, timeout=15, what="the NACK carried")
    assert row(cp, refusing)["last_error"] == "refused"
