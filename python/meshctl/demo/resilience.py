"""The demo's resilience step (issue 11), on a running `MeshDemo`: pricing v1
scaled to three instances, one of them killed with SIGKILL under open-loop
load with no request failing (the data plane's default retry policy, retry
budget and outlier detection), then a 10 % abort fault applied to pricing's
HTTPRoute through the API, measured, and rolled back.

The load goes from the built-in load generator straight into the catalog
sidecar's outbound listener for pricing: catalog is the caller whose sidecar
retries, injects the fault and counts both in its admin stats."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from meshctl.demo.mesh import Instance, MeshDemo, wait_for
from meshctl.loadgen.runner import run_bench

#: Runs one load-generator run (`run_bench`'s options) to its report; the CLI adds a progress bar.
Load = Callable[[dict[str, Any]], dict[str, Any]]
Progress = Callable[[str], None]

ROUTE = "pricing-canary"
LISTENER = "outbound/default/pricing"
CLUSTER = "out/default/pricing/version:v1"
FAULT_PERCENT = 10.0


def quiet_load(options: dict[str, Any]) -> dict[str, Any]:
    return run_bench(options, show_progress=False)


@dataclass
class LoadResult:
    """What the load generator saw: requests sent, 2xx answers, and the rest."""

    requests: int
    ok: int
    rps: float

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    @property
    def success(self) -> float:
        """The share of 2xx answers, 0..1."""
        return self.ok / self.requests if self.requests else 0.0

    @classmethod
    def of(cls, report: dict[str, Any]) -> LoadResult:
        return cls(requests=report["requests"], ok=report["statuses"]["2xx"], rps=report["rps"])


@dataclass
class KillResult:
    victim: str
    pid: int
    load: LoadResult
    #: From the catalog sidecar's stats for pricing v1: tries after the first, requests that
    #: failed with every try used, retries the budget refused, and the victim's ejections.
    retries: int
    retries_exhausted: int
    budget_exhausted: int
    ejections: int


@dataclass
class FaultResult:
    #: The revision the fault was applied as, and the one the rollback restored (just before it).
    fault_revision: int
    revision: int
    faulted: LoadResult
    #: Requests the catalog sidecar's fault aborted during the faulted run.
    aborted: int
    restored: LoadResult


class ResilienceDemo:
    """The step's parts, each waiting on a condition with a deadline, never on a sleep. `progress`
    hears a line for each thing done and each result, as `MeshDemo.start`'s does."""

    def __init__(
        self,
        mesh: MeshDemo,
        *,
        rps: float = 750,
        seconds: float = 4,
        load: Load = quiet_load,
        progress: Progress = lambda _: None,
    ):
        self.mesh = mesh
        self.rps = rps
        self.seconds = seconds
        self.load = load
        self.progress = progress
        self.caller = next(i for i in mesh.instances if i.service == "catalog")

    def run(self) -> tuple[KillResult, FaultResult]:
        """The whole step: scale, kill under load, fault and roll back."""
        victim = self.scale_pricing()[1]
        self.progress(
            f"load: open loop, {self.rps:.0f} rps for {self.seconds:g} s, into the catalog sidecar's outbound "
            f"listener for pricing ({self.url})"
        )
        self.progress(f"the catalog sidecar's /config (admin :{self.caller.admin_port}): {self.policy()}")
        return self.kill_under_load(victim), self.fault_and_rollback()

    @property
    def url(self) -> str:
        """The catalog sidecar's outbound listener for pricing, as the catalog app calls it."""
        return f"http://127.0.0.1:{self.caller.upstreams['pricing']}/prices/1"

    def _options(self) -> dict[str, Any]:
        return {"url": self.url, "rps": self.rps, "duration": self.seconds, "connections": 16, "threads": 1}

    def _cluster(self) -> dict[str, Any]:
        return dict(self.caller.stats()["clusters"][CLUSTER])

    def policy(self) -> str:
        """What protects the 90/10 rule's calls, as the caller's sidecar has it (none of it configured:
        these are the data plane's defaults)."""
        config = self.caller.admin("/config")
        listener = next(x for x in config["listeners"] if x["name"] == LISTENER)
        retry = listener["routes"][-1]["retry"]
        cluster = next(c for c in config["clusters"] if c["name"] == CLUSTER)
        budget, outlier = cluster["retry_budget"], cluster["outlier_detection"]
        return (
            f"{retry['attempts']} retries on {', '.join(retry['retry_on'])}; a retry budget of "
            f"{budget['percent']} % + {budget['min_per_second']}/s; ejection after "
            f"{outlier['consecutive_gateway_errors']} gateway errors in a row"
        )

    def scale_pricing(self, count: int = 3) -> list[Instance]:
        """Pricing v1 (the demo file's app `pricing-v1`) gets instances up to `count`, each under its own
        `meshctl run` as `meshctl up` starts replicas; returns them all once their sidecars are in sync."""
        v1 = self.mesh.up.scale("pricing-v1", count)
        wait_for(
            f"the catalog sidecar to balance over {count} pricing v1 endpoints", lambda: self._endpoints() >= count
        )
        self.progress(f"pricing v1 scaled to {count} instances: {', '.join(i.name for i in v1)}")
        return v1

    def _endpoints(self) -> int:
        return sum(not e["ejected"] for e in self._cluster()["endpoints"].values())

    def kill_under_load(self, victim: Instance) -> KillResult:
        """Open-loop load through the catalog sidecar; `victim`'s sidecar gets SIGKILL a third of the way in."""
        before = self._cluster()
        report: dict[str, Any] = {}
        loader = threading.Thread(target=lambda: report.update(self.load(self._options())), name="demo-load")
        loader.start()
        third = before["requests"] + int(self.rps * self.seconds / 3)
        wait_for("the load to get going", lambda: self._cluster()["requests"] >= third, timeout=self.seconds + 10)
        pid = self.mesh.kill(victim)
        self.progress(f"SIGKILL to {victim.name}'s sidecar (pid {pid}), a third of the way in")
        loader.join(timeout=self.seconds + 30)
        if loader.is_alive() or not report:
            raise TimeoutError("the load generator did not finish")
        after = self._cluster()
        endpoint = after["endpoints"].get(f"127.0.0.1:{victim.inbound_port}", {})
        r = KillResult(
            victim=victim.name,
            pid=pid,
            load=LoadResult.of(report),
            retries=after["retries"] - before["retries"],
            retries_exhausted=after["retries_exhausted"] - before["retries_exhausted"],
            budget_exhausted=after["retry_budget_exhausted"] - before["retry_budget_exhausted"],
            # Once the control plane has dropped the dead endpoint its stats are gone: it was ejected first.
            ejections=endpoint.get("ejections", 0),
        )
        self.progress(f"an instance killed mid-load: {r.load.requests} requests, {r.load.failed} failed")
        self.progress(
            f"the catalog sidecar's /stats: {r.retries} retries, {r.retries_exhausted} with every try failed, "
            f"{r.budget_exhausted} refused by the budget; {r.victim} ejected {r.ejections} time(s)"
        )
        return r

    def faulty_route(self) -> dict[str, Any]:
        """The demo's pricing HTTPRoute with an abort fault on its default (90/10) rule."""
        route = copy.deepcopy(next(r for r in self.mesh.spec.resources if r["kind"] == "HTTPRoute"))
        route["spec"]["rules"][-1]["fault"] = {
            "abort": {"percentage": {"value": FAULT_PERCENT}, "httpStatus": 503},
        }
        return route

    def fault_and_rollback(self) -> FaultResult:
        """Apply the faulty route, measure, roll back to the revision before it, measure again."""
        revision = self._revision()
        route = self.faulty_route()
        self.mesh.api.post("/api/v1/apply", {"documents": [route]})
        wait_for("every sidecar to apply the fault", self.mesh.in_sync)
        fault_revision = self._revision()
        fault = yaml.safe_dump(route["spec"]["rules"][-1]["fault"], default_flow_style=True, width=200).strip()
        self.progress(f"applied HTTPRoute {ROUTE} (revision {fault_revision}), its 90/10 rule with fault: {fault}")
        aborted = self._aborted()
        faulted = LoadResult.of(self.load(self._options()))
        aborted = self._aborted() - aborted
        self.progress(
            f"with the fault: {faulted.requests} requests, {100 * faulted.success:.1f}% ok; "
            f"the catalog sidecar's fault counter: {aborted} aborted"
        )
        self.mesh.api.post(f"/api/v1/revisions/{revision}/rollback")
        wait_for("every sidecar to apply the rollback", self.mesh.in_sync)
        self.progress(f"rolled back to revision {revision} (what `meshctl rollback {revision}` does)")
        restored = LoadResult.of(self.load(self._options()))
        self.progress(f"after the rollback: {restored.requests} requests, {100 * restored.success:.1f}% ok")
        return FaultResult(
            fault_revision=fault_revision, revision=revision, faulted=faulted, aborted=aborted, restored=restored
        )

    def _revision(self) -> int:
        return int(self.mesh.api.get("/api/v1/revisions")[-1]["id"])

    def _aborted(self) -> int:
        return int(self.caller.stats()["listeners"][LISTENER]["faults"]["aborted"])
