"""`meshctl demo`'s resilience step (issue 11) on a real demo mesh: control plane, sidecar
processes, the built-in open-loop load generator. Pricing v1 runs three instances; one gets
SIGKILL mid-load and no request fails; a 10 % abort fault applied through the API takes about
10 % of the answers, as the caller's sidecar counts them; the rollback brings back 100 %."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshctl.demo.mesh import MeshDemo
from meshctl.demo.resilience import FAULT_PERCENT, ResilienceDemo


@pytest.fixture
def mesh() -> Iterator[MeshDemo]:
    demo = MeshDemo()
    try:
        demo.start()
        yield demo
    finally:
        demo.stop()


def test_the_demo_loses_no_request_to_a_kill_and_shows_the_fault_and_its_rollback(mesh: MeshDemo) -> None:
    lines: list[str] = []
    step = ResilienceDemo(mesh, progress=lines.append)
    killed, faulted = step.run()
    text = "\n".join(lines)

    # A third of the way into the load, one of three pricing v1 sidecars is gone.
    assert killed.victim == "pricing-v1#2"
    assert sum(i.killed for i in mesh.instances) == 1
    assert killed.load.requests >= 2800, killed
    assert killed.load.failed == 0, killed
    # The caller's sidecar retried the requests the kill cut (connect failures and resets) within
    # the budget, and outlier detection took the dead endpoint out.
    assert killed.retries >= 1 and killed.retries_exhausted == 0 and killed.budget_exhausted == 0, killed
    assert killed.ejections >= 1, killed
    assert f"{killed.load.requests} requests, 0 failed" in text

    # The fault: 10 % of about 3,000 requests, within sampling noise (3 points is ~5 sigma).
    assert faulted.faulted.requests >= 2800, faulted
    assert abs(100 * faulted.faulted.success - (100 - FAULT_PERCENT)) <= 3, faulted
    # Every failure is one of the caller sidecar's aborts (a fault is not retried); a request cut
    # off at the end of the run may be counted on one side only.
    assert abs(faulted.aborted - faulted.faulted.failed) <= 3, faulted
    assert f"the catalog sidecar's fault counter: {faulted.aborted} aborted" in text

    # The rollback restored the revision before the fault, and every request succeeds again.
    assert faulted.fault_revision > faulted.revision
    assert faulted.restored.requests >= 2800 and faulted.restored.failed == 0, faulted
    assert f"after the rollback: {faulted.restored.requests} requests, 100.0% ok" in text
    route = mesh.api.get("/api/v1/httproutes/default/pricing-canary")
    assert all("fault" not in rule or rule["fault"] is None for rule in route["spec"]["rules"]), route
