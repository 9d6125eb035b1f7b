"""The live views through a real control plane: heartbeats PUT with literal
telemetry (what `DataPlane.telemetry()` returns) at several moments, then
`/api/v1/stats`, `/stats/series` and `/edges` read with the read-only token,
and `meshctl stat`, `edges` and `top` against the same process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshproc import ControlPlane, module_control_plane, service
from test_stats_store import edge

cp = module_control_plane()

FRONT, CAT, LEGACY = "default/frontend", "default/catalog", "default/legacy"
BUCKETS = [[1.0, 50], [2.0, 50]]  # per 100 requests: half up to 1 ms, half 1.6..2 ms


def scaled(n: int) -> list[list[float]]:
    return [[upper, count * n // 100] for upper, count in BUCKETS]


def heartbeat(cp: ControlPlane, token: str, svc: str, port: int, *edges: dict[str, Any] | None) -> None:
    """One PUT of sidecar `svc` on inbound `port` with its join token, as a sidecar heartbeats; no
    telemetry (a sidecar starting) when `edges` is (None,)."""
    body: dict[str, Any] = {"service": svc, "address": "127.0.0.1", "inbound_port": port, "app_port": 8080}
    if edges != (None,):
        body["telemetry"] = {"edges": list(edges)}
    r = httpx.put(f"{cp.url}/api/v1/sidecars", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text


def beat(cp: ControlPlane, tokens: dict[str, str], catalog: int, catalog_failures: int, legacy: int) -> None:
    """frontend's and catalog's sidecars report their cumulative counters."""
    lat = {"latency_buckets": scaled(catalog)}
    to_legacy = edge("outbound", FRONT, LEGACY, legacy, legacy // 4, mtls=False, latency_buckets=[[10.0, legacy]])
    heartbeat(
        cp,
        tokens["frontend"],
        "frontend",
        15401,
        edge("outbound", FRONT, CAT, catalog, catalog_failures, **lat),
        to_legacy,
    )
    heartbeat(cp, tokens["catalog"], "catalog", 15402, edge("inbound", FRONT, CAT, catalog, catalog_failures, **lat))


@pytest.fixture(scope="module")
def meshed(cp: ControlPlane) -> ControlPlane:
    """frontend calls catalog (whose sidecar reports) and legacy (no sidecar): 340 calls to catalog
    (3 failed, one data-plane restart on the way), 20 to legacy (5 failed)."""
    cp.apply(service("frontend"), service("catalog"), service("legacy"))
    tokens = {s: cp.join_token(s) for s in ("frontend", "catalog")}
    for svc, port in (("frontend", 15401), ("catalog", 15402)):
        heartbeat(cp, tokens[svc], svc, port, None)  # starting: the data plane does not run yet
    beat(cp, tokens, catalog=100, catalog_failures=0, legacy=8)
    beat(cp, tokens, catalog=300, catalog_failures=3, legacy=20)
    # catalog's data plane restarted: its counters start again from zero
    restarted = edge("inbound", FRONT, CAT, 40, latency_buckets=scaled(40))
    heartbeat(cp, tokens["catalog"], "catalog", 15402, restarted)
    return cp


def get(cp: ControlPlane, path: str) -> Any:
    r = cp.call("GET", path, role="reader")
    assert r.status_code == 200, r.text
    return r.json()


def rows(cp: ControlPlane, query: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in get(cp, f"/api/v1/stats?{query}")["rows"]}


def test_service_stats_count_every_call_once_through_restarts(meshed: ControlPlane) -> None:
    page = get(meshed, "/api/v1/stats?window=60")
    assert (page["kind"], page["window_seconds"]) == ("service", 60)
    got = {r["name"]: r for r in page["rows"]}
    assert set(got) == {FRONT, CAT, LEGACY}
    cat = got[CAT]
    assert (cat["requests"], cat["success_rate"]) == (340, round(1 - 3 / 340, 4))
    assert 340 / 70 <= cat["rps"] <= 340 / 60  # the window reaches back to the start of its first bin
    assert cat["p50_ms"] == 1.0 and 1.6 < cat["p95_ms"] < cat["p99_ms"] <= 2.0
    legacy = got[LEGACY]  # no sidecar: seen from frontend's calls
    assert (legacy["requests"], legacy["success_rate"], legacy["p99_ms"]) == (20, 0.75, pytest.approx(9.9, abs=0.1))
    assert got[FRONT]["requests"] == 0 and got[FRONT]["success_rate"] is None and got[FRONT]["p50_ms"] is None
    assert set(rows(meshed, "name=catalog")) == {CAT}


def test_routes_and_edges(meshed: ControlPlane) -> None:
    routes = rows(meshed, "kind=route")
    assert {n: (r["service"], r["requests"]) for n, r in routes.items()} == {
        "default/catalog/default": (CAT, 300),  # frontend's own counters: it did not restart
        "default/legacy/default": (LEGACY, 20),
    }
    assert set(rows(meshed, "kind=route&name=legacy")) == {"default/legacy/default"}
    edges = rows(meshed, "kind=edge")
    assert {n: (e["mtls"], e["requests"]) for n, e in edges.items()} == {
        f"{FRONT} -> {CAT}": (True, 340),
        f"{FRONT} -> {LEGACY}": (False, 20),
    }
    graph = get(meshed, "/api/v1/edges?window=120")
    assert graph["window_seconds"] == 120
    assert [(e["source"], e["destination"], e["mtls"], e["protocol"], e["requests"]) for e in graph["edges"]] == [
        (FRONT, CAT, True, "http", 340),
        (FRONT, LEGACY, False, "http", 20),
    ]
    assert graph["edges"][1]["success_rate"] == 0.75


def test_a_series_of_points_per_step(meshed: ControlPlane) -> None:
    s = get(meshed, f"/api/v1/stats/series?service={CAT}&window=600&step=60")
    assert (s["service"], s["step_seconds"], len(s["points"])) == (CAT, 60, 10)
    ts = [p["t"] for p in s["points"]]
    assert ts == sorted(ts) and all(t % 60 == 0 for t in ts)
    busy = [p for p in s["points"] if p["rps"]]
    assert busy and all(p["success_rate"] is not None and p["p99_ms"] <= 2.0 for p in busy)
    assert all(p["success_rate"] is None for p in s["points"] if not p["rps"])


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/api/v1/stats?name=nope", 404, "service default/nope not found"),
        ("/api/v1/stats?kind=route&namespace=shop&name=catalog", 404, "service shop/catalog not found"),
        ("/api/v1/stats/series?service=default/nope", 404, "service default/nope not found"),
        ("/api/v1/stats?window=5", 422, ["query", "window"]),
        ("/api/v1/stats?window=7200", 422, ["query", "window"]),
        ("/api/v1/edges?window=abc", 422, ["query", "window"]),
        ("/api/v1/stats?kind=pod", 422, ["query", "kind"]),
        ("/api/v1/stats/series?service=catalog", 422, ["query", "service"]),
        ("/api/v1/stats/series?service=default/catalog&step=15", 422, ["query", "step"]),
        ("/api/v1/stats/series?service=default/catalog&step=120&window=60", 422, ["query", "window"]),
    ],
)
def test_unknown_services_and_bad_windows(meshed: ControlPlane, path: str, status: int, says: Any) -> None:
    r = meshed.call("GET", path, role="reader")
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail == says if status == 404 else detail[0]["loc"] == says


def test_a_garbled_telemetry_report_is_a_422_naming_the_field(meshed: ControlPlane) -> None:
    before = meshed.sidecars()
    body = {"service": "catalog", "address": "127.0.0.1", "inbound_port": 15499, "app_port": 8080}
    for bad, loc in (
        ({"edges": [edge("inbound", "", CAT, -1)]}, ["edges", 0, "requests"]),
        ({"edges": [edge("inbound", "", CAT, 1, protocol="udp")]}, ["edges", 0, "protocol"]),
        ({"edges": [edge("inbound", "", CAT, 1)] * 501}, ["edges"]),
    ):
        r = meshed.call("PUT", "/api/v1/sidecars", json=body | {"telemetry": bad})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "telemetry", *loc]
    assert meshed.sidecars() == before  # nothing written


# === the CLI ===


def test_meshctl_stat_edges_and_top(meshed: ControlPlane, tmp_path: Path) -> None:
    lines = meshed.cli("stat", data_dir=tmp_path).splitlines()
    assert lines[0].split() == ["SERVICE", "REQUESTS", "RPS", "SUCCESS", "P50", "P95", "P99"]
    (cat,) = [line.split() for line in lines if line.startswith(CAT)]
    assert cat[1] == "340" and cat[3] == "99.12%" and cat[4] == "1ms"
    (route,) = meshed.cli("stat", "route/legacy", "--window", "2m", data_dir=tmp_path).splitlines()[1:]
    assert route.split()[:3] == ["default/legacy/default", LEGACY, "20"]
    edge_lines = meshed.cli("stat", "edge", data_dir=tmp_path).splitlines()
    assert [x.split()[:4] for x in edge_lines[1:]] == [[FRONT, CAT, "yes", "340"], [FRONT, LEGACY, "no", "20"]]

    edges = meshed.cli("edges", data_dir=tmp_path).splitlines()
    assert edges[0].split() == ["SOURCE", "DESTINATION", "MTLS", "PROTOCOL", "REQUESTS", "RPS", "SUCCESS", "P99"]
    assert [x.split()[:5] for x in edges[1:]] == [
        [FRONT, CAT, "yes", "http", "340"],
        [FRONT, LEGACY, "no", "http", "20"],
    ]
    assert '"window_seconds": 60' in meshed.cli("edges", "-o", "json", data_dir=tmp_path)

    top = meshed.cli("top", "--iterations", "1", data_dir=tmp_path)
    for part in ("services", "routes", "edges", CAT, "default/catalog/default", "99.12%"):
        assert part in top, top


def meshctl(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
    env |= {"COLUMNS": "200", "MESHCTL_SERVER": cp.url, "MESHCTL_TOKEN": cp.token("reader")}
    return subprocess.run([sys.executable, "-m", "meshctl", *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("stat", "svc/nope"), 1, "404 service default/nope not found"),
        (("stat", "route/shop/catalog"), 1, "404 service shop/catalog not found"),
        (("stat", "pod/x"), 2, "unknown kind 'pod'"),
        (("stat", "--window", "5s"), 1, "window: Input should be greater than or equal to 10"),
        (("edges", "--window", "1.5s"), 2, "is not a duration"),
        (("top", "--interval", "soon", "--iterations", "1"), 2, "--interval: 'soon' is not a duration"),
    ],
)
def test_meshctl_says_what_is_wrong(meshed: ControlPlane, args: tuple[str, ...], code: int, says: str) -> None:
    out = meshctl(meshed, *args)
    assert out.returncode == code, out.stderr
    assert says in out.stderr, out.stderr
