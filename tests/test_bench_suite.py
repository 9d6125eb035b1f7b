"""A short smoke of the peer benchmark suite (one round, two seconds a case):
every case runs and the report has every number the full run records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).resolve().parents[1] / "bench" / "suite.py"


def test_suite_smoke(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(SUITE), "--smoke", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    summary = data["summary"]
    medians = summary["medians"]
    for case in ("direct", "meshctl", "haproxy", "nginx"):
        assert medians[f"l7/{case}"]["rps"] > 1000, case
        assert medians[f"rate/{case}"]["p99_ms"] > 0, case
        assert medians[f"l7/{case}"]["errors"] == 0, case
    for case in ("meshctl", "haproxy", "nginx"):
        assert medians[f"l7/{case}"]["cpu_s_per_100k"] > 0, case
        assert medians[f"l7/{case}"]["rss_mb"] > 0, case
    for case in ("direct", "meshctl", "haproxy"):
        assert medians[f"l4/{case}"]["mbps"] > 100, case
    assert set(summary["ratios"]) >= {
        "l7_rps_meshctl_over_haproxy",
        "l7_rps_meshctl_over_nginx",
        "l7_rps_meshctl_over_direct",
        "p99_at_rate_meshctl_over_haproxy",
        "l4_mbps_meshctl_over_haproxy",
        "generator_meshctl_bench_over_wrk",
    }
    assert summary["memory"]["conns_1000_mb"] > summary["memory"]["idle_mb"] > 0
    assert (tmp_path / "latest.png").read_bytes()[:4] == b"\x89PNG"
    assert "| meshctl |" in out.stdout


def test_control_plane_bench_smoke(tmp_path: Path) -> None:
    script = SUITE.parent / "control_plane.py"
    out = subprocess.run(
        [sys.executable, str(script), "--smoke", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads((tmp_path / "control_plane.json").read_text())
    assert data["push"]["pushes"] == data["push"]["watchers"] * data["push"]["changes"]
    assert data["push"]["watch_errors"] == 0 and data["hold"]["watch_errors"] == 0
    assert data["apply"]["created"] > data["apply"]["routes"]
    assert "| apply" in out.stdout
