"""Tracing in the data plane: trace context carried on (W3C and B3), one span per hop with a new
parent id for the next hop, sampling at the first hop (or forced by a header), and spans exported
as OTLP/HTTP protobuf to a collector: here a small HTTP server in the test that decodes them with
the OpenTelemetry project's own protobuf messages."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from helpers import cluster, header_values, http_listener, route, unused_port, wait_until

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class Collector:
    """Takes OTLP/HTTP protobuf exports and keeps their spans (with their resource attributes)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.authorization: list[str | None] = []
        lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.headers["Content-Type"] == "application/x-protobuf"
                req = ExportTraceServiceRequest.FromString(body)
                with lock:
                    collector.authorization.append(self.headers.get("Authorization"))
                    for rs in req.resource_spans:
                        resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            for s in ss.spans:
                                attrs = {a.key: a.value for a in s.attributes}
                                collector.spans.append(
                                    {
                                        "trace_id": s.trace_id.hex(),
                                        "span_id": s.span_id.hex(),
                                        "parent_span_id": s.parent_span_id.hex(),
                                        "name": s.name,
                                        "kind": s.kind,
                                        "status": s.status.code,
                                        "duration_ns": s.end_time_unix_nano - s.start_time_unix_nano,
                                        "attributes": attrs,
                                        "resource": resource,
                                    }
                                )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.server.shutdown()
    c.server.server_close()


def config(backend: str, tracing: dict[str, Any] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [http_listener("out", [{**route("api", path_prefix="/"), "name": "api-route"}])],
        "clusters": [{**cluster("api", [backend]), "service": "default/api"}],
    }
    if tracing is not None:
        doc["telemetry"] = {"service": "web", "namespace": "default", "workload": "web-1", "tracing": tracing}
    return doc


def traceparent(seen: dict[str, Any]) -> list[str]:
    return header_values(seen, "traceparent")


def test_a_sampled_request_gets_a_span_and_a_new_parent(http_backend, proxy, collector) -> None:
    b = http_backend("api")
    dp = proxy(config(b.address, {"sample_percent": 0, "collector": collector.url, "flush_ms": 50}))
    addr = dp.addresses()["out"]
    r = httpx.get(f"http://{addr}/items?x=1", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert r.status_code == 200
    (sent,) = traceparent(b.seen[0])
    version, trace, parent, flags = sent.split("-")
    assert (version, trace, flags) == ("00", TRACE, "01")
    assert parent != PARENT, "the next hop's parent is this hop's span"

    span = wait_until(lambda: collector.spans and collector.spans[0], what="the span exported")
    assert span["trace_id"] == TRACE
    assert span["parent_span_id"] == PARENT
    assert span["span_id"] == parent
    assert span["name"] == "GET api-route"
    assert span["kind"] == 3, "CLIENT: an outbound hop"
    assert span["resource"]["service.name"] == "web"
    assert span["resource"]["service.namespace"] == "default"
    assert span["resource"]["service.instance.id"] == "web-1"
    attrs = span["attributes"]
    assert attrs["http.response.status_code"].int_value == 200
    assert attrs["url.path"].string_value == "/items"
    assert attrs["meshctl.route"].string_value == "api-route"
    assert attrs["meshctl.upstream"].string_value == b.address
    assert attrs["meshctl.destination"].string_value == "default/api"
    assert attrs["meshctl.retries"].int_value == 0
    assert span["duration_ns"] > 0
    assert collector.authorization == [None], "no token file, no Authorization"


def test_the_first_hop_decides_and_a_header_forces(http_backend, proxy, collector) -> None:
    b = http_backend("api")
    dp = proxy(config(b.address, {"sample_percent": 0, "collector": collector.url, "flush_ms": 50}))
    addr = dp.addresses()["out"]
    with httpx.Client() as c:
        assert c.get(f"http://{addr}/a").status_code == 200
        assert c.get(f"http://{addr}/b", headers={"x-meshctl-trace": "1"}).status_code == 200
        assert c.get(f"http://{addr}/c", headers={"traceparent": f"00-{TRACE}-{PARENT}-00"}).status_code == 200
    new, forced, unsampled = (traceparent(s)[0] for s in b.seen)
    assert new.endswith("-00") and new.split("-")[1] != TRACE, "a new trace, not sampled at 0%"
    assert forced.endswith("-01")
    assert unsampled.split("-")[1] == TRACE and unsampled.endswith("-00"), "the caller's decision holds"
    wait_until(lambda: collector.spans, what="the forced span")
    # The exporter flushes every 50 ms; the other two would have come with or before the forced one.
    assert [s["attributes"]["url.path"].string_value for s in collector.spans] == ["/b"]


def test_every_request_is_sampled_at_100_percent_with_a_bearer_token(
    http_backend, proxy, collector, tmp_path: Path
) -> None:
    b = http_backend("api")
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    tracing = {"sample_percent": 100, "collector": collector.url, "token_file": str(token), "flush_ms": 50}
    dp = proxy(config(b.address, tracing))
    addr = dp.addresses()["out"]
    with httpx.Client() as c:
        for _ in range(5):
            assert c.get(f"http://{addr}/").status_code == 200
    wait_until(lambda: len(collector.spans) == 5, what="five spans")
    assert set(collector.authorization) == {"Bearer s3cret"}
    assert len({s["trace_id"] for s in collector.spans}) == 5, "each request its own trace"
    assert "s3cret" not in str(dp.config()), "the token stays in its file"


def test_b3_in_b3_out(http_backend, proxy, collector) -> None:
    b = http_backend("api")
    dp = proxy(config(b.address, {"sample_percent": 0, "collector": collector.url, "flush_ms": 50}))
    addr = dp.addresses()["out"]
    with httpx.Client() as c:
        multi = {
            "x-b3-traceid": "463ac35c9f6413ad48485a3953bb6124",
            "x-b3-spanid": "a2fb4a1d1a96d312",
            "x-b3-sampled": "1",
        }
        assert c.get(f"http://{addr}/m", headers=multi).status_code == 200
        single = {"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"}
        assert c.get(f"http://{addr}/s", headers=single).status_code == 200
    m, s = b.seen
    assert header_values(m, "x-b3-traceid") == ["463ac35c9f6413ad48485a3953bb6124"]
    assert header_values(m, "x-b3-parentspanid") == ["a2fb4a1d1a96d312"]
    assert header_values(m, "x-b3-sampled") == ["1"]
    assert header_values(m, "x-b3-spanid") != ["a2fb4a1d1a96d312"]
    assert traceparent(m) == [], "no format the caller did not use"
    (b3,) = header_values(s, "b3")
    trace, span, sampled, parent = b3.split("-")
    assert (trace, sampled, parent) == ("80f198ee56343ba864fe8b2a57d3eff7", "1", "e457b5a2e4d86bd1")
    spans = wait_until(lambda: len(collector.spans) == 2 and collector.spans, what="two spans")
    assert {x["trace_id"] for x in spans} == {"463ac35c9f6413ad48485a3953bb6124", "80f198ee56343ba864fe8b2a57d3eff7"}
    assert span in {x["span_id"] for x in spans}


def test_without_tracing_context_passes_untouched(http_backend, proxy) -> None:
    b = http_backend("api")
    dp = proxy(config(b.address, None))
    sent = f"00-{TRACE}-{PARENT}-01"
    assert httpx.get(f"http://{dp.addresses()['out']}/", headers={"traceparent": sent}).status_code == 200
    assert traceparent(b.seen[0]) == [sent]


def test_a_dead_collector_fails_no_request(http_backend, proxy) -> None:
    b = http_backend("api")
    dead = f"http://127.0.0.1:{unused_port()}/v1/traces"
    dp = proxy(config(b.address, {"sample_percent": 100, "collector": dead, "flush_ms": 50}))
    addr = dp.addresses()["out"]
    with httpx.Client() as c:
        for _ in range(10):
            assert c.get(f"http://{addr}/").status_code == 200

    def failures() -> float:
        for line in dp.metrics().splitlines():
            if line.startswith("meshctl_span_export_failures_total"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    wait_until(lambda: failures() == 10, what="ten spans counted as failed exports")


def test_bad_tracing_config_names_the_field(http_backend, proxy, tmp_path: Path) -> None:
    from meshctl import ConfigError, DataPlane

    b = http_backend("api")
    bad = config(b.address, {"sample_percent": 101, "collector": "ftp://x/v1/traces"})
    with pytest.raises(ConfigError) as e:
        DataPlane(bad)
    paths = {p for p, _ in e.value.errors}
    assert {"telemetry.tracing.sample_percent", "telemetry.tracing.collector"} <= paths
    missing = config(b.address, {"collector": "http://127.0.0.1:1/v1/traces", "token_file": str(tmp_path / "nope")})
    dp = DataPlane(missing)
    with pytest.raises(ConfigError, match=r"telemetry\.tracing.*cannot read"):
        dp.start()
