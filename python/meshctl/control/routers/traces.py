"""The trace store's routes: OTLP/HTTP export in (``/v1/traces``, the path
OTLP exporters append to a collector's address) and the trace list and
waterfall out (``/api/v1/traces``).

Any valid token may export, join tokens included: sidecars export with theirs.
Refusals are JSON ``{"detail": ...}`` whatever the request's encoding (OTLP
exporters log an error body as text, and this one reads as text)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from meshctl.control.deps import EngineDep, MemberCaller, Reader, SessionDep, SettingsDep
from meshctl.control.errors import Invalid
from meshctl.control.settings import Settings
from meshctl.control.traces import otlp, query, store
from meshctl.control.traces.models import TraceDetail, TraceList

otlp_router = APIRouter(tags=["traces"])
router = APIRouter(prefix="/api/v1/traces", tags=["traces"])

# === OTLP/HTTP in ===

_OTLP_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An OTLP ExportTraceServiceRequest; Content-Encoding gzip is taken.",
        "content": {otlp.PROTOBUF: {"schema": {"type": "string", "format": "binary"}}, otlp.JSON: {"schema": {}}},
    }
}
_OTLP_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Stored: an empty ExportTraceServiceResponse in the request's encoding.",
        "content": {otlp.PROTOBUF: {}, otlp.JSON: {}},
    },
    400: {"description": "Not an export request (the detail says where)."},
    401: {"description": "No valid token."},
    413: {"description": "Larger than the limit (otlp_max_bytes), compressed or not."},
    415: {"description": "Neither protobuf nor JSON, or an encoding other than gzip."},
}


def _refuse(code: int, detail: str) -> HTTPException:
    return HTTPException(code, detail=detail)


async def _read(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over `limit`."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _refuse(status.HTTP_413_CONTENT_TOO_LARGE, f"{length} bytes: at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _refuse(status.HTTP_413_CONTENT_TOO_LARGE, f"more than {limit} bytes: at most {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def _ingest(engine: Engine, settings: Settings, body: bytes, media: str, encoding: str) -> int:
    spans = otlp.decode(otlp.inflate(body, encoding, settings.otlp_max_bytes), media)
    retention = store.Retention(settings.trace_retention_seconds, settings.trace_max_spans)
    return store.write(engine, spans, retention=retention)


@otlp_router.post("/v1/traces", openapi_extra=_OTLP_BODY, responses=_OTLP_ANSWERS, response_class=Response)
async def export_traces(request: Request, _: MemberCaller, engine: EngineDep, settings: SettingsDep) -> Response:
    """Take an OTLP/HTTP trace export (protobuf or JSON): all its spans are stored, or none."""
    media = otlp.media_type(request.headers.get("content-type"))
    if media not in otlp.MEDIA_TYPES:
        kinds = " or ".join(otlp.MEDIA_TYPES)
        raise _refuse(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"Content-Type {media or '(none)'}: send {kinds}")
    encoding = request.headers.get("content-encoding", "identity").strip().lower() or "identity"
    if encoding not in otlp.ENCODINGS:
        raise _refuse(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"Content-Encoding {encoding}: send gzip or none")
    body = await _read(request, settings.otlp_max_bytes)
    try:
        # Decoding a few MiB and writing them is no work for the event loop.
        await run_in_threadpool(_ingest, engine, settings, body, media, encoding)
    except otlp.Malformed as e:
        raise _refuse(status.HTTP_400_BAD_REQUEST, str(e)) from None
    except otlp.TooLarge as e:
        raise _refuse(status.HTTP_413_CONTENT_TOO_LARGE, str(e)) from None
    return Response(otlp.response(media), media_type=media)


# === traces out ===

TRACE_ID = r"^[0-9a-fA-F]{32}$"


@router.get("", response_model=TraceList)
def list_traces(
    session: SessionDep,
    _: Reader,
    service: Annotated[
        str | None, Query(description='A service ("name" or "namespace/name") with a span in it.')
    ] = None,
    min_duration: Annotated[
        str | None,
        Query(alias="minDuration", description="At least this long: milliseconds, or a duration (250ms, 1.5s)."),
    ] = None,
    error: Annotated[bool | None, Query(description="Only traces with (true) or without (false) errors.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> TraceList:
    """The newest stored traces that match, newest first."""
    try:
        min_ns = query.duration_ns(min_duration) if min_duration is not None else 0
    except ValueError as e:
        raise Invalid([{"loc": ["query", "minDuration"], "msg": str(e), "type": "value_error"}]) from None
    found = query.list_traces(session, service=service, min_duration_ns=min_ns, error=error, limit=limit)
    return TraceList(traces=found)


@router.get("/{trace_id}", response_model=TraceDetail)
def read_trace(session: SessionDep, _: Reader, trace_id: Annotated[str, Path(pattern=TRACE_ID)]) -> TraceDetail:
    """One trace's spans in waterfall order."""
    found = query.trace(session, trace_id.lower())
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"trace {trace_id} not found")
    return found
