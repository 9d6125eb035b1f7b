"""The trace store on PostgreSQL (tests/pg.py, in either pass): writers of the
same traces at once, each sending an overlapping part of them in its own
order (as exporters of several services, and their retries, do), leave every
span stored once and each trace's summary exact; retention by count on top of
them drops whole traces."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

import pg
from meshctl.control.db import make_engine, migrate
from meshctl.control.traces import store
from meshctl.control.traces.models import Span, SpanValues, TraceSummary

BASE = 1_790_000_000_000_000_000  # unix ns
KEEP = store.Retention(max_age_seconds=10 * 365 * 86_400, max_spans=1_000_000)


@pytest.fixture
def engine() -> Iterator[Engine]:
    url = pg.database("traces")
    migrate(url)
    made = make_engine(url)
    yield made
    made.dispose()


def span(trace: int, n: int) -> SpanValues:
    """Span `n` of trace `trace`: n 0 is the root, every seventh fails; span n runs n..n+10 ms."""
    return SpanValues(
        trace_id=f"{trace:032x}",
        span_id=f"{n + 1:016x}",
        parent_span_id="" if n == 0 else f"{1:016x}",
        name=f"op-{n}",
        service=f"svc-{n % 3}",
        namespace="default",
        kind="SERVER" if n == 0 else "INTERNAL",
        start_ns=BASE + n * 1_000_000,
        end_ns=BASE + (n + 10) * 1_000_000,
        status="error" if n % 7 == 6 else "ok",
        attributes={"n": n},
        resource={},
    )


def write_at_once(engine: Engine, batches: list[list[SpanValues]], retention: store.Retention = KEEP) -> list[int]:
    """Each batch written by a thread of its own, all released together; how many each stored."""
    start = threading.Barrier(len(batches))
    stored: list[int] = [0] * len(batches)
    failures: list[BaseException] = []

    def one(i: int) -> None:
        start.wait(30)
        try:
            stored[i] = store.write(engine, batches[i], retention=retention)
        except BaseException as e:  # reported by the test, with which writer
            failures.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    assert not failures, failures
    return stored


def test_concurrent_writers_of_the_same_traces_store_each_span_once_and_exact_summaries(engine: Engine) -> None:
    traces, per_trace, writers = 4, 60, 8
    every = [span(t, n) for t in range(traces) for n in range(per_trace)]
    rng = random.Random(16)
    # Each writer: about half of every trace's spans (so each span is sent by several), shuffled.
    batches = [rng.sample(every, len(every) // 2) for _ in range(writers)]
    covered = {(s["trace_id"], s["span_id"]) for b in batches for s in b}
    stored = write_at_once(engine, batches)
    assert sum(stored) == len(covered)  # each span counted new by exactly one writer
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Span)).one() == len(covered)
        summaries = {s.trace_id: s for s in session.exec(select(TraceSummary))}
    assert len(summaries) == traces
    for t in range(traces):
        mine = [span(t, n) for n in range(per_trace) if (f"{t:032x}", f"{n + 1:016x}") in covered]
        summary = summaries[f"{t:032x}"]
        assert summary.span_count == len(mine)
        assert summary.error_count == sum(s["status"] == "error" for s in mine)
        assert (summary.start_ns, summary.end_ns) == (
            min(s["start_ns"] for s in mine),
            max(s["end_ns"] for s in mine),
        )
        root = any(s["parent_span_id"] == "" for s in mine)
        assert summary.root_found == root
        if root:
            assert (summary.root_service, summary.root_name) == ("svc-0", "op-0")


def test_retention_by_count_under_concurrent_writers_drops_whole_traces(engine: Engine) -> None:
    # 6 writers, each of two traces of its own (20 spans each); at most 100 spans are kept.
    batches = [[span(w * 2 + k, n) for k in range(2) for n in range(20)] for w in range(6)]
    write_at_once(engine, batches, store.Retention(max_age_seconds=KEEP.max_age_seconds, max_spans=100))
    with Session(engine) as session:
        counts = dict(session.exec(select(Span.trace_id, func.count()).group_by(Span.trace_id)).all())
        summaries = {s.trace_id: s.span_count for s in session.exec(select(TraceSummary))}
    assert sum(counts.values()) <= 100
    assert set(counts.values()) == {20}  # whole traces, never a part of one
    assert summaries == counts
