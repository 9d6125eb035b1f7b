"""End to end with a real Prometheus: a control plane and a two-service mesh
(web calls api through its sidecar), a known number of requests from the load
generator, and a Prometheus configured by `meshctl prometheus-config` alone
(1 s scrapes) that finds the sidecars through the control plane's http_sd
endpoint; its query for api's inbound requests must equal what was sent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from helpers import unused_port, wait_until
from meshctl.demo.backends import DemoBackend
from meshctl.loadgen import run_bench
from meshproc import ControlPlane, Sidecar, backends_seen, service

PROMETHEUS, PROMTOOL = "/usr/bin/prometheus", "/usr/bin/promtool"
SENT = 600
INBOUND = 'sum(meshctl_requests_total{direction="inbound",destination_service="api"})'


@dataclass
class Prometheus:
    """A real Prometheus on a free loopback port, its config and storage in `workdir`."""

    workdir: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def scalar(self, promql: str) -> float | None:
        """The value of a query with one series (None while it has none)."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(config: str) -> Prometheus:
        workdir = tmp_path / "prometheus"
        workdir.mkdir()
        (workdir / "prometheus.yml").write_text(config)
        check = subprocess.run(
            [PROMTOOL, "check", "config", str(workdir / "prometheus.yml")], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        port = unused_port()
        cmd = [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        with (workdir / "prometheus.log").open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        p = Prometheus(workdir, port, proc)
        started.append(p)
        wait_until(p.ready, timeout=60, what="prometheus to be ready")
        return p

    yield start
    for p in started:
        p.proc.terminate()
        p.proc.wait(30)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[ControlPlane, list[Sidecar]]]:
    cp = ControlPlane(tmp_path / "cp")
    cp.data_dir.mkdir()
    cp.start()
    sidecars: list[Sidecar] = []
    app = DemoBackend("api").start()
    try:
        cp.apply(service("web"), service("api"))
        app_port = int(app.address.rsplit(":", 1)[1])
        sidecars.append(Sidecar(cp, "api", app_port, tmp_path, cp.join_token("api")).start())
        web = Sidecar(cp, "web", unused_port(), tmp_path, cp.join_token("web"), upstreams={"api": unused_port()})
        sidecars.append(web.start())
        yield cp, sidecars
    finally:
        for s in sidecars:
            s.stop()
        app.stop()
        cp.stop()


def inbound_requests(sidecar: Sidecar) -> float:
    """api's inbound requests as its own admin /metrics counts them now."""
    text = httpx.get(f"http://127.0.0.1:{sidecar.admin_port}/metrics", timeout=5).text
    lines = [line for line in text.splitlines() if line.startswith("meshctl_requests_total{")]
    inbound = [line for line in lines if 'direction="inbound"' in line and 'destination_service="api"' in line]
    return sum(float(line.rsplit(" ", 1)[1]) for line in inbound)


def test_prometheus_finds_the_mesh_and_counts_what_the_load_generator_sent(
    mesh: tuple[ControlPlane, list[Sidecar]], prometheus_for: Any, tmp_path: Path
) -> None:
    cp, (api, web) = mesh
    port = web.upstreams["api"]
    wait_until(lambda: set(backends_seen(port, 5)) == {"api"}, timeout=30, what="web to reach api through the mesh")
    before = inbound_requests(api)  # the warm-up's, counted by the sidecar itself
    report = run_bench({"url": f"http://127.0.0.1:{port}/", "connections": 4, "requests": SENT}, show_progress=False)
    assert report["requests"] == SENT and report["statuses"]["2xx"] == SENT, report
    assert report["errors"]["total"] == 0, report

    token = str(cp.data_dir / "reader.token")
    args = ["--control-plane", cp.url, "--token-file", token, "--scrape-interval", "1s", "--refresh-interval", "1s"]
    config = subprocess.run(
        [sys.executable, "-m", "meshctl", "prometheus-config", *args], capture_output=True, text=True
    )
    assert config.returncode == 0, config.stderr
    jobs = {job["job_name"] for job in yaml.safe_load(config.stdout)["scrape_configs"]}
    assert jobs == {"meshctl-control-plane", "meshctl-mesh"}
    prometheus = prometheus_for(config.stdout)

    expected = before + SENT
    said: list[float | None] = [None]

    def counted() -> bool:
        said[0] = prometheus.scalar(INBOUND)
        return said[0] == expected

    try:
        wait_until(counted, timeout=120, what=f"prometheus to count {expected} inbound requests")
    except AssertionError as e:
        raise AssertionError(f"{e}: it says {said[0]}\n{prometheus.log()[-3000:]}") from e
    # Both sidecars were found through discovery, with the mesh labels; the control plane has its job.
    targets = {("meshctl-mesh", "api"), ("meshctl-mesh", "web"), ("meshctl-control-plane", "")}
    wait_until(
        lambda: (
            {(r["metric"]["job"], r["metric"].get("mesh_service", "")) for r in prometheus.query("up == 1")} == targets
        ),
        timeout=60,
        what="every target up",
    )
    svids = 'meshctl_control_svids_issued_total{job="meshctl-control-plane"}'
    wait_until(lambda: prometheus.scalar(svids) == 2, timeout=60, what="the control plane's two SVIDs scraped")
