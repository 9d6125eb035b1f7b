"""Heartbeats in, time bins out: the deltas of every sidecar's cumulative
counters, added per edge into ten-second bins that are kept for an hour.

Per sidecar the store keeps the last counters it reported. Each heartbeat's
counters minus those are the requests since the last heartbeat, added to the
bin of the moment it arrived. A counter that went down means the data plane
restarted: its new value is the delta. A sidecar is counted from the first
heartbeat this process gets from it: a sidecar starting registers before its
data plane runs (no telemetry: zero so far), while one already running when
the control plane (re)starts has its totals taken as a baseline rather than
replayed as a burst into the current bin.

Memory is bounded: the bins of the last hour (360), each at most
`MAX_CELLS_PER_BIN` edges with at most one count per latency bucket the data
plane has (63, kept sparse: only the nonzero ones), and per sidecar the last
counters of at most `MAX_REMEMBERED` edges; sidecars silent for an hour are
forgotten. A typical mesh of a hundred edges holds a few megabytes.

The store lives in one control-plane process: with several replicas behind a
load balancer each would see only the heartbeats sent to it (sharing them is
issue 16's). It is thread-safe: registrations run in FastAPI's worker threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from meshctl.control.stats.report import EdgeReport, TelemetryReport

#: Width of one time bin, the finest resolution of the views.
BIN_SECONDS = 10
#: How long bins are kept: the longest window a view covers.
RETENTION_SECONDS = 3600
#: Edges one bin holds at most; more in one bin are counted in `dropped` (bounded memory).
MAX_CELLS_PER_BIN = 1000
#: Edges remembered per sidecar (a heartbeat carries at most 500; a few drop out and come back).
MAX_REMEMBERED = 2000

# === counts ===


@dataclass
class Counts:
    """Requests, failures and latency (upper bound in ms -> count, only nonzero buckets)."""

    requests: int = 0
    failures: int = 0
    latency: dict[float, int] = field(default_factory=dict)

    @classmethod
    def of(cls, edge: EdgeReport) -> Counts:
        latency: dict[float, int] = {}
        for upper, n in edge.latency_buckets:
            if n:
                latency[upper] = latency.get(upper, 0) + n
        return cls(edge.requests, edge.failures, latency)

    def since(self, before: Counts | None) -> Counts:
        """What was counted after `before` (all of it when a counter went down: a restart)."""
        if before is None or self.requests < before.requests or self.failures < before.failures:
            return self
        if any(n < before.latency.get(upper, 0) for upper, n in self.latency.items()) or any(
            upper not in self.latency for upper in before.latency
        ):
            return self
        latency = {u: n - before.latency.get(u, 0) for u, n in self.latency.items()}
        nonzero = {u: n for u, n in latency.items() if n}
        return Counts(self.requests - before.requests, self.failures - before.failures, nonzero)

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.failures += other.failures
        for upper, n in other.latency.items():
            self.latency[upper] = self.latency.get(upper, 0) + n

    @property
    def empty(self) -> bool:
        return not (self.requests or self.failures or self.latency)


class EdgeKey(NamedTuple):
    """An edge as the views aggregate it: every sidecar's and listener's counts of it together."""

    direction: str
    protocol: str
    route: str
    source: str
    destination: str
    mtls: bool

    @property
    def inbound(self) -> bool:
        return self.direction == "inbound"

    @classmethod
    def of(cls, edge: EdgeReport) -> EdgeKey:
        return cls(edge.direction, edge.protocol, edge.route, edge.source, edge.destination, edge.mtls)


#: An edge as one data plane counts it: per listener too (two listeners never share counters).
_ReportKey = tuple[EdgeKey, str]

# === what a query sees ===


@dataclass(frozen=True)
class Window:
    """The counts of a span of time, merged over its bins, by edge. `start` is the first bin's start,
    so the span may reach up to one bin before what was asked for."""

    start: float
    end: float
    cells: dict[EdgeKey, Counts]
    #: Services with a sidecar that reported telemetry lately: their calls are counted inbound.
    reporting: frozenset[str]

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 1.0)


@dataclass
class _Sidecar:
    service: str
    seen: float
    #: The last counters reported, by edge (absent: zero); None while it has never reported any
    #: (a sidecar starting, or one older than telemetry).
    last: dict[_ReportKey, Counts] | None


class StatsStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sidecars: dict[int, _Sidecar] = {}
        self._bins: dict[int, dict[EdgeKey, Counts]] = {}
        #: Edge deltas not kept because their bin was full.
        self.dropped = 0

    # === heartbeats in ===

    def ingest(self, *, sidecar: int, service: str, report: TelemetryReport | None, now: float | None = None) -> None:
        """Take one heartbeat of sidecar `sidecar` of `service` ("namespace/name")."""
        now = time.time() if now is None else now
        current = None if report is None else {(EdgeKey.of(e), e.listener): Counts.of(e) for e in report.edges}
        with self._lock:
            self._prune(now)
            known = self._sidecars.get(sidecar)
            if known is None:  # first heard of: its totals so far are a baseline
                self._sidecars[sidecar] = _Sidecar(service, now, current)
                return
            known.service, known.seen = service, now
            if current is None:  # its data plane is not running (yet, or again): zero so far
                known.last = None if known.last is None else {}
                return
            last = known.last or {}
            cells = self._bins.setdefault(int(now // BIN_SECONDS), {})
            for k, counts in current.items():
                delta = counts.since(last.get(k))
                if not delta.empty:
                    self._add(cells, k[0], delta)
            if len(last) + len(current) > MAX_REMEMBERED:
                last = {}
            known.last = last | current

    def _add(self, cells: dict[EdgeKey, Counts], key: EdgeKey, delta: Counts) -> None:
        cell = cells.get(key)
        if cell is None:
            if len(cells) >= MAX_CELLS_PER_BIN:
                self.dropped += 1
                return
            cell = cells[key] = Counts()
        cell.add(delta)

    def _prune(self, now: float) -> None:
        oldest = int((now - RETENTION_SECONDS) // BIN_SECONDS)
        for b in [b for b in self._bins if b < oldest]:
            del self._bins[b]
        for s in [s for s, v in self._sidecars.items() if v.seen < now - RETENTION_SECONDS]:
            del self._sidecars[s]

    # === queries out ===

    def window(self, seconds: int, now: float | None = None) -> Window:
        """The last `seconds` (from the start of the bin they begin in) up to `now`."""
        now = time.time() if now is None else now
        first = int((now - seconds) // BIN_SECONDS)
        with self._lock:
            return Window(
                start=first * BIN_SECONDS,
                end=now,
                cells=self._merged(range(first, int(now // BIN_SECONDS) + 1)),
                reporting=self._reporting(now - seconds - BIN_SECONDS),
            )

    def steps(self, seconds: int, step: int, now: float | None = None) -> list[Window]:
        """The last `seconds` in windows of `step` seconds (a multiple of `BIN_SECONDS`), aligned to
        multiples of `step`, oldest first; the last one ends at `now`."""
        now = time.time() if now is None else now
        last = int(now // step) * step
        starts = [last - i * step for i in reversed(range(max(seconds // step, 1)))]
        per = step // BIN_SECONDS
        with self._lock:
            reporting = self._reporting(now - seconds - BIN_SECONDS)
            return [
                Window(
                    start=s,
                    end=min(s + step, now),
                    cells=self._merged(range(s // BIN_SECONDS, s // BIN_SECONDS + per)),
                    reporting=reporting,
                )
                for s in starts
            ]

    def _merged(self, bins: Iterable[int]) -> dict[EdgeKey, Counts]:
        out: dict[EdgeKey, Counts] = {}
        for b in bins:
            for key, counts in self._bins.get(b, {}).items():
                out.setdefault(key, Counts()).add(counts)
        return out

    def _reporting(self, since: float) -> frozenset[str]:
        return frozenset(s.service for s in self._sidecars.values() if s.last is not None and s.seen >= since)
