"""The control plane at scale (run by bench/control_plane.py): 1,000 services,
10,000 HTTPRoutes and 5,000 simulated sidecars spread over 3 control-plane
replicas on one PostgreSQL database (a server of its own, started as the
tests start theirs: tests/pg.py).

Every sidecar of service svc-<s> calls `target` and its neighbour
svc-<s+1> (10 routes each); a change of `target`'s route is sent to the first
replica and must reach every watcher on every replica (the others learn of
it from the database: PostgreSQL NOTIFY, or the 1 s generation poll).

At this size the simulated sidecars do not run the data plane's validator
(it would take this one process ~0.3 ms a snapshot, 1.7 s for 5,000 one after
another, and it measures the sidecar, not the control plane): they parse each
snapshot, note it and ACK it. The 100-watcher case validates every snapshot.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent / "tests"))
from control_plane import canary, service  # noqa: E402
from cp_sim import ControlPlane, Watchers, control_plane, quantile  # noqa: E402


def mesh_documents(services: int, routes: int) -> list[dict[str, Any]]:
    docs = [service("target"), canary(0), *(service(f"svc-{i}") for i in range(services))]
    docs += [
        {
            "kind": "HTTPRoute",
            "metadata": {"name": f"route-{j}"},
            "spec": {
                "parentRefs": [{"name": f"svc-{j % services}"}],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": f"/r{j}"}}],
                        "backendRefs": [
                            {"name": f"svc-{j % services}", "weight": 90},
                            {"name": f"svc-{(j + 1) % services}", "weight": 10},
                        ],
                    }
                ],
            },
        }
        for j in range(routes)
    ]
    return docs


def sidecar(i: int, services: int) -> dict[str, Any]:
    s = i % services
    return {
        "service": f"svc-{s}",
        "address": "127.0.0.1",
        "inbound_port": 20000 + i,
        "app_port": 30000 + i,
        "upstreams": {"target": 40000, f"svc-{(s + 1) % services}": 40001},
        "ttl_seconds": 3600,
    }


async def _run(cps: list[ControlPlane], services: int, routes: int, sidecars: int, changes: int) -> dict[str, Any]:
    first = cps[0]
    async with httpx.AsyncClient(base_url=first.url, headers=first.headers, timeout=600) as client:
        t0 = time.perf_counter()
        (await client.post("/api/v1/apply", json={"documents": mesh_documents(services, routes)})).raise_for_status()
        for k, version in enumerate(("v1", "v2")):
            body = {"address": "127.0.0.1", "port": 19000 + k, "labels": {"version": version}, "ttl_seconds": 3600}
            (await client.put("/api/v1/services/default/target/endpoints", json=body)).raise_for_status()
        applied = time.perf_counter() - t0
        w = Watchers(cps, [sidecar(i, services) for i in range(sidecars)], None, validate=False)
        t0 = time.perf_counter()
        await w.start(timeout=1800)
        started = time.perf_counter() - t0
        try:
            await w.quiet(2.0)
            latencies: list[float] = []
            per_replica: list[list[float]] = [[] for _ in cps]
            cpu0, t_start = [cp.cpu_seconds() for cp in cps], time.perf_counter()
            for k in range(changes):
                before = await w.quiet(1.0)
                sent = time.perf_counter()
                (await client.post("/api/v1/apply", json={"documents": [canary(10 + k % 2)]})).raise_for_status()
                await w.moved(before, range(w.n), timeout=300)
                these = w.latencies(before, sent, range(w.n))
                latencies += these
                for i, x in enumerate(these):
                    per_replica[i % len(cps)].append(x)
            elapsed = time.perf_counter() - t_start
            cpu = [(cp.cpu_seconds() - c0) / elapsed for cp, c0 in zip(cps, cpu0, strict=True)]
        finally:
            await w.stop()
    ms = [x * 1000 for x in latencies]
    result = {
        "services": services,
        "routes": routes,
        "watchers": sidecars,
        "replicas": len(cps),
        "changes": changes,
        "p50_ms": quantile(ms, 0.5),
        "p99_ms": quantile(ms, 0.99),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
        "replica_p99_ms": [quantile([x * 1000 for x in r], 0.99) for r in per_replica],
        "replica_cpu_cores_during_changes": cpu,
        "replica_rss_mb": [cp.rss_mb() for cp in cps],
        "mesh_apply_seconds": applied,
        "watchers_start_seconds": started,
        "watch_errors": w.errors,
    }
    result["note"] = (
        f"Scale case: the mesh applied in {applied:.1f} s; {sidecars:,} sidecars registered and holding a "
        f"snapshot after {started:.0f} s; replicas' CPU during the changes "
        f"{', '.join(f'{c:.2f}' for c in cpu)} CPU s per s, RSS "
        f"{', '.join(f'{m:.0f}' for m in result['replica_rss_mb'])} MB; watch errors {w.errors}. "
        "These watchers parse and ACK but do not validate (bench/cp_scale.py says why)."
    )
    return result


def scale_case(
    work: Path, *, services: int, routes: int, sidecars: int, changes: int, replicas: int = 3
) -> dict[str, Any]:
    import pg  # tests/pg.py: a PostgreSQL server of its own, in a temporary directory

    url = pg.database("cpbench")
    with ExitStack() as stack:
        cps = [stack.enter_context(control_plane(work, url))]
        cps += [stack.enter_context(control_plane(work, url, cps[0])) for _ in range(replicas - 1)]
        return asyncio.run(_run(cps, services, routes, sidecars, changes))
