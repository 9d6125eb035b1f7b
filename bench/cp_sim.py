"""Control-plane processes and simulated sidecars for bench/control_plane.py
and bench/cp_scale.py.

A simulated sidecar registers as its own sidecar (its own ports), follows its
snapshot stream as `meshctl proxy` does, "applies" each snapshot and ACKs it,
on asyncio streams: cheap enough for one process to play thousands.

Applying, when `validate` is on, is the data plane's own validator
(``meshctl.validate_config``, the Rust decoder `DataPlane.update()` runs
first) with a real SVID added, as a sidecar adds its own. Real sidecars apply
in their own processes, side by side; the simulated ones share this one. So
each watcher notes when its snapshot arrived and hands it to one applier,
which applies one snapshot per turn of the event loop (between two, every
stream that became readable notes its arrival): a watcher's time to
"applied" is its arrival plus its own apply time (`got`), not plus the apply
time of the watchers queued before it in this process. What this process
took, applying them one after another, is kept too (`serial`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from meshctl import validate_config

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from suite import CLK_TCK, free_port  # noqa: E402

#: The 10,000-route applies are one request each: above the default limits (1,000 documents, 4 MiB).
APPLY_LIMITS = {"MESHCTL_APPLY_MAX_DOCUMENTS": "20000", "MESHCTL_MAX_REQUEST_BYTES": str(64 * 1024 * 1024)}


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

    def counters(self, name: str) -> dict[str, float]:
        """The values of a counter of its /metrics, by label set."""
        text = httpx.get(f"{self.url}/metrics", headers=self.headers, timeout=30).text
        out = {}
        for line in text.splitlines():
            if line.startswith(name):
                labels, _, value = line.rpartition(" ")
                out[labels[len(name) :]] = float(value)
        return out


@contextmanager
def control_plane(
    work: Path, database_url: str | None = None, first: ControlPlane | None = None
) -> Iterator[ControlPlane]:
    """A control plane on a fresh SQLite file, or on `database_url`; `first`: the replica that made
    the database (its admin token, which only it writes to its data directory, and its CA
    key-encryption key, which every replica is given)."""
    token = first.token if first is not None else None
    port = free_port()
    data = work / f"cp-{port}"
    log = (work / f"cp-{port}.log").open("wb")
    args = [sys.executable, "-m", "meshctl", "control-plane", "--data-dir", str(data), "--port", str(port)]
    if database_url:
        args += ["--database-url", database_url]
    if first is not None:
        args += ["--ca-kek-file", str(first.work / "ca-kek")]
    env = {**os.environ, "MESHCTL_LOG": "warning", **APPLY_LIMITS}
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            ready = token is not None or (data / "admin.token").exists()
            if ready and httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"control plane did not start; see {log.name}")
        time.sleep(0.05)
    try:
        yield ControlPlane(proc, url, token or (data / "admin.token").read_text().strip(), data)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class Conn:
    """A keep-alive HTTP/1.1 connection on asyncio streams: far cheaper than a full client,
    so that one process can play thousands of sidecars without being the bottleneck."""

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
    """Simulated sidecars: watcher i registers `bodies[i]` with `cps[i % len(cps)]`. `got[i]`: when
    watcher i had applied each version, as a sidecar of its own would have (see the module
    docstring); `serial[i]`: when this process had."""

    def __init__(
        self, cps: list[ControlPlane], bodies: list[dict[str, Any]], svid: dict[str, str] | None, validate: bool = True
    ):
        self.cps, self.bodies, self.n = cps, bodies, len(bodies)
        #: The SVID files every watcher adds to its snapshots, as a sidecar adds its own.
        self.svid = svid or {}
        self.validate = validate
        self.got: list[dict[int, float]] = [{} for _ in range(self.n)]
        self.serial: list[dict[int, float]] = [{} for _ in range(self.n)]
        #: The newest version each watcher holds (-1: none yet).
        self.top = [-1] * self.n
        #: When the last snapshot arrived at any watcher (perf_counter).
        self.last = 0.0
        self.errors = 0
        #: ACKs sent and not answered yet.
        self.acking = 0
        self.tasks: list[asyncio.Task[None]] = []
        self._registered, self._everyone = 0, asyncio.Event()
        self._gate = asyncio.Semaphore(64)  # registrations in flight
        #: Snapshots arrived and not applied yet: (watcher, line, arrival, resolved once applied).
        self._arrivals: asyncio.Queue[tuple[int, bytes, float, asyncio.Future[int]]] = asyncio.Queue()

    async def start(self, timeout: float = 120) -> None:
        """Every watcher registers, then (once all have: a fleet's registrations would otherwise each
        make the control plane compile for the watchers already there) follows its stream."""
        self.tasks = [asyncio.create_task(self._run(i)) for i in range(self.n)]
        self.tasks.append(asyncio.create_task(self._apply()))
        deadline = time.monotonic() + timeout
        while min(self.held()) < 0:  # every watcher holds a snapshot
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {sum(1 for a in self.got if a)} of {self.n} watchers got a snapshot")
            await asyncio.sleep(0.05)

    async def _run(self, i: int) -> None:
        cp = self.cps[i % len(self.cps)]
        host, port = cp.url.removeprefix("http://").rsplit(":", 1)
        api, watch = Conn(host, int(port), cp.token), Conn(host, int(port), cp.token)
        sid, version = None, -1
        while True:
            try:
                if sid is None:
                    async with self._gate:
                        status, raw = await api.request("PUT", "/api/v1/sidecars", self.bodies[i])
                    if status != 200:
                        raise ConnectionError(f"register: {status} {raw[:200]!r}")
                    sid = json.loads(raw)["id"]
                    self._registered += 1
                    if self._registered == self.n:
                        self._everyone.set()
                await self._everyone.wait()
                async for line in watch.stream(f"/api/v1/sidecars/{sid}/watch?version={version}"):
                    if not line:
                        continue  # keep-alive
                    arrived = self.last = time.perf_counter()
                    applied: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                    self._arrivals.put_nowait((i, line, arrived, applied))
                    version = await applied
                    self.acking += 1
                    try:
                        await api.request("POST", f"/api/v1/sidecars/{sid}/status", {"version": version})
                    finally:
                        self.acking -= 1
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as e:
                self.errors += 1
                if self.errors <= 5:
                    print(f"watcher {i}: {e}", file=sys.stderr)
                for c in (api, watch):
                    c.close()
                api, watch = Conn(host, int(port), cp.token), Conn(host, int(port), cp.token)
                await asyncio.sleep(0.2)

    async def _apply(self) -> None:
        """Applies the arrived snapshots one at a time, one per turn of the event loop: between two,
        the streams that became readable note their arrival (a sidecar of its own would not wait
        for the others' validation to receive its snapshot)."""
        while True:
            i, line, arrived, applied = await self._arrivals.get()
            t0 = time.perf_counter()
            try:
                snap = orjson.loads(line)
                if self.validate:
                    config = snap["config"]
                    config["identity"] = {**config.get("identity", {}), **self.svid}
                    validate_config(config)  # what DataPlane.update() runs first
                version = snap["version"]
            except Exception as e:  # (handed to the watcher, which counts it)
                applied.set_exception(ValueError(f"apply: {e}"))
                continue
            done = time.perf_counter()
            self.got[i][version] = arrived + (done - t0)
            self.top[i] = max(self.top[i], version)
            self.serial[i][version] = done
            applied.set_result(version)
            await asyncio.sleep(0)

    def held(self) -> list[int]:
        """The version each watcher holds (-1: none yet)."""
        return list(self.top)

    async def quiet(self, seconds: float = 0.3) -> list[int]:
        """Once no snapshot arrived anywhere for `seconds` and every ACK was answered (a change's
        latency is measured from a control plane done with the last one): the versions held."""
        while time.perf_counter() - self.last < seconds or self.acking:
            await asyncio.sleep(0.02)
        return self.held()

    async def moved(self, before: list[int], which: range | list[int], timeout: float = 120) -> None:
        """Wait until every watcher in `which` applied a version newer than it held `before`."""
        deadline = time.monotonic() + timeout
        pending = list(which)
        while pending:
            pending = [i for i in pending if self.top[i] <= before[i]]
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} watchers never got the change (e.g. {pending[:5]})")
            # (arrival times are noted by the watchers: this loop only decides when to stop, and
            # must not take the CPU they need, thousands of them in this one process)
            await asyncio.sleep(0.002 if len(pending) < 200 else 0.05)

    def latencies(self, before: list[int], sent: float, which: range | list[int], serial: bool = False) -> list[float]:
        """Per watcher in `which`: seconds from `sent` to having applied the first version after `before`."""
        times = self.serial if serial else self.got
        return [times[i][min(v for v in times[i] if v > before[i])] - sent for i in which]

    def newer(self, before: list[int]) -> int:
        """How many watchers got a version newer than they held `before`."""
        return sum(1 for i in range(self.n) if self.top[i] > before[i])

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0
