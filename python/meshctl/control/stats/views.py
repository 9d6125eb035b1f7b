"""The live views' rows, from a store's windows: golden metrics (requests,
rps, success rate, latency quantiles) per service, route and edge, and a
service's series over time.

Which edges count for what:
- A service's numbers come from its inbound edges: its own sidecars see every
  caller, meshed or not (as linkerd viz does). A service none of whose
  sidecars reports telemetry (no sidecar, or one older than telemetry) is seen
  only from the callers' side: its outbound (and gateway) edges stand in.
- Routes live on the client side, so route numbers come from outbound and
  gateway edges, one row per route and service called.
- Edges (who calls whom, with mTLS or not) are the inbound edges plus the
  outbound ones to services that do not report.

Quantiles come from the merged latency buckets, interpolated linearly inside
the bucket the rank falls in (the data plane's buckets are each 2^(1/3) times
as wide as the one before, so an estimate is within ~26 % of the truth).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from meshctl.control.stats.store import Counts, EdgeKey, Window

#: Each latency bucket's upper bound over its lower one (the data plane's histogram).
BUCKET_RATIO = 2 ** (1 / 3)
#: The first bucket's upper bound, 2^(17/3) us: it holds everything from 0.
FIRST_UPPER_MS = 2 ** (17 / 3) / 1000

StatKind = Literal["service", "route", "edge"]

# === response shapes ===


class StatRow(BaseModel):
    #: service: "namespace/name"; route: the route's name; edge: "source -> destination".
    name: str
    #: The service called (route rows).
    service: str | None = None
    #: Caller and callee, "" when unknown (edge rows).
    source: str | None = None
    destination: str | None = None
    mtls: bool | None = None
    requests: int
    rps: float
    #: 0..1; None without requests.
    success_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class Stats(BaseModel):
    kind: StatKind
    window_seconds: int
    rows: list[StatRow]


class SeriesPoint(BaseModel):
    #: The start of the step, unix seconds.
    t: float
    rps: float
    success_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class Series(BaseModel):
    service: str
    step_seconds: int
    points: list[SeriesPoint]


class EdgeStat(BaseModel):
    source: str
    destination: str
    mtls: bool
    protocol: str
    requests: int
    rps: float
    success_rate: float | None
    p99_ms: float | None


class Edges(BaseModel):
    window_seconds: int
    edges: list[EdgeStat]


# === arithmetic ===


def quantile(latency: dict[float, int], q: float) -> float | None:
    """The latency at quantile `q` in ms, interpolated inside its bucket; None without any."""
    total = sum(latency.values())
    if total == 0:
        return None
    rank, below = q * total, 0
    for upper in sorted(latency):
        n = latency[upper]
        if below + n >= rank:
            lower = 0.0 if upper <= FIRST_UPPER_MS * 1.001 else upper / BUCKET_RATIO
            return round(lower + (upper - lower) * max(rank - below, 0) / n, 3)
        below += n
    return round(max(latency), 3)  # not reached: rank <= total


def success_rate(c: Counts) -> float | None:
    if c.requests == 0:
        return None
    return round(max(0.0, 1 - c.failures / c.requests), 4)


def _golden(c: Counts, seconds: float) -> dict[str, Any]:
    return {
        "requests": c.requests,
        "rps": round(c.requests / seconds, 3),
        "success_rate": success_rate(c),
        "p50_ms": quantile(c.latency, 0.5),
        "p95_ms": quantile(c.latency, 0.95),
        "p99_ms": quantile(c.latency, 0.99),
    }


K = TypeVar("K", bound=Hashable)


def _grouped(cells: Iterable[tuple[EdgeKey, Counts]], by: Callable[[EdgeKey], K]) -> dict[K, Counts]:
    out: dict[K, Counts] = {}
    for key, counts in cells:
        out.setdefault(by(key), Counts()).add(counts)
    return out


# === which edges count for what ===


def counts_for_service(key: EdgeKey, service: str, reporting: frozenset[str]) -> bool:
    """Whether edge `key` counts towards `service`'s numbers."""
    return key.destination == service and (key.inbound or service not in reporting)


def counts_as_edge(key: EdgeKey, reporting: frozenset[str]) -> bool:
    return key.inbound or (key.destination != "" and key.destination not in reporting)


def _service_counts(w: Window, service: str) -> Counts:
    out = Counts()
    for k, c in w.cells.items():
        if counts_for_service(k, service, w.reporting):
            out.add(c)
    return out


# === rows ===


def service_rows(w: Window, services: list[str]) -> list[StatRow]:
    """One row per service of `services` ("namespace/name"), with or without requests."""
    return [StatRow(name=s, **_golden(_service_counts(w, s), w.seconds)) for s in services]


def route_rows(w: Window, service: str | None = None) -> list[StatRow]:
    """One row per route and service called (only calls to `service` when given)."""
    cells = (
        (k, c)
        for k, c in w.cells.items()
        if not k.inbound and k.route and (service is None or k.destination == service)
    )
    groups = _grouped(cells, lambda k: (k.route, k.destination))
    return [StatRow(name=r, service=d, **_golden(c, w.seconds)) for (r, d), c in sorted(groups.items())]


def _edges(w: Window, service: str | None) -> Iterable[tuple[EdgeKey, Counts]]:
    return (
        (k, c)
        for k, c in w.cells.items()
        if counts_as_edge(k, w.reporting) and (service is None or service in (k.source, k.destination))
    )


def edge_name(source: str, destination: str) -> str:
    return f"{source or '(unknown)'} -> {destination}"


def edge_rows(w: Window, service: str | None = None) -> list[StatRow]:
    """Who calls whom and with mTLS or not (only edges from or to `service` when given)."""
    groups = _grouped(_edges(w, service), lambda k: (k.source, k.destination, k.mtls))
    return [
        StatRow(name=edge_name(s, d), source=s, destination=d, mtls=m, **_golden(c, w.seconds))
        for (s, d, m), c in sorted(groups.items())
    ]


def edges(w: Window, seconds: int) -> Edges:
    """The mesh's edges, by protocol too (the graph's)."""
    groups = _grouped(_edges(w, None), lambda k: (k.source, k.destination, k.mtls, k.protocol))
    out = []
    for (s, d, m, p), c in sorted(groups.items()):
        g = _golden(c, w.seconds)
        del g["p50_ms"], g["p95_ms"]
        out.append(EdgeStat(source=s, destination=d, mtls=m, protocol=p, **g))
    return Edges(window_seconds=seconds, edges=out)


def series(windows: list[Window], service: str, step: int) -> Series:
    points = []
    for w in windows:
        g = _golden(_service_counts(w, service), w.seconds)
        del g["requests"]
        points.append(SeriesPoint(t=w.start, **g))
    return Series(service=service, step_seconds=step, points=points)
