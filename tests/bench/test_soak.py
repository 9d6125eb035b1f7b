"""The soak's CI version: bench/soak.py for 60 seconds on a real mesh (control plane process,
four sidecar processes over mTLS, route changes every 10 s, one-minute SVIDs). No failed
request, resources sampled for every process, every route change at the client, an SVID renewal
on every sidecar.

The memory bound here is loose (50 %, not the recorded run's 5 %): in one minute the warm-up is
12 s, and what grows then is start-up, not a leak — allocator arenas and the data plane's
connection pools filling as the route's weights flip, the control plane's first compiled
snapshots and SQLAlchemy's statement cache, the first SVID renewal. A leak shows only over the
long run (bench/README.md, "Soak"); this catches a gross one and keeps the harness working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


@pytest.mark.timeout(400)
def test_soak_one_minute(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SOAK), "--duration", "60", "--svid-ttl", "60", "--sample-every", "2"]
    cmd += ["--growth-limit", "0.5", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=360)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-3000:]
    r = json.loads((tmp_path / "soak.json").read_text())
    assert r["load"]["failed"] == 0 and r["load"]["total"] >= 10_000, r["load"]
    names = {"control-plane", "client", "api-v1", "api-v2", "catalog"}
    assert {s["name"] for s in r["samples"]} == names
    for name in names:
        assert sum(s["name"] == name for s in r["samples"]) >= 20, name
        assert r["resources"][name]["rss_kb"]["growth"] < 0.5, r["resources"][name]
    assert r["route_changes"]["applied"] >= 5
    assert r["route_changes"]["reached_client"] == r["route_changes"]["applied"]
    assert all(n >= 1 for n in r["svid_renewals"].values()) and len(r["svid_renewals"]) == 4
    assert "| client |" in out.stdout
