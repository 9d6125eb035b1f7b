"""The demo mesh: a control plane on SQLite, frontend -> catalog -> pricing
(v1 and v2) each behind its own sidecar process, a 90/10 canary on pricing,
traffic from the built-in load generator, and what the sidecars measured."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshctl.client import ApiClient, ApiError, Unreachable
from meshctl.demo.backends import DemoBackend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := check():
                return value
        except (OSError, Unreachable, ApiError, ValueError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


RESOURCES: list[dict[str, Any]] = [
    # The frontend faces clients outside the mesh (the demo's load generator): PERMISSIVE lets their
    # plaintext in. Between the sidecars every hop is mTLS.
    {
        "kind": "Service",
        "metadata": {"name": "frontend"},
        "spec": {"ports": [{"port": 80, "protocol": "http"}], "mtls": "PERMISSIVE"},
    },
    *(
        {"kind": "Service", "metadata": {"name": n}, "spec": {"ports": [{"port": 80, "protocol": "http"}]}}
        for n in ("catalog", "pricing")
    ),
    {
        "kind": "HTTPRoute",
        "metadata": {"name": "pricing-canary"},
        "spec": {
            "parentRefs": [{"name": "pricing"}],
            "rules": [
                {
                    "matches": [{"headers": [{"name": "x-canary", "value": "true"}]}],
                    "backendRefs": [{"name": "pricing", "subset": {"version": "v2"}}],
                },
                {
                    "backendRefs": [
                        {"name": "pricing", "subset": {"version": "v1"}, "weight": 90},
                        {"name": "pricing", "subset": {"version": "v2"}, "weight": 10},
                    ]
                },
            ],
        },
    },
    {
        "kind": "TrafficPolicy",
        "metadata": {"name": "pricing"},
        "spec": {"targetRef": {"name": "pricing"}, "loadBalancer": {"type": "LeastRequest"}},
    },
]


@dataclass
class Instance:
    """One app and its sidecar."""

    service: str
    app: DemoBackend
    version: str = "v1"
    inbound_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    upstreams: dict[str, int] = field(default_factory=dict)
    #: Pricing v1's instances are numbered from 1 (the demo scales it to three).
    replica: int = 1
    proc: subprocess.Popen[bytes] | None = None
    killed: bool = False

    @property
    def name(self) -> str:
        name = f"{self.service}-{self.version}" if self.service == "pricing" else self.service
        return name if self.replica == 1 else f"{name}#{self.replica}"

    def admin(self, path: str) -> dict[str, Any]:
        """A JSON page of the sidecar's admin listener (/stats, /config)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return dict(json.loads(r.read()))

    def stats(self) -> dict[str, Any]:
        return self.admin("/stats")


class MeshDemo:
    def __init__(self, workdir: Path | None = None):
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="meshctl-demo-"))
        self.cp_port = free_port()
        self.cp_url = f"http://127.0.0.1:{self.cp_port}"
        self.cp: subprocess.Popen[bytes] | None = None
        self.instances: list[Instance] = []
        self.api = ApiClient(self.cp_url, None)

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        with (self.workdir / log).open("ab") as out:
            return subprocess.Popen([sys.executable, "-m", "meshctl", *args], stdout=out, stderr=subprocess.STDOUT)

    def start(self, progress: Callable[[str], None] = lambda _: None) -> None:
        data = self.workdir / "control-plane"
        self.cp = self._spawn(["control-plane", "--data-dir", str(data), "--port", str(self.cp_port)], "cp.log")
        wait_for("the control plane", lambda: (data / "admin.token").exists() and self.api.get("/healthz"))
        self.api.token = (data / "admin.token").read_text().strip()
        progress(f"control plane on {self.cp_url} (SQLite in {data})")
        self.api.post("/api/v1/apply", {"documents": RESOURCES})
        progress("applied services frontend, catalog, pricing; HTTPRoute pricing-canary (90/10); TrafficPolicy")

        pricing = [Instance("pricing", DemoBackend(f"pricing-{v}").start(), version=v) for v in ("v1", "v2")]
        catalog_out, frontend_out = free_port(), free_port()
        catalog = Instance(
            "catalog",
            DemoBackend("catalog", upstream=f"127.0.0.1:{catalog_out}").start(),
            upstreams={"pricing": catalog_out},
        )
        frontend = Instance(
            "frontend",
            DemoBackend("frontend", upstream=f"127.0.0.1:{frontend_out}").start(),
            upstreams={"catalog": frontend_out},
        )
        self.instances = [frontend, catalog, *pricing]
        for inst in self.instances:
            self.launch(inst)
        wait_for("every sidecar to apply the mesh config", self.in_sync)
        wait_for("the chain to answer end to end", self.chain_ok)
        for inst in self.instances:
            progress(
                f"{inst.name:<11} app :{inst.app.port:<5}  sidecar inbound :{inst.inbound_port:<5}  "
                f"admin :{inst.admin_port}"
            )

    def launch(self, inst: Instance) -> None:
        """Start `inst`'s sidecar (its app already runs), joined with its service's token."""
        token_file = self.workdir / f"{inst.service}.token"
        if not token_file.exists():
            token_file.write_text(self.api.post(f"/api/v1/services/default/{inst.service}/join-tokens")["token"])
            token_file.chmod(0o600)
        args = [
            "proxy",
            "--control-plane",
            self.cp_url,
            "--service",
            inst.service,
            "--app-port",
            str(inst.app.port),
            "--inbound-port",
            str(inst.inbound_port),
            "--admin-port",
            str(inst.admin_port),
            "--token-file",
            str(token_file),
            "--label",
            f"version={inst.version}",
            "--cache-dir",
            str(self.workdir / "cache"),
            "--workers",
            "1",
            "--grace",
            "2",
        ]
        args += [a for s, p in inst.upstreams.items() for a in ("--upstream", f"{s}={p}")]
        inst.proc = self._spawn(args, f"sidecar-{inst.name}.log")

    def kill(self, inst: Instance) -> None:
        """SIGKILL `inst`'s sidecar: the instance drops off the network, mid-request, without a goodbye."""
        assert inst.proc is not None
        inst.killed = True
        inst.proc.kill()
        inst.proc.wait(10)

    def in_sync(self) -> bool:
        """Every sidecar but the killed ones has applied the mesh's latest generation."""
        rows = self.api.get("/api/v1/sidecars")
        acked = {r["inbound_port"] for r in rows if r["live"] and r["acked_version"] == r["mesh_generation"]}
        return all(i.inbound_port in acked for i in self.instances if not i.killed)

    def chain_ok(self) -> bool:
        url = f"http://127.0.0.1:{self.entry_port}/items/1"
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200 and "pricing-" in r.read().decode()

    @property
    def entry_port(self) -> int:
        """Clients reach the frontend through its sidecar's inbound listener."""
        return self.instances[0].inbound_port

    def report(self) -> list[dict[str, Any]]:
        """Per instance, from its sidecar's stats: inbound requests and successes, and the pricing split."""
        rows = []
        for inst in self.instances:
            stats = inst.stats()
            inbound = stats["listeners"]["inbound"]
            served = inbound["requests"]
            ok = inbound["responses"]["2xx"]
            row = {"instance": inst.name, "requests": served, "success": ok / served if served else 0.0}
            clusters = stats["clusters"]
            if "out/default/pricing/version:v1" in clusters:
                row["split"] = {v: clusters[f"out/default/pricing/version:{v}"]["requests"] for v in ("v1", "v2")}
            row["latency_ms"] = inbound.get("latency_ms")
            row["tls"] = inbound["tls"]
            rows.append(row)
        return rows

    def stop(self) -> None:
        for inst in self.instances:
            if inst.proc and inst.proc.poll() is None:
                inst.proc.terminate()
        for inst in self.instances:
            if inst.proc:
                try:
                    inst.proc.wait(10)
                except subprocess.TimeoutExpired:
                    inst.proc.kill()
            inst.app.stop()
        if self.cp and self.cp.poll() is None:
            self.cp.terminate()
            try:
                self.cp.wait(10)
            except subprocess.TimeoutExpired:
                self.cp.kill()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
