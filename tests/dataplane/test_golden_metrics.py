"""Golden metrics per edge: requests by status code and classification, latency, bytes, for the
Prometheus exposition (`DataPlane.metrics()`, the admin port's /metrics) and for heartbeats
(`DataPlane.telemetry()`)."""

from __future__ import annotations

import re

import httpx

from helpers import cluster, http_listener, route


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of `name` in Prometheus text."""
    out = []
    for line in text.splitlines():
        m = re.fullmatch(name + r"\{(.*)\} (\S+)", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out.append((labels, float(m.group(2))))
    return out


def mesh(b_ok: str, b_bad: str) -> dict:
    return {
        "admin": {"address": "127.0.0.1:0"},
        "telemetry": {"service": "web", "namespace": "shop", "workload": "web-1"},
        "listeners": [
            http_listener(
                "out",
                [
                    {**route("api", path_prefix="/api"), "name": "api-route"},
                    {**route("bad", path_prefix="/bad"), "name": "bad-route"},
                ],
            )
        ],
        "clusters": [
            {**cluster("api", [b_ok]), "service": "shop/api"},
            {**cluster("bad", [b_bad]), "service": "shop/bad"},
        ],
    }


def test_requests_by_code_and_class_per_edge(http_backend, proxy) -> None:
    ok, bad = http_backend("api"), http_backend("bad", status=503)
    dp = proxy(mesh(ok.address, bad.address))
    addr = dp.addresses()["out"]
    with httpx.Client() as c:
        for _ in range(3):
            assert c.get(f"http://{addr}/api/x").status_code == 200
        for _ in range(2):
            assert c.get(f"http://{addr}/bad").status_code == 503
        assert c.get(f"http://{addr}/nowhere").status_code == 404
        text = c.get(f"http://{dp.addresses()['admin']}/metrics").text

    rows = samples(text, "meshctl_requests_total")
    by = {(r["route"], r["code"], r["classification"]): v for r, v in rows}
    assert by == {("api-route", "200", "success"): 3, ("bad-route", "503", "failure"): 2, ("", "404", "success"): 1}
    api = next(r for r, _ in rows if r["route"] == "api-route")
    assert api["direction"] == "outbound"
    assert (api["service"], api["namespace"], api["workload"]) == ("web", "shop", "web-1")
    assert (api["source_service"], api["source_namespace"]) == ("web", "shop")
    assert (api["destination_service"], api["destination_namespace"]) == ("api", "shop")
    assert api["tls"] == "false"
    assert api["grpc_status"] == ""

    counts = {r["route"]: v for r, v in samples(text, "meshctl_request_duration_seconds_count")}
    assert counts == {"api-route": 3, "bad-route": 2, "": 1}
    buckets = [
        (r["le"], v) for r, v in samples(text, "meshctl_request_duration_seconds_bucket") if r["route"] == "api-route"
    ]
    assert buckets[-1] == ("+Inf", 3)
    assert float(buckets[0][0]) == 6.4e-05
    assert [v for _, v in buckets] == sorted(v for _, v in buckets), "cumulative"
    response_bytes = {r["route"]: v for r, v in samples(text, "meshctl_response_bytes_total")}
    assert response_bytes["api-route"] > 0
    assert "# TYPE meshctl_requests_total counter" in text
    assert "# EOF" not in text

    edges = {(e["route"], e["destination"]): e for e in dp.telemetry()["edges"]}
    api_edge = edges[("api-route", "shop/api")]
    assert (api_edge["requests"], api_edge["failures"]) == (3, 0)
    assert api_edge["source"] == "shop/web" and api_edge["direction"] == "outbound" and api_edge["protocol"] == "http"
    assert sum(n for _, n in api_edge["latency_buckets"]) == 3
    assert edges[("bad-route", "shop/bad")]["failures"] == 2
    assert edges[("", "")]["requests"] == 1


def test_openmetrics_by_negotiation(http_backend, proxy) -> None:
    ok = http_backend("api")
    dp = proxy(mesh(ok.address, ok.address))
    admin = dp.addresses()["admin"]
    r = httpx.get(f"http://{admin}/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    assert "# TYPE meshctl_requests counter" in r.text
    plain = httpx.get(f"http://{admin}/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_tcp_edges_count_connections_and_bytes(http_backend, proxy) -> None:
    ok = http_backend("api")
    dp = proxy(
        {
            "listeners": [{"name": "db", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "c"}],
            "clusters": [{**cluster("c", [ok.address]), "service": "shop/db"}],
        }
    )
    with httpx.Client() as c:
        assert c.get(f"http://{dp.addresses()['db']}/").status_code == 200
    text = dp.metrics()
    opened = samples(text, "meshctl_tcp_connections_opened_total")
    assert [(r["destination_service"], v) for r, v in opened] == [("db", 1)]
    received = samples(text, "meshctl_tcp_bytes_received_total")
    assert received and received[0][1] > 0
