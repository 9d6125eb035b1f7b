"""The chaos table's CI version: bench/chaos.py with short durations on a real mesh (control
plane process, sidecar processes over mTLS): reloads every 0.5 s for 10 s, a rolling SIGTERM
drain of api's two instances, the control plane down 20 s (longer than a registration lives, so
the restart finds every endpoint expired), and three kill -9s of the control plane mid-push.
Every case: 0 failed requests, and what it was about happened."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CHAOS = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


@pytest.mark.timeout(600)
def test_chaos_table(tmp_path: Path) -> None:
    cmd = [sys.executable, str(CHAOS), "--cp-down", "20", "--reload-seconds", "10", "--kills", "3"]
    out = subprocess.run([*cmd, "--out", str(tmp_path)], capture_output=True, text=True, timeout=560)
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-3000:]
    r = json.loads((tmp_path / "chaos.json").read_text())
    cases = {c["case"]: c for c in r["cases"]}
    assert list(cases) == ["reload", "drain", "cp-down", "cp-kill"]
    for c in cases.values():
        assert c["ok"] and c["load"]["failed"] == 0 and c["load"]["total"] > 1000, c
    assert cases["reload"]["ticks"] >= 15 and cases["reload"]["reloads_applied"]["client"] >= 30
    assert [d["exit"] for d in cases["drain"]["drains"]] == [0, 0]
    windows = cases["cp-down"]["windows"]
    assert windows["during"]["total"] > 2000 and windows["during"]["success_rate"] == 1.0
    assert len(cases["cp-kill"]["kills"]) == 3
    assert "| control plane down 20 s | 0 /" in out.stdout
