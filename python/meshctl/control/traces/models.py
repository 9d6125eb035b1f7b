"""The trace store's tables and API shapes.

``span`` holds one row per span, in the order spans arrived (its id, which
count retention cuts by). ``tracesummary`` holds one row per trace, updated
as its spans arrive, so that listing traces, filtering them by duration or
errors and dropping them by age read one small row each instead of every
span."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypedDict

from pydantic import BaseModel
from sqlalchemy import JSON, BigInteger, Column, Index, Integer
from sqlmodel import Field, SQLModel

#: Longest span name and service name kept (longer ones are cut).
MAX_NAME = 1024
MAX_SERVICE = 255

SpanKind = Literal["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]
SpanStatus = Literal["ok", "error", "unset"]

# An integer primary key that is SQLite's rowid (auto-incremented), and 64 bits elsewhere: a busy
# mesh goes past 2**31 spans in weeks.
_ROW_ID = BigInteger().with_variant(Integer(), "sqlite")


# === tables ===


class Span(SQLModel, table=True):
    __table_args__ = (
        # One row per span: an exporter's retry of a batch that was stored is not stored twice.
        Index("ix_span_trace_id_span_id", "trace_id", "span_id", unique=True),
        # ?service=: the traces that have a span of a service.
        Index("ix_span_service_trace_id", "service", "trace_id"),
    )

    #: Arrival order: count retention drops the traces of the lowest ids.
    id: int | None = Field(default=None, sa_column=Column(_ROW_ID, primary_key=True, autoincrement=True))
    #: Lower-case hex: 32 digits.
    trace_id: str = Field(max_length=32)
    #: Lower-case hex: 16 digits.
    span_id: str = Field(max_length=16)
    #: "" for a root span.
    parent_span_id: str = Field(max_length=16)
    name: str = Field(max_length=MAX_NAME)
    #: The resource's service.name and service.namespace ("" when it has none).
    service: str = Field(max_length=MAX_SERVICE)
    namespace: str = Field(max_length=MAX_SERVICE)
    kind: str = Field(max_length=16)
    start_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    end_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str = Field(max_length=8)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    resource: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class TraceSummary(SQLModel, table=True):
    """What the trace list shows, kept up to date as spans arrive."""

    trace_id: str = Field(primary_key=True, max_length=32)
    #: The earliest start and the latest end of its spans (unix ns).
    start_ns: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    end_ns: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    span_count: int
    error_count: int
    #: Whether its root span (one with no parent) has arrived; until it has, the root fields are
    #: those of its earliest span.
    root_found: bool
    root_service: str = Field(max_length=MAX_SERVICE)
    root_name: str = Field(max_length=MAX_NAME)


class SpanValues(TypedDict):
    """One decoded span, as the ``span`` table's columns (bulk inserts take these)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    namespace: str
    kind: SpanKind
    start_ns: int
    end_ns: int
    status: SpanStatus
    attributes: dict[str, Any]
    resource: dict[str, Any]


# === API shapes ===


class TraceInfo(BaseModel):
    trace_id: str
    #: Of the root span (its earliest span while the root has not arrived).
    root_service: str
    root_name: str
    #: When its earliest span started (UTC).
    start: datetime
    duration_ms: float
    span_count: int
    error_count: int
    #: Every service with a span in it, sorted.
    services: list[str]


class TraceList(BaseModel):
    #: Newest first.
    traces: list[TraceInfo]


class SpanInfo(BaseModel):
    span_id: str
    #: "" for a root span.
    parent_span_id: str
    name: str
    service: str
    kind: SpanKind
    #: From the start of the trace's earliest span.
    start_ms: float
    duration_ms: float
    status: SpanStatus
    #: The span's attributes; a status message is ``otel.status_description``.
    attributes: dict[str, Any]


class TraceDetail(BaseModel):
    trace_id: str
    #: In waterfall order: depth first from each root, children by start time. A span whose parent
    #: is not in the store (not arrived, or dropped) is drawn as a root.
    spans: list[SpanInfo]
