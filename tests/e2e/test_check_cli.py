"""``meshctl check`` as a user runs it: the real binary against a real control
plane, its grouped output, ``-o json|yaml`` and its exit codes (0 without
errors, warnings included; 1 with one, an unreachable control plane or a
refused token included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from meshproc import ControlPlane, service


def meshctl(
    cp: ControlPlane | None, *args: str, tmp_path: Path, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
    env |= {"COLUMNS": "200", "NO_COLOR": "1", "MESHCTL_DATA_DIR": str(tmp_path)}
    if cp is not None:
        env |= {"MESHCTL_SERVER": cp.url, "MESHCTL_TOKEN": token or cp.token("reader")}
    return subprocess.run(
        [sys.executable, "-m", "meshctl", "check", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_check_passes_warns_and_fails_with_exit_codes(cp: ControlPlane, tmp_path: Path) -> None:
    clean = meshctl(cp, tmp_path=tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "control plane\n-------------\n\u2714 the control plane answers" in clean.stdout
    assert "\u2714 no HTTPRoute rule is shadowed by earlier rules" in clean.stdout
    assert clean.stdout.rstrip().endswith("Status check results are \u2714: 0 errors, 0 warnings")

    # A warning alone: exit 0.
    permissive = service("legacy") | {"spec": {"ports": [{"port": 80}], "mtls": "PERMISSIVE"}}
    cp.apply(permissive)
    warned = meshctl(cp, tmp_path=tmp_path)
    assert warned.returncode == 0, warned.stdout + warned.stderr
    assert (
        "\u203c services take only mutual TLS (STRICT) [MC0404]\n"
        "    Service default/legacy spec.mtls: mtls is PERMISSIVE" in warned.stdout
    )
    assert "    fix: set mtls: STRICT" in warned.stdout
    assert warned.stdout.rstrip().endswith("0 errors, 1 warning")

    # A sidecar that never ACKs: behind past the grace, an error: exit 1.
    body = {"namespace": "default", "service": "legacy", "address": "127.0.0.1", "inbound_port": 16601, "app_port": 1}
    sidecar = cp.ok("PUT", "/api/v1/sidecars", json=body)
    failed = meshctl(cp, "--grace", "0", tmp_path=tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"\u00d7 sidecars run the current config [MC0102]\n    Sidecar {sidecar['id']}: " in failed.stdout
    assert "Status check results are \u00d7: 1 error, 1 warning" in failed.stdout

    as_json = meshctl(cp, "--grace", "0", "-o", "json", tmp_path=tmp_path)
    assert as_json.returncode == 1
    report: dict[str, Any] = json.loads(as_json.stdout)
    assert [(f["code"], f["severity"]) for f in report["findings"]] == [("MC0102", "error"), ("MC0404", "warning")]
    assert report["client_version"] == report["server_version"]
    assert [c["code"] for c in report["checks"]][:4] == ["MC0001", "MC0002", "MC0003", "MC0004"]
    as_yaml = meshctl(cp, "--grace", "0", "-o", "yaml", tmp_path=tmp_path)
    assert as_yaml.returncode == 1
    assert yaml.safe_load(as_yaml.stdout)["findings"] == report["findings"]


def test_check_without_a_control_plane_or_with_a_bad_token(cp: ControlPlane, tmp_path: Path) -> None:
    nowhere = meshctl(None, "--server", "http://127.0.0.1:1", tmp_path=tmp_path)
    assert nowhere.returncode == 1
    assert "\u00d7 the control plane answers [MC0001]" in nowhere.stdout
    refused = meshctl(cp, "-o", "json", tmp_path=tmp_path, token="not-a-token")
    assert refused.returncode == 1
    report = json.loads(refused.stdout)
    assert [(f["code"], f["severity"]) for f in report["findings"]] == [("MC0002", "error")]
    assert "$MESHCTL_TOKEN" in report["findings"][0]["message"]
    cp.apply(service("web"))
    joined = meshctl(cp, "-o", "json", tmp_path=tmp_path, token=cp.join_token("web"))
    assert joined.returncode == 1
    assert [f["code"] for f in json.loads(joined.stdout)["findings"]] == ["MC0003"]
