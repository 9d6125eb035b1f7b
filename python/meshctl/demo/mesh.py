"""The demo mesh: the compose file shipped beside this module (``demo.yaml``:
frontend -> catalog -> pricing v1 and v2, a 90/10 canary on pricing) brought
up by ``meshctl up``'s runner — a control plane on SQLite, each app under
``meshctl run`` behind its own sidecar — plus what the demo needs on top:
the chain checked end to end, and what each sidecar measured.

The apps' and sidecars' output goes to ``WORKDIR/logs/<app>.log``: the
demo's console is for its results."""

from __future__ import annotations

import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from meshctl.up.controlplane import wait_for
from meshctl.up.procs import FileOutput
from meshctl.up.runner import Instance, Up
from meshctl.up.spec import ComposeSpec, parse

__all__ = ["Instance", "MeshDemo", "demo_spec", "wait_for"]

DEMO_FILE = "demo.yaml"


def demo_spec() -> ComposeSpec:
    """The shipped compose file, parsed."""
    text = (files("meshctl.demo") / DEMO_FILE).read_text()
    return parse(yaml.safe_load(text), f"meshctl/demo/{DEMO_FILE}")


class MeshDemo:
    def __init__(self, workdir: Path | None = None):
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="meshctl-demo-"))
        self.spec = demo_spec()
        self.up = Up(self.spec, FileOutput(self.workdir / "logs"), workdir=self.workdir)

    @property
    def cp_url(self) -> str:
        return self.up.cp.url

    @property
    def api(self) -> Any:
        """The control plane's admin client."""
        return self.up.cp.api

    @property
    def instances(self) -> list[Instance]:
        return self.up.instances

    def start(self, progress: Callable[[str], None] = lambda _: None) -> None:
        self.up.progress = progress
        self.up.start()
        wait_for("the chain to answer end to end", self.chain_ok)
        for inst in self.instances:
            progress(
                f"{inst.name:<11} app :{inst.app_port:<5}  sidecar inbound :{inst.inbound_port:<5}  "
                f"admin :{inst.admin_port}"
            )
        progress(f"each app under `meshctl run`; their output in {self.workdir / 'logs'}")

    def in_sync(self) -> bool:
        """Every sidecar but the killed ones has applied the mesh's latest generation."""
        return self.up.in_sync()

    def kill(self, inst: Instance) -> int:
        """SIGKILL `inst`'s sidecar (its `meshctl run` restarts it with back-off); the pid killed."""
        return self.up.kill_sidecar(inst)

    def chain_ok(self) -> bool:
        url = f"http://127.0.0.1:{self.entry_port}/items/1"
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200 and "pricing-" in r.read().decode()

    @property
    def entry_port(self) -> int:
        """Clients reach the frontend through its sidecar's inbound listener."""
        return next(i.inbound_port for i in self.instances if i.service == "frontend")

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
            # Every sidecar's HTTP proxy port knows pricing: the split is the one that called it.
            split = {v: clusters.get(f"out/default/pricing/version:{v}", {}).get("requests", 0) for v in ("v1", "v2")}
            if sum(split.values()):
                row["split"] = split
            row["latency_ms"] = inbound.get("latency_ms")
            row["tls"] = inbound["tls"]
            rows.append(row)
        return rows

    def stop(self) -> None:
        self.up.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
