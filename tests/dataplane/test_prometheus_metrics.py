"""The data plane's admin /metrics: traffic through a real proxy, then a
scrape that promtool accepts, with request counts by edge, route, status and
classification; OpenMetrics when the Accept header asks for it."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import cluster, http_listener, route, wait_until
from meshctl import ConfigError

PROMTOOL = "/usr/bin/promtool"
GOOD, BAD = 7, 3
#: The proxy's own labels and the edge every request here takes.
EDGE = {
    "direction": "outbound",
    "service": "web",
    "namespace": "shop",
    "workload": "web-1",
    "listener": "out",
    "source_service": "web",
    "source_namespace": "shop",
    "destination_namespace": "shop",
    "tls": "false",
}


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` whose labels include these."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def named(name: str, cluster_name: str, **match: Any) -> dict[str, Any]:
    return route(cluster_name, **match) | {"name": name}


def start(proxy: Any, http_backend: Any) -> tuple[Any, str]:
    ok, failing = http_backend("api"), http_backend("db", status=503)
    dp = proxy(
        {
            "admin": {"address": "127.0.0.1:0"},
            "telemetry": {"service": "web", "namespace": "shop", "workload": "web-1"},
            "listeners": [
                http_listener("out", [named("good", "api", path_prefix="/good"), named("bad", "db")])
                | {"direction": "outbound"}
            ],
            "clusters": [
                cluster("api", [ok.address], service="shop/api"),
                cluster("db", [failing.address], service="shop/db"),
            ],
        }
    )
    return dp, dp.addresses()["admin"]


def test_admin_metrics_count_requests_by_edge_and_pass_promtool(proxy, http_backend) -> None:
    dp, admin = start(proxy, http_backend)
    out = dp.addresses()["out"]
    with httpx.Client(timeout=10) as c:
        assert all(c.get(f"http://{out}/good/{i}").status_code == 200 for i in range(GOOD))
        assert all(c.get(f"http://{out}/other/{i}").status_code == 503 for i in range(BAD))

        def scraped() -> str | None:
            text = c.get(f"http://{admin}/metrics").text
            done = total(text, "meshctl_requests_total", listener="out") == GOOD + BAD
            return text if done else None

        text = wait_until(scraped, timeout=10, what="every request in the admin /metrics")
        plain = c.get(f"http://{admin}/metrics")

    assert plain.headers["content-type"].startswith("text/plain")
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    good = EDGE | {"route": "good", "destination_service": "api"}
    bad = EDGE | {"route": "bad", "destination_service": "db"}
    assert total(text, "meshctl_requests_total", **good, code="200", classification="success") == GOOD
    assert total(text, "meshctl_requests_total", **bad, code="503", classification="failure") == BAD
    assert total(text, "meshctl_request_duration_seconds_count", **good) == GOOD
    assert total(text, "meshctl_request_duration_seconds_bucket", **good, le="+Inf") == GOOD
    assert total(text, "meshctl_response_bytes_total", **good) > 0
    # Bounded cardinality: route names, never the paths requested.
    assert "/good/" not in text and "/other/" not in text


def test_openmetrics_when_asked(proxy, http_backend) -> None:
    dp, admin = start(proxy, http_backend)
    out = dp.addresses()["out"]
    assert httpx.get(f"http://{out}/good", timeout=10).status_code == 200
    r = httpx.get(f"http://{admin}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    assert "meshctl_requests" in r.text
    assert dp.metrics(openmetrics=True).endswith("# EOF\n")
    assert not dp.metrics().endswith("# EOF\n")


def test_config_updates_are_counted_by_result(proxy, http_backend) -> None:
    dp, admin = start(proxy, http_backend)
    config = dp.config()
    with pytest.raises(ConfigError):
        dp.update(config | {"clusters": [cluster("api", ["127.0.0.1:1"], lb="fastest")]})
    text = httpx.get(f"http://{admin}/metrics", timeout=10).text
    me = {"service": "web", "namespace": "shop", "workload": "web-1"}
    assert total(text, "meshctl_config_updates_total", **me, result="applied") == 1
    assert total(text, "meshctl_config_updates_total", **me, result="rejected") == 1
    assert total(text, "meshctl_config_version", **me) == 1
