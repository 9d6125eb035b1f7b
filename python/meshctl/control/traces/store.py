"""Writing spans: one transaction per export request (its spans, their traces'
summaries, and retention), run in a worker thread by the OTLP route.

Retention is by age (a trace whose last span ended longer ago than the
retention goes) and by count (at most ``max_spans`` spans: the traces of the
oldest-arrived spans go). Both drop whole traces and both read an index
range, never every row: the summaries by end time, the spans by id.

Portable SQL only (SQLite and PostgreSQL). Writers take turns: on SQLite
the write lock orders them; on PostgreSQL a transaction-scoped advisory lock
does, across every replica on the database (without it, writers of the same
traces deadlocked on the span index, and count retention did not see the
spans of writers at work beside it, so the store outgrew ``max_spans``). The
summaries are still read FOR UPDATE, and a writer that loses a race to create
the same row or span retries the whole request."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Engine, delete, func, insert, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from meshctl.control.traces.models import Span, SpanValues, TraceSummary

#: Ids per IN (...) list: well below any database's limit on bound parameters.
_CHUNK = 500
#: Tries of a request that lost a race to another writer of the same trace.
_ATTEMPTS = 3
#: The advisory lock (PostgreSQL) that trace-store writers take turns on: "meshtrac".
_WRITERS_LOCK = 0x6D65_7368_7472_6163

T = TypeVar("T")


@dataclass(frozen=True)
class Retention:
    max_age_seconds: int
    max_spans: int


def write(engine: Engine, spans: list[SpanValues], *, retention: Retention) -> int:
    """Store `spans` (those not stored already) and apply retention, in one transaction;
    returns how many were new."""
    for attempt in range(_ATTEMPTS):
        try:
            with Session(engine) as session:
                if engine.dialect.name == "postgresql":  # released when the transaction ends
                    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITERS_LOCK})
                stored = _add(session, spans)
                prune(session, retention=retention, now_ns=time.time_ns())
                session.commit()
                return stored
        except IntegrityError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _chunks(items: Iterable[T]) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == _CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def _add(session: Session, spans: list[SpanValues]) -> int:
    by_trace: dict[str, dict[str, SpanValues]] = {}
    for span in spans:  # the first of a span sent twice in one request wins
        by_trace.setdefault(span["trace_id"], {}).setdefault(span["span_id"], span)
    for ids in _chunks(by_trace):
        for trace_id, span_id in session.exec(select(Span.trace_id, Span.span_id).where(col(Span.trace_id).in_(ids))):
            by_trace[trace_id].pop(span_id, None)
    new = {t: list(group.values()) for t, group in by_trace.items() if group}
    rows = [span for group in new.values() for span in group]
    if not rows:
        return 0
    session.execute(insert(Span), rows)
    for ids in _chunks(new):
        query = select(TraceSummary).where(col(TraceSummary.trace_id).in_(ids)).with_for_update()
        known = {s.trace_id: s for s in session.exec(query)}
        for trace_id in ids:
            session.add(_merge(known.get(trace_id), trace_id, new[trace_id]))
    session.flush()
    return len(rows)


def _merge(summary: TraceSummary | None, trace_id: str, spans: list[SpanValues]) -> TraceSummary:
    """The summary of a trace with `spans` added."""
    earliest = min(spans, key=lambda s: s["start_ns"])
    roots = sorted((s for s in spans if not s["parent_span_id"]), key=lambda s: s["start_ns"])
    if summary is None:
        summary = TraceSummary(
            trace_id=trace_id,
            start_ns=earliest["start_ns"],
            end_ns=0,
            span_count=0,
            error_count=0,
            root_found=False,
            root_service=earliest["service"],
            root_name=earliest["name"],
        )
    if not summary.root_found and (roots or earliest["start_ns"] < summary.start_ns):
        root = roots[0] if roots else earliest
        summary.root_found = bool(roots)
        summary.root_service, summary.root_name = root["service"], root["name"]
    summary.start_ns = min(summary.start_ns, earliest["start_ns"])
    summary.end_ns = max(summary.end_ns, *(s["end_ns"] for s in spans))
    summary.span_count += len(spans)
    summary.error_count += sum(s["status"] == "error" for s in spans)
    return summary


# === retention ===


def prune(session: Session, *, retention: Retention, now_ns: int) -> int:
    """Drop the traces past retention; returns how many."""
    cutoff = now_ns - retention.max_age_seconds * 1_000_000_000
    doomed = set(session.exec(select(TraceSummary.trace_id).where(TraceSummary.end_ns < cutoff)))
    newest = session.exec(select(func.max(Span.id))).one()
    if newest is not None and newest > retention.max_spans:
        # Every span with a higher id stays, unless its trace goes: at most max_spans are left.
        oldest = select(Span.trace_id).where(col(Span.id) <= newest - retention.max_spans).distinct()
        doomed.update(session.exec(oldest))
    for ids in _chunks(doomed):
        session.execute(delete(Span).where(col(Span.trace_id).in_(ids)))
        session.execute(delete(TraceSummary).where(col(TraceSummary.trace_id).in_(ids)))
    return len(doomed)
