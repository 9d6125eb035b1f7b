"""The control plane's Prometheus side through a real process: its own
/metrics (behind a read-only token, valid for promtool, OpenMetrics on
request) counting API requests, pushes, watchers and ACK/NACKs; and the
http_sd target list of the sidecars registered through the real API."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from helpers import unused_port, wait_until
from meshproc import ControlPlane, module_control_plane, service

PROMTOOL = "/usr/bin/promtool"

cp = module_control_plane()


def scrape(cp: ControlPlane, accept: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {cp.token('reader')}"} | ({"Accept": accept} if accept else {})
    r = httpx.get(f"{cp.url}/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r


def value(cp: ControlPlane, name: str, **labels: str) -> float:
    """The sample `name` with exactly these labels (0 when there is none yet)."""
    for family in text_string_to_metric_families(scrape(cp).text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def join(cp: ControlPlane, name: str, namespace: str = "default", **body: Any) -> tuple[dict[str, str], int]:
    """(the join token's headers, the sidecar id) of a sidecar of `name` registered now."""
    headers = {"Authorization": f"Bearer {cp.join_token(name, namespace)}"}
    ports = {} if body.get("gateway") else {"inbound_port": unused_port(), "app_port": unused_port()}
    sidecar = {"namespace": namespace, "service": name, "address": "127.0.0.1", **ports, **body}
    r = httpx.put(f"{cp.url}/api/v1/sidecars", json=sidecar, headers=headers)
    assert r.status_code == 200, r.text
    return headers, int(r.json()["id"])


def test_metrics_need_a_reading_token(cp: ControlPlane) -> None:
    assert httpx.get(f"{cp.url}/metrics").status_code == 401
    cp.apply(service("joiner"))
    headers, _ = join(cp, "joiner")
    assert httpx.get(f"{cp.url}/metrics", headers=headers).status_code == 403
    assert cp.call("GET", "/metrics", role="admin").status_code == 200


def test_metrics_pass_promtool_and_negotiate_openmetrics(cp: ControlPlane) -> None:
    text = scrape(cp)
    assert text.headers["content-type"].startswith("text/plain; version=")
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text.text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    names = {f.name for f in text_string_to_metric_families(text.text)}
    assert {
        "meshctl_control_build_info",
        "meshctl_control_push_seconds",
        "meshctl_control_watchers",
        "meshctl_control_config_acks",
        "meshctl_control_config_nacks",
        "meshctl_control_api_requests",
        "meshctl_control_api_request_duration_seconds",
        "meshctl_control_svids_issued",
        "meshctl_control_sidecars_registered",
        "meshctl_control_sidecars_live",
        "meshctl_control_generation",
    } <= names

    om = scrape(cp, accept="application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")


def test_api_requests_are_counted_by_route_template_never_the_raw_path(cp: ControlPlane) -> None:
    cp.apply(service("counted"))
    route = "/api/v1/services/{namespace}/{name}"
    before = value(cp, "meshctl_control_api_requests_total", method="GET", route=route, code="200")
    for _ in range(3):
        cp.ok("GET", "/api/v1/services/default/counted")
    missing = cp.call("GET", "/api/v1/services/default/nope")
    assert missing.status_code == 404
    assert value(cp, "meshctl_control_api_requests_total", method="GET", route=route, code="200") == before + 3
    assert value(cp, "meshctl_control_api_requests_total", method="GET", route=route, code="404") >= 1
    assert value(cp, "meshctl_control_api_request_duration_seconds_count", method="GET", route=route, code="200") == (
        before + 3
    )
    # (a method the HTTP parser knows and the API does not: an unknown one is refused by the
    # parser, httptools, before any route is tried)
    cp.call("PROPFIND", "/no/such/path")
    assert value(cp, "meshctl_control_api_requests_total", method="other", route="unmatched", code="404") == 1
    assert "/no/such/path" not in scrape(cp).text


def test_a_push_and_its_ack_are_timed_and_acks_and_nacks_counted(cp: ControlPlane) -> None:
    cp.apply(service("pushed"))
    headers, sid = join(cp, "pushed")
    stage = "meshctl_control_push_seconds_count"
    sent, acked = value(cp, stage, stage="sent"), value(cp, stage, stage="acked")
    acks, nacks = value(cp, "meshctl_control_config_acks_total"), value(cp, "meshctl_control_config_nacks_total")

    snapshot = httpx.get(f"{cp.url}/api/v1/sidecars/{sid}/snapshot", params={"wait": 0}, headers=headers)
    assert snapshot.status_code == 200, snapshot.text
    version = snapshot.json()["version"]
    assert value(cp, stage, stage="sent") == sent + 1
    status = f"{cp.url}/api/v1/sidecars/{sid}/status"
    assert httpx.post(status, json={"version": version}, headers=headers).status_code == 204
    assert httpx.post(status, json={"version": version}, headers=headers).status_code == 204  # again: not re-timed
    assert value(cp, stage, stage="acked") == acked + 1
    assert value(cp, "meshctl_control_config_acks_total") == acks + 2
    nack = {"version": version, "error": "listeners[0]: no"}
    assert httpx.post(status, json=nack, headers=headers).status_code == 204
    assert value(cp, "meshctl_control_config_nacks_total") == nacks + 1
    assert value(cp, "meshctl_control_sidecars_live") >= 1
    assert value(cp, "meshctl_control_generation") >= version


@contextmanager
def stream(url: str, headers: dict[str, str]) -> Iterator[None]:
    with httpx.stream("GET", url, headers=headers, timeout=10) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # (held: a dropped iterator closes the response)
        next(lines)  # the first snapshot: the watch is open
        yield


def test_open_watch_streams_are_a_gauge(cp: ControlPlane) -> None:
    cp.apply(service("watcher"))
    headers, sid = join(cp, "watcher")
    open_streams = value(cp, "meshctl_control_watchers", kind="stream")
    with stream(f"{cp.url}/api/v1/sidecars/{sid}/watch", headers):
        assert value(cp, "meshctl_control_watchers", kind="stream") == open_streams + 1
    wait_until(
        lambda: value(cp, "meshctl_control_watchers", kind="stream") == open_streams,
        timeout=20,
        what="the closed stream to leave the gauge",
    )


def test_targets_list_live_sidecars_and_gateways_with_admin_ports(cp: ControlPlane) -> None:
    cp.apply(
        service("scraped", "http"),
        {"kind": "Service", "metadata": {"name": "edge", "namespace": "sd"}, "spec": {"ports": [{"port": 80}]}},
        {
            "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "sd"},
            "spec": {"listeners": [{"name": "plain", "port": 8080, "protocol": "HTTP"}]},
        },
    )
    assert httpx.get(f"{cp.url}/api/v1/prometheus/targets").status_code == 401
    admin_port = unused_port()
    headers, sid = join(cp, "scraped", admin_port=admin_port)
    join(cp, "scraped")  # no admin port: nothing to scrape
    assert httpx.get(f"{cp.url}/api/v1/prometheus/targets", headers=headers).status_code == 403
    gateway_admin = unused_port()
    join(cp, "edge", "sd", gateway=True, address="0.0.0.0", admin_port=gateway_admin)

    groups = cp.ok("GET", "/api/v1/prometheus/targets", role="reader")
    by_target = {g["targets"][0]: g["labels"] for g in groups}
    assert len(by_target) == len(groups)
    assert by_target[f"127.0.0.1:{cp.port}"] == {
        "__metrics_path__": "/metrics",
        "__scheme__": "http",
        "mesh_component": "control-plane",
    }
    own = by_target[f"127.0.0.1:{admin_port}"]
    inbound_port = next(s["inbound_port"] for s in cp.sidecars() if s["id"] == sid)
    assert own == {
        "__metrics_path__": "/metrics",
        "mesh_component": "sidecar",
        "mesh_namespace": "default",
        "mesh_service": "scraped",
        "mesh_workload": f"scraped-127.0.0.1:{inbound_port}",
        "mesh_gateway": "false",
    }
    # An unspecified address is scraped on its host's loopback (admin ports bind 127.0.0.1).
    assert by_target[f"127.0.0.1:{gateway_admin}"] | {"mesh_workload": ""} == {
        "__metrics_path__": "/metrics",
        "mesh_component": "gateway",
        "mesh_namespace": "sd",
        "mesh_service": "edge",
        "mesh_workload": "",
        "mesh_gateway": "true",
    }
    assert sum(g["labels"].get("mesh_service") == "scraped" for g in groups) == 1

    assert httpx.delete(f"{cp.url}/api/v1/sidecars/{sid}", headers=headers).status_code == 204
    after = cp.ok("GET", "/api/v1/prometheus/targets", role="reader")
    assert f"127.0.0.1:{admin_port}" not in {g["targets"][0] for g in after}


def test_prometheus_config_is_valid_for_promtool_and_points_at_this_control_plane(
    cp: ControlPlane, tmp_path: Path
) -> None:
    token = cp.data_dir / "reader.token"
    own, mesh = checked_config(tmp_path, "--control-plane", f"{cp.url}/", "--token-file", str(token))
    bearer = {"type": "Bearer", "credentials_file": str(token)}
    assert own["static_configs"] == [{"targets": [f"127.0.0.1:{cp.port}"]}] and own["authorization"] == bearer
    assert mesh["http_sd_configs"] == [
        {"url": f"{cp.url}/api/v1/prometheus/targets", "refresh_interval": "30s", "authorization": bearer}
    ]
    assert "authorization" not in mesh  # the sidecars' scrapes never carry the token

    bad = cli("prometheus-config", "--control-plane", "127.0.0.1:15010", "--token-file", str(token))
    assert bad.returncode == 2 and "--control-plane" in bad.stderr
    assert cli("prometheus-config", "--scrape-interval", "soon").returncode == 2


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshctl", *args], capture_output=True, text=True, timeout=60, env=env)


def checked_config(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """`meshctl prometheus-config ARGS`, which must exit 0 and pass `promtool check config`:
    its two jobs (the control plane's, the mesh's)."""
    out = cli("prometheus-config", *args, env=env)
    assert out.returncode == 0, out.stderr
    config = tmp_path / "prometheus.yml"
    config.write_text(out.stdout)
    check = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return list(yaml.safe_load(out.stdout)["scrape_configs"])


def test_prometheus_config_verifies_an_https_control_plane_with_its_ca(tmp_path: Path) -> None:
    (tmp_path / "cp").mkdir()
    https = ControlPlane(tmp_path / "cp", args=("--tls",), scheme="https").start()
    try:
        token = https.data_dir / "reader.token"
        env = {**os.environ, "MESHCTL_DATA_DIR": str(https.data_dir)}
        own, mesh = checked_config(tmp_path, "--control-plane", https.url, "--token-file", str(token), env=env)
        tls = {"ca_file": str(https.data_dir / "tls" / "ca.pem")}
        assert own["scheme"] == "https" and own["tls_config"] == tls
        assert mesh["http_sd_configs"][0]["tls_config"] == tls
        # With the CA Prometheus is told to use, the discovery endpoint verifies.
        ctx = ssl.create_default_context(cafile=tls["ca_file"])
        r = httpx.get(
            mesh["http_sd_configs"][0]["url"],
            verify=ctx,
            headers={"Authorization": f"Bearer {token.read_text().strip()}"},
        )
        assert r.status_code == 200, r.text
        plain = cli("prometheus-config", "--control-plane", "http://127.0.0.1:1", "--ca-file", tls["ca_file"])
        assert plain.returncode == 2 and "--ca-file" in plain.stderr
    finally:
        https.stop()
