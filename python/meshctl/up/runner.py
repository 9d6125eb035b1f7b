"""``meshctl up``'s runner: a compose file (``meshctl.up.spec``) brought up as
a local mesh, and brought down in order.

Up: the embedded control plane starts (SQLite in ``WORKDIR/control-plane``);
the resources and a Service per app service they leave undefined are applied
in one batch; each service gets a join token in a 0600 file; each app instance
starts under ``meshctl run`` with every port chosen here (app, inbound, admin,
HTTP proxy, one local port per upstream), so that the status table and
``WORKDIR/up.json`` can say where everything is. Up is done when every
instance's sidecar has applied the mesh's latest generation and its app
accepts connections on its port.

Down (SIGINT/SIGTERM): callers before the services they call (reverse
topological order of upstreams; apps in a cycle stop together), each level's
``meshctl run`` processes with SIGTERM at once and SIGKILL at a deadline (and
then whatever they left below them), then the control plane.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

from meshctl.client import ApiError, Unreachable
from meshctl.secretfile import write_secret
from meshctl.up.controlplane import ControlPlane, Ports, meshctl, wait_for
from meshctl.up.procs import Child, Output, cmdline, descendants, stop_all
from meshctl.up.spec import AppSpec, ComposeSpec, SpecError, service_documents

Progress = Callable[[str], None]


@dataclass
class Instance:
    """One replica of an app: its ports, and its `meshctl run` process once launched."""

    app: str
    spec: AppSpec
    namespace: str
    service: str
    replica: int
    app_port: int
    inbound_port: int
    admin_port: int
    #: 0 when the app asked for none (`httpProxy: false`).
    http_proxy_port: int
    #: Upstream as the file names it -> the local port its sidecar listens on for it.
    upstreams: dict[str, int] = field(default_factory=dict)
    child: Child | None = None
    #: Its sidecar was killed on purpose (the demo's resilience step): not waited on for sync.
    killed: bool = False

    @property
    def name(self) -> str:
        """The app's name; replicas after the first are `app#2`, `app#3`..."""
        return self.app if self.replica == 1 else f"{self.app}#{self.replica}"

    @property
    def labels(self) -> dict[str, str]:
        return self.spec.labels

    def command(self) -> list[str]:
        """The app's command with `{port}` and `{python}` filled in."""
        return [a.replace("{port}", str(self.app_port)).replace("{python}", sys.executable) for a in self.spec.command]

    def run_args(self, cp_url: str, token_file: Path, cache_dir: Path, grace: float) -> list[str]:
        args = meshctl("run", "--service", self.service, "--namespace", self.namespace)
        args += ["--app-port", str(self.app_port), "--control-plane", cp_url, "--token-file", str(token_file)]
        args += ["--inbound-port", str(self.inbound_port), "--admin-port", str(self.admin_port)]
        args += ["--http-proxy-port", str(self.http_proxy_port)]
        args += ["--cache-dir", str(cache_dir), "--grace", f"{grace:g}"]
        args += [a for k, v in self.labels.items() for a in ("--label", f"{k}={v}")]
        args += [a for s, p in self.upstreams.items() for a in ("--upstream", f"{s}={p}")]
        return [*args, "--", *self.command()]

    def admin(self, path: str) -> dict[str, Any]:
        """A JSON page of its sidecar's admin listener (/stats, /config)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return dict(json.loads(r.read()))

    def stats(self) -> dict[str, Any]:
        return self.admin("/stats")

    def sidecar_pid(self) -> int | None:
        """The `meshctl proxy` process its `meshctl run` started (None: not running now)."""
        if self.child is None:
            return None
        for pid in descendants(self.child.pid):
            args = cmdline(pid)
            if "meshctl" in args and "proxy" in args:
                return pid
        return None

    def listening(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.app_port), timeout=1):
            return True


def stop_levels(spec: ComposeSpec) -> list[list[str]]:
    """The apps in the order they stop: each level's apps call only apps of later levels."""
    callers: dict[str, set[str]] = {app: set() for app in spec.apps}
    for app, a in spec.apps.items():
        for upstream in a.upstreams:
            for provider in spec.provider(app, upstream):
                if provider != app:
                    callers[provider].add(app)
    order = list(spec.apps)
    sorter = TopologicalSorter(callers)  # a node comes after its "predecessors": its callers
    try:
        sorter.prepare()
    except CycleError:
        return [order]
    levels = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=order.index)
        levels.append(ready)
        sorter.done(*ready)
    return levels


class Up:
    """A compose file's mesh on this machine; `start`, then `wait`, then `stop` (always)."""

    def __init__(
        self,
        spec: ComposeSpec,
        output: Output,
        *,
        workdir: Path | None = None,
        progress: Progress = lambda _: None,
        grace: float = 2.0,
        ready_timeout: float = 120.0,
    ):
        self.spec = spec
        self.output = output
        self.progress = progress
        self.grace = grace
        self.ready_timeout = ready_timeout
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="meshctl-up-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = Ports()
        self.cp = ControlPlane(
            self.workdir / "control-plane", self.ports.take(spec.control_plane.port), spec.control_plane
        )
        self.instances: list[Instance] = []
        self.stopping = threading.Event()

    # === up ===

    def handle_signals(self) -> None:
        """SIGINT and SIGTERM ask for a stop (see `wait`); the main thread must call this."""
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())

    def start(self) -> None:
        """Everything up and in sync; Interrupted if a stop is asked for first."""
        self.cp.start(timeout=self.ready_timeout, stop=self.stopping.is_set)
        self.progress(f"control plane on {self.cp.url} (SQLite in {self.cp.data_dir}, output in {self.cp.log})")
        self.apply()
        for app, a in self.spec.apps.items():
            for replica in range(1, a.replicas + 1):
                self.launch(self.plan(app, replica))
        self.wait_ready()

    def apply(self) -> None:
        """The resources and the apps' Services in one batch; SpecError naming the document at fault."""
        made = service_documents(self.spec)
        documents = [*self.spec.resources, *made]
        try:
            self.cp.api.post("/api/v1/apply", {"documents": documents})
        except ApiError as e:
            if e.status not in (400, 409, 422):
                raise
            count = len(self.spec.resources)

            def where(m: re.Match[str]) -> str:
                i = int(m[1])
                return f"resources[{i}]" if i < count else f"(Service {made[i - count]['metadata']['name']})"

            raise SpecError("apply", [re.sub(r"documents\[(\d+)\]", where, str(e))]) from None
        names = ", ".join(f"{d['kind']} {d['metadata']['name']}" for d in documents)
        self.progress(f"applied {names}")

    def plan(self, app: str, replica: int) -> Instance:
        """Replica `replica` of `app` with its ports taken."""
        a = self.spec.apps[app]
        ns, service = self.spec.service_of(app)
        return Instance(
            app=app,
            spec=a,
            namespace=ns,
            service=service,
            replica=replica,
            app_port=self.ports.take(a.port),
            inbound_port=self.ports.take(),
            admin_port=self.ports.take(),
            # Each instance needs its own port (`meshctl run` opens 15080 unless told); 0: none.
            http_proxy_port=self.ports.take() if a.http_proxy else 0,
            upstreams={u: self.ports.take(p) for u, p in a.upstreams.items()},
        )

    def token_file(self, namespace: str, service: str) -> Path:
        """The service's join token, made on first use."""
        path = self.workdir / "tokens" / f"{namespace}.{service}.token"
        if not path.exists():
            write_secret(path, self.cp.api.post(f"/api/v1/services/{namespace}/{service}/join-tokens")["token"])
        return path

    def launch(self, inst: Instance) -> Instance:
        """Start `inst` under `meshctl run`."""
        token = self.token_file(inst.namespace, inst.service)
        args = inst.run_args(self.cp.url, token, self.workdir / "cache", self.grace)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **inst.spec.env}
        inst.child = Child(inst.name, args, self.output, env=env)
        self.instances.append(inst)
        self.write_state()
        return inst

    def scale(self, app: str, count: int) -> list[Instance]:
        """`app` runs `count` instances at least: new ones launched and waited on; returns them all."""
        have = [i for i in self.instances if i.app == app]
        for replica in range(len(have) + 1, count + 1):
            have.append(self.launch(self.plan(app, replica)))
        self.wait_ready()
        return have

    def kill_sidecar(self, inst: Instance) -> int:
        """SIGKILL `inst`'s sidecar: off the network mid-request, without a goodbye. Its pid."""
        pid = wait_for(f"{inst.name}'s sidecar process", inst.sidecar_pid, 10)
        inst.killed = True
        os.kill(pid, signal.SIGKILL)
        return int(pid)

    def sidecar_rows(self) -> dict[int, dict[str, Any]]:
        """The control plane's sidecar rows by inbound port (ports are unique within one up)."""
        return {r["inbound_port"]: r for r in self.cp.api.get("/api/v1/sidecars")}

    def in_sync(self) -> bool:
        """Every sidecar but the killed ones is live and has applied the mesh's latest generation."""
        rows = self.sidecar_rows()
        return all(_synced(rows.get(i.inbound_port)) for i in self.instances if not i.killed)

    def _ready(self) -> bool:
        for inst in self.instances:
            code = inst.child.exit_code() if inst.child else None
            if code is not None:
                raise RuntimeError(f"{inst.name} exited with code {code} before it was ready (its output is above)")
        return self.in_sync() and all(i.listening() for i in self.instances if not i.killed)

    def wait_ready(self) -> None:
        wait_for("every sidecar in sync and every app listening", self._ready, self.ready_timeout, stop=self._asked)
        self.write_state()

    def _asked(self) -> bool:
        return self.stopping.is_set()

    # === while up ===

    def rows(self) -> list[dict[str, Any]]:
        """One status row per instance (the status table's)."""
        try:
            sidecars = self.sidecar_rows()
        except (OSError, Unreachable, ApiError):  # the table still shows ports and process states
            sidecars = {}
        out = []
        for inst in self.instances:
            code = inst.child.exit_code() if inst.child else None
            row = sidecars.get(inst.inbound_port)
            proxy = {"http proxy": inst.http_proxy_port} if inst.spec.http_proxy else {}
            outbound = {**inst.upstreams, **proxy}
            ready = "ready" if _synced(row) else "not in sync" if row else "-"
            health = (row or {}).get("health")
            out.append(
                {
                    "app": inst.name,
                    "service": inst.service if inst.namespace == "default" else f"{inst.namespace}/{inst.service}",
                    "app_port": inst.app_port,
                    "inbound_port": inst.inbound_port,
                    "outbound": outbound,
                    "state": "running" if code is None else f"exited {code}",
                    "ready": f"{ready}, {health}" if health else ready,
                }
            )
        return out

    def wait(self, on_exit: Callable[[Instance, int], None] = lambda *_: None) -> None:
        """Until a stop is asked for; `on_exit` hears of each app that exits by itself meanwhile."""
        seen: set[str] = set()
        while not self.stopping.wait(0.2):
            for inst in self.instances:
                code = inst.child.exit_code() if inst.child else None
                if code is not None and inst.name not in seen:
                    seen.add(inst.name)
                    on_exit(inst, code)

    def write_state(self) -> None:
        """WORKDIR/up.json: where everything is and every process id, for tools and tests."""
        state = {
            "control_plane": {"url": self.cp.url, "pid": self.cp.child.pid if self.cp.child else None},
            "apps": [
                {
                    "name": i.name,
                    "app": i.app,
                    "namespace": i.namespace,
                    "service": i.service,
                    "pid": i.child.pid if i.child else None,
                    "app_port": i.app_port,
                    "inbound_port": i.inbound_port,
                    "admin_port": i.admin_port,
                    "http_proxy_port": i.http_proxy_port,
                    "upstreams": i.upstreams,
                }
                for i in self.instances
            ],
        }
        tmp = self.workdir / "up.json.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.workdir / "up.json")

    # === down ===

    def stop(self) -> None:
        """Callers first, then what they call, then the control plane; the work dir goes if it was ours."""
        by_app: dict[str, list[Instance]] = {}
        for inst in self.instances:
            by_app.setdefault(inst.app, []).append(inst)
        # Each run drains its sidecar for `grace` after its app exits: the deadline leaves room for that.
        deadline = self.grace + 10.0
        for level in stop_levels(self.spec):
            stop_all([i.child for app in level for i in by_app.get(app, []) if i.child], deadline)
        self.cp.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _synced(row: dict[str, Any] | None) -> bool:
    return bool(row and row["live"] and row["acked_version"] == row["mesh_generation"])
