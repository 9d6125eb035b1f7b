"""A control plane's CPU per ACK: one simulated sidecar POSTs its ACK again and again on one
keep-alive connection; the control plane's CPU time (from /proc) over the requests.

    python bench/cp_ack.py [REQUESTS]

What the ACKs' short path (control/ackpath.py) is measured by; bench/README.md, "Control plane".
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from control_plane import caller, setup_mesh  # noqa: E402
from cp_sim import Conn, control_plane  # noqa: E402


async def ack_cost(requests: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work, control_plane(Path(work)) as cp:
        async with httpx.AsyncClient(base_url=cp.url, headers=cp.headers) as client:
            await setup_mesh(client, 10)
        host, port = cp.url.removeprefix("http://").rsplit(":", 1)
        conn = Conn(host, int(port), cp.token)
        status, raw = await conn.request("PUT", "/api/v1/sidecars", caller(0, 10))
        path = f"/api/v1/sidecars/{json.loads(raw)['id']}/status"
        for _ in range(200):  # warm: the token check remembered, the connection open
            await conn.request("POST", path, {"version": 1})
        cpu0, t0 = cp.cpu_seconds(), time.perf_counter()
        for _ in range(requests):
            status, _ = await conn.request("POST", path, {"version": 1})
            if status != 204:
                raise RuntimeError(f"ACK answered {status}")
        cpu, wall = cp.cpu_seconds() - cpu0, time.perf_counter() - t0
        conn.close()
    return {"requests": requests, "cpu_us_per_ack": cpu / requests * 1e6, "wall_us_per_ack": wall / requests * 1e6}


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    print(json.dumps(asyncio.run(ack_cost(requests))))


if __name__ == "__main__":
    main()
