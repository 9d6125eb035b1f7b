"""The built-in trace store in a real control plane process: spans exported by
the OpenTelemetry SDK's OTLP/HTTP exporter (protobuf, gzip) and as OTLP JSON
come back as trace lists and waterfalls, through the API and the CLI; bad
exports are refused with nothing stored; retention drops the oldest traces."""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace as otel
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from helpers import wait_until
from meshproc import ControlPlane, module_control_plane, service
from tracing import otlp_exporter, recording_provider

cp = module_control_plane()

MS = 1_000_000


def _span(
    provider: TracerProvider,
    name: str,
    start: int,
    end: int,
    *,
    parent: otel.Span | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    error: str | None = None,
) -> otel.Span:
    context = otel.set_span_in_context(parent) if parent else None
    span = provider.get_tracer("tests").start_span(name, context=context, kind=kind, start_time=start)
    span.set_attribute("http.request.method", "GET")
    if error:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=end)
    return span


def checkout_trace(base: int) -> tuple[str, Sequence[ReadableSpan]]:
    """A 100 ms trace of four spans in two services, the deepest failing:
    frontend GET /checkout > (load cart, GET /price (client) > backend GET /price)."""
    front, front_spans = recording_provider("frontend", namespace="shop")
    back, back_spans = recording_provider("backend")
    root = _span(front, "GET /checkout", base, base + 100 * MS, kind=SpanKind.SERVER)
    _span(front, "load cart", base + 5 * MS, base + 25 * MS, parent=root)
    call = _span(front, "GET /price", base + 30 * MS, base + 90 * MS, parent=root, kind=SpanKind.CLIENT)
    _span(back, "GET /price", base + 35 * MS, base + 85 * MS, parent=call, kind=SpanKind.SERVER, error="boom")
    trace_id = format(root.get_span_context().trace_id, "032x")
    return trace_id, [*front_spans.get_finished_spans(), *back_spans.get_finished_spans()]


def small_trace(base: int, spans: int = 1) -> tuple[str, Sequence[ReadableSpan]]:
    """A trace of `spans` spans, each 1 ms, one root and its children."""
    provider, memory = recording_provider("tiny")
    root = _span(provider, "root", base, base + MS)
    for i in range(spans - 1):
        _span(provider, f"child {i}", base, base + MS, parent=root)
    return format(root.get_span_context().trace_id, "032x"), memory.get_finished_spans()


def export(plane: ControlPlane, spans: Sequence[ReadableSpan], token: str, *, gzip: bool = False) -> None:
    assert otlp_exporter(plane.url, token, gzip=gzip).export(spans) is SpanExportResult.SUCCESS


def stored(plane: ControlPlane, trace_id: str) -> bool:
    r = plane.call("GET", f"/api/v1/traces/{trace_id}", role="reader")
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


def listed(plane: ControlPlane, query: str = "") -> list[str]:
    return [t["trace_id"] for t in plane.ok("GET", f"/api/v1/traces?limit=1000{query}")["traces"]]


# === SDK export, queries, CLI ===


def test_an_sdk_export_with_a_join_token_is_listed_and_drawn_as_a_waterfall(cp: ControlPlane, tmp_path: Path) -> None:
    cp.apply(service("frontend"))
    base = time.time_ns() - 1_000 * MS
    trace_id, spans = checkout_trace(base)
    export(cp, spans, cp.join_token("frontend"))  # sidecars export with their join token

    summary = next(t for t in cp.ok("GET", "/api/v1/traces")["traces"] if t["trace_id"] == trace_id)
    assert summary == {
        "trace_id": trace_id,
        "root_service": "frontend",
        "root_name": "GET /checkout",
        "start": summary["start"],
        "duration_ms": 100.0,
        "span_count": 4,
        "error_count": 1,
        "services": ["backend", "frontend"],
    }
    assert summary["start"].endswith("Z")
    assert abs(datetime.fromisoformat(summary["start"]).timestamp() - base / 1e9) < 1e-3

    detail = cp.ok("GET", f"/api/v1/traces/{trace_id.upper()}")
    assert detail["trace_id"] == trace_id
    rows = [(s["service"], s["name"], s["kind"], s["start_ms"], s["duration_ms"], s["status"]) for s in detail["spans"]]
    assert rows == [
        ("frontend", "GET /checkout", "SERVER", 0.0, 100.0, "unset"),
        ("frontend", "load cart", "INTERNAL", 5.0, 20.0, "unset"),
        ("frontend", "GET /price", "CLIENT", 30.0, 60.0, "unset"),
        ("backend", "GET /price", "SERVER", 35.0, 50.0, "error"),
    ]
    root, cart, call, server = detail["spans"]
    assert root["parent_span_id"] == ""
    assert cart["parent_span_id"] == call["parent_span_id"] == root["span_id"]
    assert server["parent_span_id"] == call["span_id"]
    assert server["attributes"] == {"http.request.method": "GET", "otel.status_description": "boom"}

    # `meshctl traces` lists it; `meshctl trace` draws it, a line per span indented by depth.
    listing = cp.cli("traces", "--errors", "--service", "backend", "--min-duration", "100ms", data_dir=tmp_path)
    assert trace_id in listing and "frontend: GET /checkout" in listing and "100ms" in listing
    drawn = cp.cli("trace", trace_id, data_dir=tmp_path).splitlines()
    assert drawn[0] == f"trace {trace_id}: 4 spans, backend, frontend, 100ms"
    header, *lines = drawn[1:]
    timeline = header.index("TIMELINE")
    assert [line[:timeline].rstrip() for line in lines] == [
        "GET /checkout",
        "  load cart",
        "  GET /price",
        "    GET /price",
    ]
    # Each bar sits where its span ran, on a 60-column timeline (the widest, in 200 columns).
    bars = [line[timeline : timeline + 60] for line in lines]
    assert bars[0] == "█" * 60
    assert bars[3] == " " * 21 + "█" * 30 + " " * 9  # from 35 ms, for 50 ms of 100
    assert [line[timeline + 60 :].split() for line in lines] == [
        ["frontend", "server", "100ms", "unset"],
        ["frontend", "internal", "20ms", "unset"],
        ["frontend", "client", "60ms", "unset"],
        ["backend", "server", "50ms", "error"],
    ]
    assert json.loads(cp.cli("trace", trace_id, "-o", "json", data_dir=tmp_path)) == detail
    as_json = json.loads(cp.cli("traces", "-o", "json", "--limit", "1000", data_dir=tmp_path))
    assert summary in as_json


def test_the_list_filters_by_service_duration_and_errors(cp: ControlPlane) -> None:
    base = time.time_ns() - 2_000 * MS
    failed, spans = checkout_trace(base)
    quick, more = small_trace(base + MS)
    export(cp, [*spans, *more], cp.token("admin"))

    assert {failed, quick} <= set(listed(cp))
    assert failed in listed(cp, "&service=backend") and quick not in listed(cp, "&service=backend")
    assert failed in listed(cp, "&service=shop/frontend")
    assert failed not in listed(cp, "&service=other/frontend")
    assert listed(cp, "&service=nobody") == []
    for slow_enough in ("100", "100ms", "0.1s", "99.5", "100000us"):
        assert failed in listed(cp, f"&minDuration={slow_enough}"), slow_enough
        assert quick not in listed(cp, f"&minDuration={slow_enough}")
    assert failed not in listed(cp, "&minDuration=100.001ms")
    assert failed in listed(cp, "&error=true") and quick not in listed(cp, "&error=true")
    assert quick in listed(cp, "&error=false") and failed not in listed(cp, "&error=false")
    # Newest first, and the limit holds.
    newest = listed(cp)
    assert newest.index(quick) < newest.index(failed)
    assert len(cp.ok("GET", "/api/v1/traces?limit=1")["traces"]) == 1


def test_bad_queries_are_422_naming_the_parameter_and_unknown_traces_404(cp: ControlPlane) -> None:
    for bad in ("fast", "-5", "1x", "nan", "5 ms"):
        r = cp.call("GET", "/api/v1/traces", params={"minDuration": bad})
        assert r.status_code == 422, bad
        assert [e["loc"] for e in r.json()["detail"]] == [["query", "minDuration"]]
    r = cp.call("GET", "/api/v1/traces", params={"limit": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]
    assert cp.call("GET", "/api/v1/traces/not-hex").status_code == 422
    r = cp.call("GET", f"/api/v1/traces/{'ab' * 16}")
    assert r.status_code == 404 and "ab" * 16 in r.json()["detail"]
    # Reading takes a reader token; a join token may only export.
    cp.apply(service("reads"))
    join = {"Authorization": f"Bearer {cp.join_token('reads')}"}
    assert httpx.get(f"{cp.url}/api/v1/traces", headers=join).status_code == 403
    assert httpx.get(f"{cp.url}/api/v1/traces").status_code == 401


def test_gzip_exports_are_taken_and_a_retried_batch_is_stored_once(cp: ControlPlane) -> None:
    trace_id, spans = small_trace(time.time_ns(), spans=3)
    export(cp, spans, cp.token("admin"), gzip=True)
    export(cp, spans, cp.token("admin"))  # an exporter's retry of a batch that did arrive
    assert len(cp.ok("GET", f"/api/v1/traces/{trace_id}")["spans"]) == 3
    assert next(t for t in cp.ok("GET", "/api/v1/traces")["traces"] if t["trace_id"] == trace_id)["span_count"] == 3


# === OTLP JSON ===


def otlp_json(trace_id: str, *, start: int, parent: str = "", span_id: str = "00f067aa0ba902b7") -> dict[str, Any]:
    """An OTLP JSON export as the spec writes it: hex ids, camelCase, enums as numbers, int64s as strings."""
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": "GET /inventory",
        "kind": 2,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 7 * MS),
        "attributes": [
            {"key": "http.response.status_code", "value": {"intValue": "503"}},
            {"key": "meshctl.flags", "value": {"arrayValue": {"values": [{"stringValue": "UF"}]}}},
            {"key": "sampled", "value": {"boolValue": True}},
            {"key": "ratio", "value": {"doubleValue": 0.5}},
        ],
        "status": {"code": 2, "message": "upstream failed"},
        "someFieldFromTheFuture": 1,
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "inventory"}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "t"}, "spans": [span]}]}]}


def post(plane: ControlPlane, body: bytes, content_type: str, **headers: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {plane.token('admin')}", "Content-Type": content_type, **headers}
    return httpx.post(f"{plane.url}/v1/traces", content=body, headers=headers, timeout=30)


def test_otlp_json_is_taken_and_answered_in_json(cp: ControlPlane) -> None:
    trace_id = "5b8efff798038103d269b633813fc60c"
    body = json.dumps(otlp_json(trace_id, start=time.time_ns())).encode()
    r = post(cp, body, "application/json; charset=utf-8")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json" and r.json() == {}
    (span,) = cp.ok("GET", f"/api/v1/traces/{trace_id}")["spans"]
    assert span == {
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "",
        "name": "GET /inventory",
        "service": "inventory",
        "kind": "SERVER",
        "start_ms": 0.0,
        "duration_ms": 7.0,
        "status": "error",
        "attributes": {
            "http.response.status_code": 503,
            "meshctl.flags": ["UF"],
            "sampled": True,
            "ratio": 0.5,
            "otel.status_description": "upstream failed",
        },
    }
    # gzip'd JSON too; a protobuf request is answered in protobuf.
    second = otlp_json(trace_id, start=time.time_ns(), parent="00f067aa0ba902b7", span_id="1111111111111111")
    r = post(cp, gzip.compress(json.dumps(second).encode()), "application/json", **{"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert len(cp.ok("GET", f"/api/v1/traces/{trace_id}")["spans"]) == 2
    r = post(cp, b"", "application/x-protobuf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf" and r.content == b""


# === refusals: nothing stored ===


def test_bad_exports_are_refused_and_store_nothing(cp: ControlPlane) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    good = otlp_json(trace_id, start=time.time_ns())
    before = listed(cp)

    def refused(document: Any) -> httpx.Response:
        return post(cp, json.dumps(document).encode(), "application/json")

    bad_id = json.loads(json.dumps(good))
    bad_id["resourceSpans"][0]["scopeSpans"][0]["spans"].append(
        {**good["resourceSpans"][0]["scopeSpans"][0]["spans"][0]}
    )
    bad_id["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["spanId"] = "xyz"
    r = refused(bad_id)
    assert r.status_code == 400 and "$.resourceSpans[0].scopeSpans[0].spans[1].spanId" in r.json()["detail"], r.text
    no_trace = json.loads(json.dumps(good))
    del no_trace["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"]
    r = refused(no_trace)
    assert r.status_code == 400 and "resourceSpans[0].scopeSpans[0].spans[0].traceId: required" in r.json()["detail"]
    backwards = json.loads(json.dumps(good))
    backwards["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["endTimeUnixNano"] = "1"
    assert refused(backwards).status_code == 400
    assert refused({"resourceSpans": "nope"}).status_code == 400
    assert refused([1, 2]).status_code == 400
    assert post(cp, b"{not json", "application/json").status_code == 400
    assert post(cp, b"\xff\xff\xff\xff", "application/x-protobuf").status_code == 400
    r = post(cp, b"not gzip", "application/json", **{"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "gzip" in r.json()["detail"]

    body = json.dumps(good).encode()
    assert post(cp, body, "text/plain").status_code == 415
    assert post(cp, body, "application/json", **{"Content-Encoding": "br"}).status_code == 415
    assert (
        httpx.post(f"{cp.url}/v1/traces", content=body, headers={"Content-Type": "application/json"}).status_code == 401
    )
    bad_token = {"Content-Type": "application/json", "Authorization": "Bearer nope"}
    assert httpx.post(f"{cp.url}/v1/traces", content=body, headers=bad_token).status_code == 401

    # Too large: 4 MiB on the wire, and 4 MiB once inflated (a small gzip bomb stays refused).
    padded = json.loads(json.dumps(good))
    padded["padding"] = "x" * (4 * 1024 * 1024)
    big = json.dumps(padded).encode()
    assert post(cp, big, "application/json").status_code == 413
    bomb = gzip.compress(big)
    assert len(bomb) < 100_000
    r = post(cp, bomb, "application/json", **{"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "decompressed" in r.json()["detail"]

    assert not stored(cp, trace_id)
    assert listed(cp) == before


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(cp: ControlPlane) -> None:
    head = (
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        f"Authorization: Bearer {cp.token('admin')}\r\nContent-Length: 1000000000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", cp.port), timeout=10) as s:
        s.sendall(head.encode())
        answer = s.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer


# === retention ===


def test_retention_by_age_drops_traces_that_ended_a_day_ago(cp: ControlPlane) -> None:
    day = 86_400 * 1_000 * MS
    ancient, spans = small_trace(time.time_ns() - 2 * day)
    export(cp, spans, cp.token("admin"))
    assert not stored(cp, ancient)  # taken, and past retention at once
    # One that ends its day a few seconds from now: kept, then gone with a later export.
    aging, spans = small_trace(time.time_ns() - day + 5_000 * MS)
    export(cp, spans, cp.token("admin"))
    assert stored(cp, aging)

    def dropped() -> bool:
        export(cp, small_trace(time.time_ns())[1], cp.token("admin"))
        return not stored(cp, aging)

    wait_until(dropped, timeout=60, what="the trace to pass the 24h retention")


def test_retention_by_count_drops_the_oldest_traces_whole(tmp_path: Path) -> None:
    plane = ControlPlane(tmp_path / "cp", args=("--trace-max-spans", "6"))
    plane.data_dir.mkdir()
    plane.start()
    try:
        token = plane.token("admin")
        ids = []
        for i in range(4):
            trace_id, spans = small_trace(time.time_ns() + i * MS, spans=3)
            export(plane, spans, token)
            ids.append(trace_id)
        assert [stored(plane, t) for t in ids] == [False, False, True, True]
        assert sorted(listed(plane)) == sorted(ids[2:])
        # The next export pushes the oldest trace left out, whole.
        big, spans = small_trace(time.time_ns(), spans=2)
        export(plane, spans, token)
        assert [stored(plane, t) for t in ids[2:]] == [False, True]
        assert stored(plane, big)
    finally:
        plane.stop()


@pytest.mark.parametrize("flag", ["30s", "soon"])
def test_a_retention_flag_under_a_minute_or_not_a_duration_is_a_usage_error(flag: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "meshctl", "control-plane", "--data-dir", str(tmp_path), "--trace-retention", flag],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--trace-retention" in out.stderr
