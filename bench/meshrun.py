"""A real mesh for the long runs (bench/soak.py, bench/chaos.py): a control
plane process on a SQLite file, `meshctl backend` apps, a `meshctl proxy`
sidecar process in front of each, open-loop load through the client's
sidecar with the built-in generator, and samples of every mesh process's
RSS and open file descriptors from /proc.

The mesh: services `client` (the load's own sidecar, with local ports for
`api` and `catalog`), `api` (two instances, labels version=v1 and v2) and
`catalog` (one). Sidecars talk mTLS to each other with the SVIDs the control
plane issues, as every mesh does. An HTTPRoute `api-split` weighs api's two
subsets; `Mesh.change_route()` flips its weights (20/80 <-> 80/20), a config
change every sidecar that calls api receives.

Every process here listens on 127.0.0.1 and is stopped at the end (SIGTERM,
then SIGKILL), whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from meshctl import Bench

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from suite import free_port, machine  # noqa: E402

MESHCTL = [sys.executable, "-m", "meshctl"]
#: The load generator's connections per upstream: no more requests than this are ever in flight to
#: one upstream service, which bounds the connections any sidecar's pools may need for them.
CONNECTIONS = 16
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `predicate` until it is truthy; RuntimeError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, OSError):
            if value := predicate():
                return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    return out.stdout.strip() or "unknown"


def run_info() -> dict[str, Any]:
    """When, where and what: for the JSON results and the README line."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "commit": commit(),
        "load_average": os.getloadavg()[0],
    }


# === processes ===


@dataclass
class Process:
    """One mesh process, logging to its own file, restartable with the same arguments."""

    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def launch(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen and self.popen.poll() is None else None

    def signal(self, sig: int) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 20) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def sample(self) -> dict[str, int] | None:
        """RSS (kB) and open file descriptors (all, sockets, the rest), from /proc; None when it is
        not running."""
        pid = self.pid
        if pid is None:
            return None
        try:
            rss = next(
                int(line.split()[1])
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
            fds = os.listdir(f"/proc/{pid}/fd")
            sockets = 0
            for fd in fds:
                with contextlib.suppress(OSError):  # (closed since the listing)
                    sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
            return {"pid": pid, "rss_kb": rss, "fds": len(fds), "sockets": sockets, "files": len(fds) - sockets}
        except (OSError, StopIteration):
            return None

    def tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""


class ControlPlane(Process):
    """`meshctl control-plane` on its data dir and port; a restart keeps both."""

    def __init__(self, work: Path):
        self.data_dir = work / "cp"
        self.port = free_port()
        argv = [*MESHCTL, "control-plane", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        super().__init__("control-plane", argv, work / "control-plane.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ControlPlane:
        self.launch()
        wait_for(self.healthy, 60, "the control plane to serve")
        return self

    def healthy(self) -> bool:
        if self.popen and self.popen.poll() is not None:
            raise RuntimeError(f"the control plane exited {self.popen.returncode}:\n{self.tail()}")
        admin = self.data_dir / "admin.token"
        return admin.exists() and httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        token = (self.data_dir / "admin.token").read_text().strip()
        r = httpx.request(
            method, f"{self.url}{path}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )
        r.raise_for_status()
        return r.json() if r.content else None

    def apply(self, *documents: dict[str, Any], timeout: float = 30) -> Any:
        return self.call("POST", "/api/v1/apply", {"documents": list(documents)}, timeout=timeout)


class Sidecar(Process):
    """`meshctl proxy --control-plane` in front of one app; /ready and /stats on its admin port."""

    def __init__(
        self,
        cp: ControlPlane,
        work: Path,
        name: str,
        service: str,
        app_port: int,
        *,
        labels: dict[str, str] | None = None,
        upstreams: dict[str, int] | None = None,
        flags: tuple[str, ...] = (),
    ):
        self.service = service
        self.admin_port, self.inbound_port = free_port(), free_port()
        self.upstreams = upstreams or {}
        token = work / f"{name}.join-token"
        token.write_text(cp.call("POST", f"/api/v1/services/default/{service}/join-tokens")["token"])
        token.chmod(0o600)
        argv = [*MESHCTL, "proxy", "--control-plane", cp.url, "--service", service]
        argv += ["--app-port", str(app_port), "--inbound-port", str(self.inbound_port)]
        argv += ["--admin-port", str(self.admin_port), "--token-file", str(token), "--cache-dir", str(work / "cache")]
        argv += ["--workers", "1"]
        argv += [a for k, v in (labels or {}).items() for a in ("--label", f"{k}={v}")]
        argv += [a for k, v in self.upstreams.items() for a in ("--upstream", f"{k}={v}")]
        super().__init__(name, [*argv, *flags], work / f"sidecar-{name}.log")

    def start(self) -> Sidecar:
        self.launch()
        wait_for(self.ready, 60, f"sidecar {self.name} to be ready")
        return self

    def ready(self) -> bool:
        if self.popen and self.popen.poll() is not None:
            raise RuntimeError(f"sidecar {self.name} exited {self.popen.returncode}:\n{self.tail()}")
        return httpx.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=2).status_code == 200

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"http://127.0.0.1:{self.admin_port}/stats", timeout=5).json())


def backend(work: Path, name: str) -> tuple[Process, int]:
    """`meshctl backend` answering its own name (so a test can tell the instances apart)."""
    port = free_port()
    argv = [*MESHCTL, "backend", "--http", f"127.0.0.1:{port}", "--body", name]
    p = Process(f"app-{name}", argv, work / f"app-{name}.log")
    p.launch()
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200, 30, f"app {name}")
    return p, port


# === the mesh ===


def service(name: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name}, "spec": {"ports": [{"port": 80, "protocol": "http"}]}}


def api_split(v2_weight: int | None) -> dict[str, Any]:
    """api's two subsets weighed v1 : v2 = (100 - v2_weight) : v2_weight; None: every api instance
    alike, whatever its version."""
    if v2_weight is None:
        rule: dict[str, Any] = {"backendRefs": [{"name": "api"}]}
        return {
            "kind": "HTTPRoute",
            "metadata": {"name": "api-split"},
            "spec": {"parentRefs": [{"name": "api"}], "rules": [rule]},
        }
    return {
        "kind": "HTTPRoute",
        "metadata": {"name": "api-split"},
        "spec": {
            "parentRefs": [{"name": "api"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "api", "subset": {"version": "v1"}, "weight": 100 - v2_weight},
                        {"name": "api", "subset": {"version": "v2"}, "weight": v2_weight},
                    ]
                }
            ],
        },
    }


@dataclass
class Mesh:
    work: Path
    cp: ControlPlane
    apps: dict[str, Process] = field(default_factory=dict)
    sidecars: dict[str, Sidecar] = field(default_factory=dict)
    v2_weight: int = 20
    route_changes: int = 0

    @property
    def client(self) -> Sidecar:
        return self.sidecars["client"]

    def url(self, upstream: str) -> str:
        return f"http://127.0.0.1:{self.client.upstreams[upstream]}/"

    def members(self) -> list[Process]:
        """The processes whose resources are sampled: the control plane and every sidecar."""
        return [self.cp, *self.sidecars.values()]

    def change_route(self, timeout: float = 30) -> None:
        """Flip api-split's weights (one config change through the API)."""
        self.v2_weight = 100 - self.v2_weight
        self.cp.apply(api_split(self.v2_weight), timeout=timeout)
        self.route_changes += 1

    def config_version(self) -> int:
        """The snapshot version the client's data plane runs."""
        return int(self.client.stats()["config"]["version"])

    def stop(self) -> None:
        for p in [*self.sidecars.values(), *self.apps.values(), self.cp]:
            with contextlib.suppress(Exception):
                p.stop()


def answers(url: str) -> str | None:
    r = httpx.get(url, timeout=5)
    return r.text.strip() if r.status_code == 200 else None


@contextlib.contextmanager
def running_mesh(work: Path, *, sidecar_flags: tuple[str, ...] = ()) -> Iterator[Mesh]:
    """The mesh of the module docstring, ready (both api subsets and catalog answer through the
    client's sidecar, over mTLS); everything stopped on the way out."""
    cp = ControlPlane(work)
    mesh = Mesh(work, cp)
    try:
        cp.start()
        cp.apply(service("client"), service("api"), service("catalog"), api_split(mesh.v2_weight))
        for name in ("api-v1", "api-v2", "catalog", "client"):
            mesh.apps[name], _ = app = backend(work, name)
            svc, _, version = name.partition("-")
            labels = {"version": version} if version else {}
            ups = {"api": free_port(), "catalog": free_port()} if name == "client" else {}
            mesh.sidecars[name] = Sidecar(
                cp, work, name, svc, app[1], labels=labels, upstreams=ups, flags=sidecar_flags
            )
        for s in mesh.sidecars.values():
            s.start()
        wait_for(lambda: answers(mesh.url("catalog")) == "catalog", 60, "catalog through the mesh")
        seen: set[str] = set()
        wait_for(
            lambda: seen.add(answers(mesh.url("api")) or "") or {"api-v1", "api-v2"} <= seen, 60, "both api subsets"
        )
        wait_for(lambda: all(s.stats().get("identity") for s in mesh.sidecars.values()), 30, "every sidecar's SVID")
        yield mesh
    finally:
        mesh.stop()


# === load ===


@dataclass
class Load:
    """Open-loop load through the client's sidecar: a `Bench` per upstream at its rate, polled every
    second so that the time of every failure is known (`timeline`)."""

    targets: dict[str, tuple[str, float]]  # name -> (url, rps)
    duration: float
    connections: int = CONNECTIONS
    started: float = 0.0
    benches: dict[str, Bench] = field(default_factory=dict)
    #: (seconds since start, name, requests done, errors) once a second.
    timeline: list[tuple[float, str, int, int]] = field(default_factory=list)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    _poller: threading.Thread | None = None

    def start(self) -> Load:
        for name, (url, rps) in self.targets.items():
            options = {"url": url, "rps": rps, "duration": self.duration, "connections": self.connections}
            self.benches[name] = Bench(options | {"threads": 1, "timeout": 10})
        self.started = time.monotonic()
        for b in self.benches.values():
            b.start()
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()
        return self

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _poll(self) -> None:
        while len(self.reports) < len(self.benches):
            for name, b in self.benches.items():
                if name in self.reports:
                    continue
                done, errors, _, finished = b.progress()
                self.timeline.append((round(self.elapsed(), 1), name, done, errors))
                if finished and (report := b.wait(0)) is not None:
                    self.reports[name] = report
            time.sleep(0.5)

    def errors_now(self) -> int:
        return sum(b.progress()[1] for b in self.benches.values())

    def done_now(self) -> int:
        return sum(b.progress()[0] for b in self.benches.values())

    def wait(self) -> dict[str, Any]:
        assert self._poller is not None
        self._poller.join(self.duration + 120)
        return self.summary()

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *exc: object) -> None:
        if len(self.reports) < len(self.benches):  # (a case that failed half-way)
            self.stop()

    def stop(self) -> dict[str, Any]:
        """End the load now (its reports count what was done so far)."""
        for b in self.benches.values():
            b.cancel()
        return self.wait()

    def counts_at(self, t: float) -> tuple[int, int]:
        """(requests, failures) up to `t` seconds after the start, from the once-a-second polls."""
        last: dict[str, tuple[int, int]] = {}
        for when, name, done, errors in self.timeline:
            if when <= t:
                last[name] = (done + errors, errors)
        return sum(v[0] for v in last.values()), sum(v[1] for v in last.values())

    def window(self, start: float, end: float) -> dict[str, Any]:
        """Requests, failures and the success rate between two moments of the run."""
        (n0, f0), (n1, f1) = self.counts_at(start), self.counts_at(end)
        total, failed = n1 - n0, f1 - f0
        return {
            "from_s": round(start, 1),
            "to_s": round(end, 1),
            "total": total,
            "failed": failed,
            "success_rate": round(1 - failed / total, 6) if total else None,
        }

    def summary(self) -> dict[str, Any]:
        """Requests, successes and failures per upstream and in all, and when the failures came."""
        per: dict[str, Any] = {}
        for name, r in self.reports.items():
            ok = int(r["statuses"]["2xx"])
            failed = int(r["errors"]["total"])
            per[name] = {
                "total": ok + failed,
                "ok": ok,
                "failed": failed,
                "errors": {k: v for k, v in r["errors"].items() if v and k != "total"},
                "rps": round(float(r["rps"]), 1),
                "p99_ms": r["latency_ms"]["p99"],
            }
        failures_at = []
        last: dict[str, int] = {}
        for t, name, _, errors in self.timeline:
            if errors > last.get(name, 0):
                failures_at.append({"t": t, "target": name, "new_errors": errors - last.get(name, 0)})
            last[name] = errors
        return {
            "total": sum(p["total"] for p in per.values()),
            "ok": sum(p["ok"] for p in per.values()),
            "failed": sum(p["failed"] for p in per.values()),
            "targets": per,
            "failures_at": failures_at,
        }


def load(mesh: Mesh, rps: float, duration: float) -> Load:
    """`rps` in all, four fifths to api and one fifth to catalog, through the client's sidecar."""
    return Load({"api": (mesh.url("api"), rps * 0.8), "catalog": (mesh.url("catalog"), rps * 0.2)}, duration)


# === resource samples ===


@dataclass
class Sampler:
    """Samples RSS and fds of the mesh's members every `interval` seconds on its own thread,
    and each sidecar's SVID expiry (renewals are counted from its changes)."""

    mesh: Mesh
    interval: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    svids: dict[str, set[int]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    started: float = field(default_factory=time.monotonic)

    def __enter__(self) -> Sampler:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)

    def _run(self) -> None:
        while True:
            t = round(time.monotonic() - self.started, 1)
            for p in self.mesh.members():
                if (s := p.sample()) is not None:
                    self.samples.append({"t": t, "name": p.name, **s})
            for name, sidecar in self.mesh.sidecars.items():
                with contextlib.suppress(httpx.HTTPError, KeyError, TypeError):
                    self.svids.setdefault(name, set()).add(int(sidecar.stats()["identity"]["not_after"]))
            if self._stop.wait(self.interval):
                return

    def renewals(self) -> dict[str, int]:
        """SVID renewals seen per sidecar (distinct certificates less the first)."""
        return {name: len(v) - 1 for name, v in self.svids.items()}


def growth(samples: list[dict[str, Any]], duration: float, warmup: float, window: float) -> dict[str, Any]:
    """Per process and resource: the median over the first `window` seconds after `warmup`
    against the median over the last `window` seconds of the run, and the growth between them.
    Medians, so that one sample taken mid-burst (a connection open for a moment, a GC about to
    run) moves nothing; a leak moves the whole last window."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(s["name"] for s in samples):
        mine = [s for s in samples if s["name"] == name]
        first = [s for s in mine if warmup <= s["t"] < warmup + window]
        last = [s for s in mine if s["t"] >= duration - window]
        out[name] = {}
        for key in ("rss_kb", "fds", "sockets", "files"):
            if not first or not last:
                out[name][key] = None
                continue
            a, b = statistics.median(s[key] for s in first), statistics.median(s[key] for s in last)
            out[name][key] = {
                "first": a,
                "last": b,
                "max": max(s[key] for s in mine if s["t"] >= warmup),
                "growth": (b - a) / a if a else 0.0,
                "samples": (len(first), len(last)),
            }
    return out
