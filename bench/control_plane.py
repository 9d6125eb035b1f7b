"""Control-plane benchmarks: how fast a route change reaches watching
sidecars, what holding 1,000 watchers costs, how long applying 10,000
routes takes. Each case runs its own `meshctl control-plane` process on a
fresh SQLite file.

    python bench/control_plane.py            # the recorded run (writes bench/README.md's table)
    python bench/control_plane.py --smoke    # small numbers, results in a temp dir (CI)

Watchers are simulated in this process with asyncio: each registers as a
distinct sidecar (its own ports), follows its snapshot stream as `meshctl
proxy` does, "applies" each snapshot with the data plane's own validator
(``meshctl.validate_config``, the Rust decoder `DataPlane.update()` runs
first) and ACKs. Push latency is from sending the route change to a
watcher having applied it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from meshctl import validate_config
from meshctl.client import ApiClient
from meshctl.secretfile import write_secret
from meshctl.sidecar.identity import request_identity

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from suite import CLK_TCK, free_port, machine, write_readme_table  # noqa: E402


@dataclass
class ControlPlane:
    proc: subprocess.Popen[bytes]
    url: str
    token: str
    #: Its data directory.
    work: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


@contextmanager
def control_plane(work: Path) -> Iterator[ControlPlane]:
    port = free_port()
    data = work / f"cp-{port}"
    log = (work / f"cp-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshctl", "control-plane", "--data-dir", str(data), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MESHCTL_LOG": "warning"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if (data / "admin.token").exists() and httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"control plane did not start; see {log.name}")
        time.sleep(0.05)
    try:
        yield ControlPlane(proc, url, (data / "admin.token").read_text().strip(), data)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def service(name: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name}, "spec": {"ports": [{"port": 80, "protocol": "http"}]}}


def canary(v2_weight: int) -> dict[str, Any]:
    return {
        "kind": "HTTPRoute",
        "metadata": {"name": "target-split"},
        "spec": {
            "parentRefs": [{"name": "target"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "target", "subset": {"version": "v1"}, "weight": 100 - v2_weight},
                        {"name": "target", "subset": {"version": "v2"}, "weight": v2_weight},
                    ]
                }
            ],
        },
    }


async def setup_mesh(client: httpx.AsyncClient, callers: int) -> None:
    docs = [service("target"), *(service(f"caller-{i}") for i in range(callers)), canary(0)]
    (await client.post("/api/v1/apply", json={"documents": docs})).raise_for_status()
    for i, version in enumerate(("v1", "v2")):
        body = {"address": "127.0.0.1", "port": 19000 + i, "labels": {"version": version}, "ttl_seconds": 3600}
        (await client.put("/api/v1/services/default/target/endpoints", json=body)).raise_for_status()


class Conn:
    """A keep-alive HTTP/1.1 connection on asyncio streams: far cheaper than a full client,
    so that one process can play 1,000 sidecars without being the bottleneck."""

    def __init__(self, host: str, port: int, token: str):
        self.host, self.port, self.token = host, port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        try:
            return await self._request(method, path, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            # The server closes idle keep-alive connections (uvicorn: after 5 s); one fresh try.
            self.close()
            self.writer = None
            return await self._request(method, path, body)

    async def _request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        self.writer.write(head.encode() + data)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length) if length else b""

    async def stream(self, path: str) -> AsyncIterator[bytes]:
        """The lines of a chunked streaming GET (the connection is the stream's from then on)."""
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.token}\r\n\r\n"
        self.writer.write(head.encode())
        status = int((await self.reader.readline()).split()[1])
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            pass
        if status != 200:
            raise ConnectionError(f"watch: {status}")
        buffered = b""
        while True:
            size = int((await self.reader.readline()).strip(), 16)
            if size == 0:
                return
            buffered += await self.reader.readexactly(size)
            await self.reader.readexactly(2)
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                yield line

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Watchers:
    """`n` simulated sidecars, each calling `target`; `acked[i]` is when watcher i ACKed each version."""

    def __init__(self, cp: ControlPlane, n: int, callers: int, svid: dict[str, str]):
        self.cp, self.n, self.callers = cp, n, callers
        #: The SVID files every watcher adds to its snapshots, as a sidecar adds its own.
        self.svid = svid
        self.acked: list[dict[int, float]] = [{} for _ in range(n)]
        self.errors = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, timeout: float = 120) -> None:
        self.tasks = [asyncio.create_task(self._run(i)) for i in range(self.n)]
        deadline = time.monotonic() + timeout
        while min((max(a, default=-1) for a in self.acked), default=0) < 0:  # every watcher holds a snapshot
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {sum(1 for a in self.acked if a)} of {self.n} watchers got a snapshot")
            await asyncio.sleep(0.05)

    async def _run(self, i: int) -> None:
        host, port = self.cp.url.removeprefix("http://").rsplit(":", 1)
        api, watch = Conn(host, int(port), self.cp.token), Conn(host, int(port), self.cp.token)
        # Callers of one service share their outbound ports, as a deployment's instances do.
        body = {
            "service": f"caller-{i % self.callers}",
            "address": "127.0.0.1",
            "inbound_port": 20000 + i,
            "app_port": 30000 + i,
            "upstreams": {"target": 40000 + i % self.callers},
            "ttl_seconds": 3600,
        }
        sid, version = None, -1
        while True:
            try:
                if sid is None:
                    status, raw = await api.request("PUT", "/api/v1/sidecars", body)
                    if status != 200:
                        raise ConnectionError(f"register: {status} {raw[:200]!r}")
                    sid = json.loads(raw)["id"]
                async for line in watch.stream(f"/api/v1/sidecars/{sid}/watch?version={version}"):
                    if not line:
                        continue  # keep-alive
                    snap = json.loads(line)
                    config = snap["config"]
                    config["identity"] = {**config.get("identity", {}), **self.svid}
                    validate_config(config)  # what DataPlane.update() runs first
                    version = snap["version"]
                    self.acked[i][version] = time.perf_counter()
                    await api.request("POST", f"/api/v1/sidecars/{sid}/status", {"version": version})
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as e:
                self.errors += 1
                if self.errors <= 5:
                    print(f"watcher {i}: {e}", file=sys.stderr)
                for c in (api, watch):
                    c.close()
                api, watch = Conn(host, int(port), self.cp.token), Conn(host, int(port), self.cp.token)
                await asyncio.sleep(0.2)

    def newest(self) -> int:
        return min(max(a) for a in self.acked)

    async def settled(self, quiet: float = 0.3) -> int:
        """Wait until every watcher holds the same version and nothing arrived for `quiet` seconds."""
        while True:
            tops = {max(a) for a in self.acked}
            last = max(max(a.values()) for a in self.acked)
            if len(tops) == 1 and time.perf_counter() - last >= quiet:
                return tops.pop()
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def svid_files(client: httpx.AsyncClient, cp: ControlPlane) -> dict[str, str]:
    """One real SVID (a join token, a CSR, the CA's answer) in a 0600 file beside the control
    plane's data, for the watchers to validate snapshots with."""
    token = (await client.post("/api/v1/services/default/target/join-tokens")).json()["token"]
    ident = await asyncio.to_thread(request_identity, ApiClient(cp.url, token), namespace="default", service="target")
    path = cp.work / "svid.pem"
    write_secret(path, ident.chain_pem.strip() + "\n" + ident.key_pem.strip())
    return {"cert_chain_file": str(path), "private_key_file": str(path)}


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


@asynccontextmanager
async def watching(
    cp: ControlPlane, watchers: int, callers: int = 10
) -> AsyncIterator[tuple[httpx.AsyncClient, Watchers]]:
    """A mesh with `watchers` simulated sidecars, each holding its first snapshot."""
    async with httpx.AsyncClient(base_url=cp.url, headers=cp.headers, timeout=120) as client:
        await setup_mesh(client, callers)
        w = Watchers(cp, watchers, callers, await svid_files(client, cp))
        await w.start()
        try:
            yield client, w
        finally:
            await w.stop()


async def change_route(client: httpx.AsyncClient, w: Watchers, v2_weight: int) -> tuple[int, float]:
    """Once the watchers are quiet, change the route; returns (the version they held, when the change
    was sent) after every watcher has applied a newer one."""
    before = await w.settled()
    sent = time.perf_counter()
    (await client.post("/api/v1/apply", json={"documents": [canary(v2_weight)]})).raise_for_status()
    while w.newest() <= before:
        await asyncio.sleep(0.002)
    return before, sent


async def push_latency(cp: ControlPlane, watchers: int, changes: int, callers: int = 10) -> dict[str, Any]:
    """Route changes one after another; each waits until every watcher applied it."""
    async with watching(cp, watchers, callers) as (client, w):
        latencies: list[float] = []
        cpu0, t_start = cp.cpu_seconds(), time.perf_counter()
        for k in range(changes):
            before, sent = await change_route(client, w, 10 + k % 2)
            latencies += [acked[min(v for v in acked if v > before)] - sent for acked in w.acked]
        elapsed = time.perf_counter() - t_start
        cpu = cp.cpu_seconds() - cpu0
    ms = [x * 1000 for x in latencies]
    return {
        "watchers": watchers,
        "changes": changes,
        "pushes": len(ms),
        "p50_ms": quantile(ms, 0.5),
        "p99_ms": quantile(ms, 0.99),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
        "cp_cpu_percent": 100 * cpu / elapsed,
        "cp_rss_mb": cp.rss_mb(),
        "watch_errors": w.errors,
    }


async def hold_watchers(cp: ControlPlane, watchers: int, seconds: float, changes: int) -> dict[str, Any]:
    """Hold `watchers` streams; measure the control plane's CPU idle and while pushing `changes` changes."""
    async with watching(cp, watchers) as (client, w):
        cpu0, t0 = cp.cpu_seconds(), time.perf_counter()
        await asyncio.sleep(seconds)
        idle = 100 * (cp.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
        cpu0, t0 = cp.cpu_seconds(), time.perf_counter()
        push_times = []
        for k in range(changes):
            _, sent = await change_route(client, w, 20 + k % 2)
            push_times.append(time.perf_counter() - sent)
        busy = 100 * (cp.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
        rss = cp.rss_mb()
    return {
        "watchers": watchers,
        "idle_cpu_percent": idle,
        "push_cpu_percent": busy,
        "all_acked_median_ms": 1000 * statistics.median(push_times),
        "cp_rss_mb": rss,
        "watch_errors": w.errors,
    }


def apply_routes(cp: ControlPlane, routes: int, services: int = 100) -> dict[str, Any]:
    """One `POST /api/v1/apply` (what `meshctl apply -f` sends) with `routes` HTTPRoutes."""
    docs = [service(f"svc-{i}") for i in range(services)]
    docs += [
        {
            "kind": "HTTPRoute",
            "metadata": {"name": f"route-{i}"},
            "spec": {
                "parentRefs": [{"name": f"svc-{i % services}"}],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": f"/r{i}"}}],
                        "backendRefs": [
                            {"name": f"svc-{i % services}", "weight": 90},
                            {"name": f"svc-{(i + 1) % services}", "weight": 10},
                        ],
                    }
                ],
            },
        }
        for i in range(routes)
    ]
    t0 = time.perf_counter()
    r = httpx.post(f"{cp.url}/api/v1/apply", json={"documents": docs}, headers=cp.headers, timeout=600)
    elapsed = time.perf_counter() - t0
    r.raise_for_status()
    created = sum(1 for x in r.json() if x["action"] == "created")
    t0 = time.perf_counter()
    again = httpx.post(f"{cp.url}/api/v1/apply", json={"documents": docs}, headers=cp.headers, timeout=600)
    again.raise_for_status()
    return {
        "routes": routes,
        "created": created,
        "seconds": elapsed,
        "reapply_unchanged_seconds": time.perf_counter() - t0,
    }


def markdown(r: dict[str, Any]) -> str:
    push, hold, apply = r["push"], r["hold"], r["apply"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    rows = [
        (
            f"route change reaches {push['watchers']} watching sidecars, applied (p99; median round)",
            f"{push['p99_ms']:.1f} ms (rounds: {', '.join(map(str, push.get('rounds_p99_ms', [])))}; "
            f"p50 {push['p50_ms']:.1f}; {push['pushes']} pushes a round)",
            "<= 100 ms",
            verdict(push["p99_ms"] <= 100),
        ),
        (
            f"{hold['watchers']} concurrent watchers: control-plane CPU idle / pushing",
            f"{hold['idle_cpu_percent']:.1f} % / {hold['push_cpu_percent']:.0f} % of a core "
            f"(all ACKed in {hold['all_acked_median_ms']:.0f} ms median, RSS {hold['cp_rss_mb']:.0f} MB)",
            "within one core",
            verdict(hold["push_cpu_percent"] <= 100),
        ),
        (
            f"apply {apply['routes']:,} routes (one request)",
            f"{apply['seconds']:.2f} s (unchanged re-apply {apply['reapply_unchanged_seconds']:.2f} s)",
            "<= 10 s",
            verdict(apply["seconds"] <= 10),
        ),
    ]
    lines = [f"Run {r['date']} on {r['machine']}.", "", "| target | measured | goal | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += [
        "",
        f"Watch errors (reconnects): {push['watch_errors']} with {push['watchers']} watchers, "
        f"{hold['watch_errors']} with {hold['watchers']}. Control-plane CPU while pushing to "
        f"{push['watchers']}: {push['cp_cpu_percent']:.0f} % of a core, RSS {push['cp_rss_mb']:.0f} MB.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--changes", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3, help="push rounds, each on a fresh control plane")
    ap.add_argument("--hold", type=int, default=1000, help="watchers held for the CPU case")
    ap.add_argument("--routes", type=int, default=10_000)
    ap.add_argument("--smoke", action="store_true", help="small numbers, nothing recorded")
    ap.add_argument("--out", type=Path, help="where control_plane.json goes (default bench/results; smoke: a temp dir)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.watchers, args.changes, args.hold, args.routes, args.rounds = 10, 3, 20, 200, 1
        args.out = args.out or Path(tempfile.mkdtemp(prefix="meshctl-cp-bench-"))
    args.out = args.out or HERE / "results"
    with tempfile.TemporaryDirectory(prefix="meshctl-cp-") as tmp:
        work = Path(tmp)
        rounds = []
        for _ in range(args.rounds):  # the tail is noisy on a shared 2-core machine: median of rounds
            with control_plane(work) as cp:
                rounds.append(asyncio.run(push_latency(cp, args.watchers, args.changes)))
            print("push", json.dumps(rounds[-1]), flush=True)
        push = dict(sorted(rounds, key=lambda r: r["p99_ms"])[len(rounds) // 2])
        push["rounds_p99_ms"] = [round(r["p99_ms"], 1) for r in rounds]
        with control_plane(work) as cp:
            hold = asyncio.run(hold_watchers(cp, args.hold, 3 if args.smoke else 10, 2 if args.smoke else 5))
        print("hold", json.dumps(hold), flush=True)
        with control_plane(work) as cp:
            apply = apply_routes(cp, args.routes)
        print("apply", json.dumps(apply), flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "push": push, "hold": hold, "apply": apply}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "control_plane.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    print(table)
    if not args.smoke:
        write_readme_table(table, "control-plane")
    return 0


def rewrite_table() -> None:
    """Re-render bench/README.md's table from bench/results/control_plane.json."""
    write_readme_table(markdown(json.loads((HERE / "results" / "control_plane.json").read_text())), "control-plane")


if __name__ == "__main__":
    sys.exit(main())
