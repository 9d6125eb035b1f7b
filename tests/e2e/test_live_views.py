"""End to end: requests through a real two-service mesh show up in `meshctl
stat` and `meshctl edges`, carried by the sidecars' heartbeats (their data
planes' telemetry) to the control plane."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import unused_port, wait_until
from meshctl.demo.backends import DemoBackend
from meshproc import ControlPlane, Sidecar, get, service

N = 25


def test_stat_and_edges_show_the_requests_sent_through_the_mesh(cp: ControlPlane, backend: Any, tmp_path: Path) -> None:
    app: DemoBackend = backend("catalog")
    cp.apply(service("frontend"), service("catalog"))
    server = Sidecar(cp, "catalog", int(app.address.rsplit(":", 1)[1]), tmp_path, cp.join_token("catalog"))
    client = Sidecar(
        cp, "frontend", unused_port(), tmp_path, cp.join_token("frontend"), upstreams={"catalog": unused_port()}
    )
    sidecars = [server.start(), client.start()]
    try:
        port = client.upstreams["catalog"]
        answered: list[int] = []

        def served() -> bool:
            answered.append(get("127.0.0.1", port, "/")[0])
            return answered[-1] == 200

        wait_until(served, timeout=30, what="catalog to answer through frontend's sidecar")
        statuses = [get("127.0.0.1", port, f"/items/{i}")[0] for i in range(N)]
        assert statuses == [200] * N
        sent = N + answered.count(200)  # what reached catalog: every 200 went through its sidecar

        cli = tmp_path / "cli"
        cli.mkdir()

        def stat() -> dict[str, Any]:
            (row,) = json.loads(cp.cli("stat", "svc/catalog", "--window", "5m", "-o", "json", data_dir=cli))["rows"]
            return dict(row)

        wait_until(lambda: stat()["requests"] == sent, timeout=60, what=f"stat to count {sent} requests")
        row = stat()
        assert row["name"] == "default/catalog" and row["success_rate"] == 1.0
        assert row["p50_ms"] is not None and row["p99_ms"] >= row["p50_ms"]
        lines = cp.cli("stat", "svc/catalog", "--window", "5m", data_dir=cli).splitlines()
        assert lines[1].split()[:4] == ["default/catalog", str(sent), lines[1].split()[2], "100.00%"]

        edges = json.loads(cp.cli("edges", "--window", "5m", "-o", "json", data_dir=cli))["edges"]
        edge = next(e for e in edges if (e["source"], e["destination"]) == ("default/frontend", "default/catalog"))
        assert edge["mtls"] is True and edge["requests"] == sent and edge["protocol"] == "http"
        table = cp.cli("edges", "--window", "5m", data_dir=cli).splitlines()
        assert ["default/frontend", "default/catalog", "yes", "http", str(sent)] in [x.split()[:5] for x in table]
    finally:
        for s in sidecars:
            s.stop()
