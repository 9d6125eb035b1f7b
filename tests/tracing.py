"""OpenTelemetry Python SDK pieces for the trace-store tests: a tracer
provider per service whose spans are exported with the SDK's own OTLP/HTTP
exporter (protobuf) to a control plane, under a bearer token."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def otlp_exporter(url: str, token: str, *, gzip: bool = False) -> OTLPSpanExporter:
    """The SDK's OTLP/HTTP exporter, sending to `url`'s /v1/traces with `token`."""
    return OTLPSpanExporter(
        endpoint=f"{url}/v1/traces",
        headers={"Authorization": f"Bearer {token}"},
        compression=Compression.Gzip if gzip else Compression.NoCompression,
        timeout=10,
    )


def recording_provider(service: str, namespace: str | None = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider for `service` whose finished spans are kept in memory (a test exports them with
    `otlp_exporter` and checks the exporter's answer)."""
    attrs = {"service.name": service} | ({"service.namespace": namespace} if namespace else {})
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(attrs))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def exporting_provider(service: str, url: str, token: str) -> TracerProvider:
    """A provider for `service` that sends each span as it ends to the control plane at `url`."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(otlp_exporter(url, token)))
    return provider
