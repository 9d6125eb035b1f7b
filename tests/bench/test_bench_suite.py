"""Short smokes of the benchmarks (the peer suite with its two-worker cases and
the mTLS pairs it runs after them: one round, two seconds a case; the control
plane with small numbers): every case runs and the report has every number the
full run records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SUITE = Path(__file__).resolve().parents[2] / "bench" / "suite.py"


def test_suite_smoke(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(SUITE), "--smoke", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900
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
    for case in ("meshctl", "haproxy"):  # two workers each
        assert medians[f"l7w2/{case}"]["rps"] > 1000 and medians[f"l7w2/{case}"]["errors"] == 0, case
        assert summary["ratios"][f"scaling_2workers_{case}"] > 0, case
    assert set(summary["ratios"]) >= {
        "l7_rps_meshctl_over_haproxy",
        "l7_rps_meshctl_over_nginx",
        "l7_rps_meshctl_over_direct",
        "p99_at_rate_meshctl_over_haproxy",
        "l4_mbps_meshctl_over_haproxy",
        "generator_meshctl_bench_over_wrk",
        "l7_2workers_rps_meshctl_over_haproxy",
    }
    assert summary["memory"]["conns_1000_mb"] > summary["memory"]["idle_mb"] > 0
    # Under the 50-connection load (before the 1,000 connections): more than idle, less than those.
    assert summary["memory"]["idle_mb"] < medians["l7/meshctl"]["rss_mb"] < summary["memory"]["conns_1000_mb"]
    assert "under_load_mb<=25" in summary["memory_targets"]
    assert (tmp_path / "latest.png").read_bytes()[:4] == b"\x89PNG"
    assert "| meshctl |" in out.stdout and "two workers" in out.stdout
    check_mtls(json.loads((tmp_path / "mtls.json").read_text())["summary"])
    assert "| meshctl pair, HTTP/2 between the proxies |" in out.stdout


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
    one = data["push"]["one_service_change"]  # a change to one service reaches its callers only
    assert one["watchers_with_new_snapshot"] == one["callers_of_the_service"] == one["server_pushed"]
    others = data["push"]["watchers"] - one["callers_of_the_service"]
    assert one["watchers_without"] == one["server_unchanged"] == others
    assert data["hold"]["kb_per_watcher"] > 0 and data["hold"]["push_cpu_cores"] > 0
    scale = data["scale"]  # 3 replicas on one PostgreSQL database: every watcher got every change
    assert scale["replicas"] == 3 and len(scale["replica_p99_ms"]) == 3 and scale["watch_errors"] == 0
    assert "| apply" in out.stdout and "replicas (PostgreSQL)" in out.stdout


def test_ack_cost_bench_smoke() -> None:
    script = SUITE.parent / "cp_ack.py"
    out = subprocess.run([sys.executable, str(script), "300"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out.stdout)  # (every ACK answered 204, or the script fails)
    assert data["requests"] == 300 and data["wall_us_per_ack"] > 0


def check_mtls(summary: dict[str, Any]) -> None:
    """The mTLS pairs' report (bench/mtls.py, run by the suite)."""
    medians, checks = summary["medians"], summary["tls_checks"]
    # Both server sides were checked: TLS 1.3, a client certificate needed.
    for side in ("meshctl", "haproxy"):
        assert checks[side] == {"protocol": "TLSv1.3", "with_client_cert": True, "without_client_cert_refused": True}
    for case in ("direct", "meshctl-h2", "meshctl-h1", "haproxy"):
        assert medians[f"l7/{case}"]["rps"] > 500, case
        assert medians[f"l7/{case}"]["errors"] == 0, case
        assert medians[f"rate/{case}"]["errors"] == 0, case
        assert medians[f"rate/{case}"]["rps"] > 900, case
        assert medians[f"rate/{case}"]["p99_ms"] > 0, case
    for case in ("meshctl-h2", "meshctl-h1", "haproxy"):
        assert medians[f"l7/{case}"]["cpu_s_per_100k"] > 0, case
        assert medians[f"l7/{case}"]["rss_mb"] > 0, case
        assert "added_p99_ms" in medians[f"rate/{case}"], case
    for side in ("meshctl", "haproxy"):
        hs = medians[f"hs/{side}"]
        # Every connection openssl made was a handshake the server completed (and answered).
        assert hs["server_handshakes"] == hs["client_connections"] > 0, side
        assert hs["handshakes_per_s"] > 0 and hs["server_cpu_us_per_handshake"] > 0, side
    assert set(summary["targets"]) == {
        "l7_rps_meshctl_h2_over_haproxy",
        "l7_rps_meshctl_h1_over_haproxy",
        "added_p99_ms_at_rate_meshctl_h2",
        "added_p99_ms_at_rate_meshctl_h1",
        "handshakes_meshctl_over_haproxy",
    }
