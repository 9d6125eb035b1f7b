"""End to end: one trace across two sidecars and an app instrumented with the
OpenTelemetry Python SDK. The sidecars export their spans to the control
plane by default (with their join tokens); the app exports its own with the
SDK's OTLP/HTTP exporter; the trace store joins them into one trace whose
parent links run client -> web's sidecar -> app -> web's sidecar -> api's
sidecar."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from helpers import HttpBackend, header_values, unused_port, wait_until
from meshproc import ControlPlane, Sidecar, get, service
from tracing import exporting_provider

PROPAGATOR = TraceContextTextMapPropagator()


class InstrumentedApp:
    """The web app: each request continues the caller's trace (the traceparent its sidecar sent)
    with a SERVER span and, inside it, a CLIENT span around a call to api through its sidecar's
    outbound port, the context injected. It records the trace ids it served."""

    def __init__(self, provider: TracerProvider, upstream_port: int) -> None:
        self.traces: list[str] = []
        tracer = provider.get_tracer("web-app")
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                incoming = PROPAGATOR.extract({k.lower(): v for k, v in self.headers.items()})
                with tracer.start_as_current_span(f"GET {self.path}", context=incoming, kind=SpanKind.SERVER) as span:
                    app.traces.append(format(span.get_span_context().trace_id, "032x"))
                    with tracer.start_as_current_span("call api", kind=SpanKind.CLIENT):
                        outgoing: dict[str, str] = {}
                        PROPAGATOR.inject(outgoing)
                        status = httpx.get(f"http://127.0.0.1:{upstream_port}/price", headers=outgoing).status_code
                body = f"api said {status}".encode()
                self.send_response(200 if status == 200 else 502)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[ControlPlane, list[Any]]]:
    cp = ControlPlane(tmp_path / "cp")
    cp.data_dir.mkdir()
    cp.start()
    running: list[Any] = []
    yield cp, running
    for thing in reversed(running):
        thing.stop()
    cp.stop()


def test_the_proxies_and_an_instrumented_app_make_one_trace(
    mesh: tuple[ControlPlane, list[Any]], tmp_path: Path
) -> None:
    cp, running = mesh
    # web takes plaintext too, so that the test can be its client; api is STRICT.
    web = {**service("web"), "spec": {**service("web")["spec"], "mtls": "PERMISSIVE"}}
    cp.apply(web, service("api"))
    api_app = HttpBackend("api")
    running.append(api_app)
    api = Sidecar(cp, "api", int(api_app.address.rsplit(":", 1)[1]), tmp_path, cp.join_token("api"))
    running.append(api.start())
    upstream = unused_port()
    app = InstrumentedApp(exporting_provider("web", cp.url, cp.join_token("web")), upstream)
    running.append(app)
    front = Sidecar(cp, "web", app.port, tmp_path, cp.join_token("web"), upstreams={"api": upstream})
    running.append(front.start())
    wait_until(lambda: get("127.0.0.1", upstream, "/")[0] == 200, timeout=30, what="api through web's sidecar")

    # The first mesh hop decides sampling: this header forces it.
    r = httpx.get(f"http://127.0.0.1:{front.inbound_port}/checkout", headers={"x-meshctl-trace": "1"}, timeout=10)
    assert r.status_code == 200 and r.text == "api said 200", r.text
    (trace_id,) = app.traces

    def whole() -> dict[str, Any] | None:
        got = cp.call("GET", f"/api/v1/traces/{trace_id}", role="reader")
        return got.json() if got.status_code == 200 and len(got.json()["spans"]) >= 5 else None

    detail = wait_until(whole, timeout=60, what="the proxies' and the app's spans in the trace store")
    spans = detail["spans"]
    assert len(spans) == 5, spans
    by_id = {s["span_id"]: s for s in spans}

    def proxy(direction: str, svc: str) -> dict[str, Any]:
        (span,) = [s for s in spans if s["attributes"].get("meshctl.direction") == direction and s["service"] == svc]
        return span

    web_in, web_out, api_in = proxy("inbound", "web"), proxy("outbound", "web"), proxy("inbound", "api")
    app_server = next(s for s in spans if s["name"] == "GET /checkout")
    app_client = next(s for s in spans if s["name"] == "call api")
    assert (web_in["kind"], web_out["kind"], api_in["kind"]) == ("SERVER", "CLIENT", "SERVER")
    assert (app_server["kind"], app_client["kind"]) == ("SERVER", "CLIENT")
    assert web_in["attributes"]["url.path"] == "/checkout" and api_in["attributes"]["url.path"] == "/price"
    assert web_in["attributes"]["http.response.status_code"] == 200
    assert all(s["status"] != "error" for s in spans)
    # One chain: client -> web's inbound -> app -> app's call -> web's outbound -> api's inbound.
    chain = [web_in, app_server, app_client, web_out, api_in]
    assert web_in["parent_span_id"] == ""
    for parent, child in pairwise(chain):
        assert child["parent_span_id"] == parent["span_id"], (parent["name"], child["name"])
        assert by_id[child["parent_span_id"]] is parent
    # Waterfall order is that chain, and the api app got api's inbound span as its parent.
    assert [s["span_id"] for s in spans] == [s["span_id"] for s in chain]
    (traceparent,) = header_values(api_app.seen[-1], "traceparent")
    assert traceparent.split("-")[1:4] == [trace_id, api_in["span_id"], "01"]

    listed = cp.ok("GET", "/api/v1/traces?service=api")["traces"]
    summary = next(t for t in listed if t["trace_id"] == trace_id)
    assert summary["root_service"] == "web" and summary["span_count"] == 5 and summary["services"] == ["api", "web"]
