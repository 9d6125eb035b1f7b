"""OTLP/HTTP trace exports decoded into span rows: ``ExportTraceServiceRequest``
as protobuf or as OTLP JSON (ids in hex, camelCase names, enums as numbers),
gzip or not. Both encodings become the one protobuf message, so one function
turns it into rows. A request is taken whole or refused whole: any bad span
refuses it (``Malformed``, naming the span)."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from meshctl.control.traces.models import MAX_NAME, MAX_SERVICE, SpanKind, SpanStatus, SpanValues

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MEDIA_TYPES = (PROTOBUF, JSON)
ENCODINGS = ("gzip", "identity")

_KINDS: dict[int, SpanKind] = {
    OtlpSpan.SPAN_KIND_UNSPECIFIED: "UNSPECIFIED",
    OtlpSpan.SPAN_KIND_INTERNAL: "INTERNAL",
    OtlpSpan.SPAN_KIND_SERVER: "SERVER",
    OtlpSpan.SPAN_KIND_CLIENT: "CLIENT",
    OtlpSpan.SPAN_KIND_PRODUCER: "PRODUCER",
    OtlpSpan.SPAN_KIND_CONSUMER: "CONSUMER",
}
_STATUSES: dict[int, SpanStatus] = {
    Status.STATUS_CODE_UNSET: "unset",
    Status.STATUS_CODE_OK: "ok",
    Status.STATUS_CODE_ERROR: "error",
}
#: OTLP JSON's hex id fields (and their bytes), by either spelling json_format takes.
_ID_BYTES = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8, "parentSpanId": 8, "parent_span_id": 8}


class Malformed(Exception):
    """Not an export request we can read; the message says where."""


class TooLarge(Exception):
    """Larger than the limit once decompressed."""


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, without parameters, lower case."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The body without its Content-Encoding (gzip or identity); `TooLarge` past `limit` bytes,
    found without inflating more than that (a small bomb stays small)."""
    if encoding == "identity":
        return body
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise Malformed(f"the gzip body cannot be read: {e}") from None
    if len(out) > limit:
        raise TooLarge(f"more than {limit} bytes once decompressed")
    if not inflater.eof:
        raise Malformed("the gzip body is cut short")
    return out


def decode(body: bytes, media: str) -> list[SpanValues]:
    """The spans of an export request in `media` (PROTOBUF or JSON)."""
    request = ExportTraceServiceRequest()
    if media == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as e:
            raise Malformed(f"not an ExportTraceServiceRequest: {e}") from None
    else:
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise Malformed(f"not JSON: {e}") from None
        if not isinstance(document, dict):
            raise Malformed("not an ExportTraceServiceRequest: the JSON is no object")
        try:
            # OTLP JSON differs from protobuf's JSON mapping only in its ids (hex, not base64);
            # unknown fields are ignored, as the OTLP spec asks of receivers.
            json_format.ParseDict(_ids_to_base64(document, "$"), request, ignore_unknown_fields=True)
        except json_format.ParseError as e:
            raise Malformed(f"not an ExportTraceServiceRequest: {e}") from None
    return rows(request)


def response(media: str) -> bytes:
    """The success answer, an empty ExportTraceServiceResponse in the request's encoding."""
    message = ExportTraceServiceResponse()
    if media == PROTOBUF:
        return bytes(message.SerializeToString())
    return str(json_format.MessageToJson(message)).encode()


# === OTLP JSON ids ===


def _ids_to_base64(node: Any, path: str) -> Any:
    """A copy of the document with every trace and span id turned from hex to base64."""
    if isinstance(node, list):
        return [_ids_to_base64(item, f"{path}[{i}]") for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        size = _ID_BYTES.get(key)
        if size is not None and isinstance(value, str):
            out[key] = _hex_id(value, size, f"{path}.{key}")
        else:
            out[key] = _ids_to_base64(value, f"{path}.{key}")
    return out


def _hex_id(text: str, size: int, path: str) -> str:
    if text == "":
        return ""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise Malformed(f"{path}: {text!r} is not {size * 2} hex digits")
    return base64.b64encode(raw).decode()


# === the message into rows ===


def rows(request: ExportTraceServiceRequest) -> list[SpanValues]:
    out: list[SpanValues] = []
    for i, resource_spans in enumerate(request.resource_spans):
        resource = attributes(resource_spans.resource.attributes)
        service = _text(resource.get("service.name"), MAX_SERVICE)
        namespace = _text(resource.get("service.namespace"), MAX_SERVICE)
        for j, scope_spans in enumerate(resource_spans.scope_spans):
            for k, span in enumerate(scope_spans.spans):
                where = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                out.append(_row(span, where, service=service, namespace=namespace, resource=resource))
    return out


def _row(span: OtlpSpan, where: str, *, service: str, namespace: str, resource: dict[str, Any]) -> SpanValues:
    trace_id = _id(span.trace_id, 16, f"{where}.traceId", required=True)
    span_id = _id(span.span_id, 8, f"{where}.spanId", required=True)
    parent = _id(span.parent_span_id, 8, f"{where}.parentSpanId", required=False)
    if not span.start_time_unix_nano:
        raise Malformed(f"{where}.startTimeUnixNano: required")
    if span.end_time_unix_nano < span.start_time_unix_nano:
        raise Malformed(f"{where}.endTimeUnixNano: before startTimeUnixNano")
    attrs = attributes(span.attributes)
    if span.status.message:
        attrs["otel.status_description"] = span.status.message
    return SpanValues(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=span.name[:MAX_NAME],
        service=service,
        namespace=namespace,
        kind=_KINDS.get(span.kind, "UNSPECIFIED"),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        status=_STATUSES.get(span.status.code, "unset"),
        attributes=attrs,
        resource=resource,
    )


def _id(raw: bytes, size: int, path: str, *, required: bool) -> str:
    """Hex of an id; all zeros is no id (for a parent: a root span)."""
    if not raw.strip(b"\0"):
        if required:
            raise Malformed(f"{path}: required (and not all zeros)")
        return ""
    if len(raw) != size:
        raise Malformed(f"{path}: {len(raw)} bytes, not {size}")
    return raw.hex()


def _text(value: Any, limit: int) -> str:
    return "" if value is None else str(value)[:limit]


def attributes(pairs: Any) -> dict[str, Any]:
    """OTLP key-values as a JSON object (a repeated key: the last wins)."""
    out: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        out[pair.key] = value(pair.value)
    return out


def value(v: AnyValue) -> Any:
    """One OTLP AnyValue as JSON: arrays as lists, key-value lists as objects, bytes as base64."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [value(item) for item in v.array_value.values]
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, which)
