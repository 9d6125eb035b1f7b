"""Reading traces back: the list (newest first, filtered by service, duration
and errors, from the summaries) and one trace's spans in waterfall order.
Also the durations the list's ``minDuration`` takes: milliseconds, or Go's
duration syntax ("250ms", "1.5s", "1m30s")."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime

from sqlmodel import Session, col, select

from meshctl.control.traces.models import Span, SpanInfo, TraceDetail, TraceInfo, TraceSummary

# === durations ===

_GO_DURATION = re.compile(r"^(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def duration_ns(text: str) -> int:
    """Nanoseconds in `text`: a number of milliseconds ("250", "0.5") or a Go duration ("250ms",
    "1.5s", "1m30s"); ValueError otherwise."""
    text = text.strip()
    try:
        ms = float(text)
    except ValueError:
        if not _GO_DURATION.match(text):
            raise ValueError(
                f"{text!r} is not a duration: give milliseconds (250) or a duration such as 250ms, 1.5s, 1m30s"
            ) from None
        return round(sum(float(n) * _UNIT_NS[unit] for n, unit in _GO_PART.findall(text)))
    if not ms >= 0 or ms == float("inf"):  # also refuses nan
        raise ValueError(f"{text!r} is not a duration: it must be a finite number of milliseconds, 0 or more")
    return round(ms * 1_000_000)


def _ms(ns: int) -> float:
    return round(ns / 1_000_000, 3)


# === the list ===


def list_traces(
    session: Session, *, service: str | None, min_duration_ns: int, error: bool | None, limit: int
) -> list[TraceInfo]:
    """The newest traces that match. `service` is "name" (in any namespace) or "namespace/name":
    a trace matches when any of its spans is that service's."""
    query = select(TraceSummary)
    if service:
        namespace, _, name = service.rpartition("/")
        spans = select(Span.trace_id).where(Span.service == name)
        if namespace:
            spans = spans.where(Span.namespace == namespace)
        query = query.where(col(TraceSummary.trace_id).in_(spans))
    if min_duration_ns:
        query = query.where(col(TraceSummary.end_ns) - col(TraceSummary.start_ns) >= min_duration_ns)
    if error is not None:
        query = query.where(col(TraceSummary.error_count) > 0 if error else col(TraceSummary.error_count) == 0)
    query = query.order_by(col(TraceSummary.start_ns).desc(), col(TraceSummary.trace_id)).limit(limit)
    summaries = list(session.exec(query))
    services: dict[str, set[str]] = defaultdict(set)
    if summaries:
        pairs = select(Span.trace_id, Span.service).where(col(Span.trace_id).in_([s.trace_id for s in summaries]))
        for trace_id, name in session.exec(pairs.distinct()):
            services[trace_id].add(name)
    return [
        TraceInfo(
            trace_id=s.trace_id,
            root_service=s.root_service,
            root_name=s.root_name,
            start=datetime.fromtimestamp(s.start_ns / 1e9, UTC),
            duration_ms=_ms(s.end_ns - s.start_ns),
            span_count=s.span_count,
            error_count=s.error_count,
            services=sorted(services[s.trace_id]),
        )
        for s in summaries
    ]


# === one trace ===


def trace(session: Session, trace_id: str) -> TraceDetail | None:
    """The trace's spans in waterfall order; None when no span of it is stored."""
    spans = list(session.exec(select(Span).where(Span.trace_id == trace_id)))
    if not spans:
        return None
    origin = min(s.start_ns for s in spans)
    return TraceDetail(
        trace_id=trace_id,
        spans=[
            SpanInfo(
                span_id=s.span_id,
                parent_span_id=s.parent_span_id,
                name=s.name,
                service=s.service,
                kind=s.kind,  # type: ignore[arg-type]  # written from SpanKind only
                start_ms=_ms(s.start_ns - origin),
                duration_ms=_ms(s.end_ns - s.start_ns),
                status=s.status,  # type: ignore[arg-type]  # written from SpanStatus only
                attributes=s.attributes,
            )
            for s in waterfall(spans)
        ],
    )


def waterfall(spans: list[Span]) -> list[Span]:
    """Depth first from each root, roots and siblings by start time. A span whose parent is
    missing counts as a root; spans in a parent loop (which no tracer makes) come last."""
    order = sorted(spans, key=lambda s: (s.start_ns, s.span_id))
    ids = {s.span_id for s in order}
    children: dict[str, list[Span]] = defaultdict(list)
    for s in order:
        if s.parent_span_id in ids and s.parent_span_id != s.span_id:
            children[s.parent_span_id].append(s)
    out: list[Span] = []
    seen: set[str] = set()
    stack = [s for s in reversed(order) if s.parent_span_id not in ids or s.parent_span_id == s.span_id]
    while stack:
        span = stack.pop()
        if span.span_id in seen:
            continue
        seen.add(span.span_id)
        out.append(span)
        stack.extend(reversed(children[span.span_id]))
    out.extend(s for s in order if s.span_id not in seen)
    return out
