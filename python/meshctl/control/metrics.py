"""The control plane's own Prometheus metrics: one `Metrics` per app, in a
registry of its own (never prometheus_client's global one, so that two apps in
one process, as in tests, do not count into each other), and the small hooks
that feed it: ASGI middleware for API requests, the push hub for snapshots
sent and ACKed, the identity router for SVIDs. ``GET /metrics`` (routers/
prometheus.py) serves it.

Names (all ``meshctl_control_``):

- ``push_seconds{stage}``: histogram, from the moment this process noticed a
  mesh generation (or a watcher started waiting, when later) to a sidecar's
  snapshot of it being handed to the server (``stage="sent"``), and to the
  sidecar's ACK of it (``stage="acked"``).
- ``watchers{kind}``: gauge, open snapshot watches (``stream`` or ``long_poll``).
- ``config_acks_total``, ``config_nacks_total``: counters of sidecar reports.
- ``api_requests_total{method,route,code}`` and
  ``api_request_duration_seconds{method,route,code}``: the route is the
  template (``/api/v1/services/{namespace}/{name}``), never the raw path, and a
  method outside HTTP's own is ``other``: bounded cardinality. The duration
  runs until the response starts (a watch stream's lasts as long as its
  connection, which would say nothing).
- ``svids_issued_total``: counter.
- ``sidecars_registered``, ``sidecars_live``, ``generation``: gauges, read from
  the database when scraped.
- ``build_info{version}``, plus the process and Python collectors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from sqlmodel import Session, col, func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meshctl import __version__
from meshctl.control import crud
from meshctl.control.kinds.common import now
from meshctl.control.models import Sidecar

if TYPE_CHECKING:
    from meshctl.control.fanout import Outcome

PREFIX = "meshctl_control_"
#: Seconds: a push on an idle control plane takes milliseconds; a compile of a large mesh, seconds.
PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Generations whose first sight is remembered (a sidecar far behind pushes without a latency).
REMEMBERED_GENERATIONS = 256


class Metrics:
    """The metric objects of one app, and the push clock (see `generation_seen`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Info(f"{PREFIX}build", "The control plane's version.", registry=r).info({"version": __version__})
        self.push_seconds = Histogram(
            f"{PREFIX}push_seconds",
            "From a mesh generation (or the watch's start, when later) to a sidecar's snapshot sent, or ACKed.",
            ["stage"],
            buckets=PUSH_BUCKETS,
            registry=r,
        )
        self.watchers = Gauge(f"{PREFIX}watchers", "Open snapshot watches.", ["kind"], registry=r)
        self.acks = Counter(f"{PREFIX}config_acks", "Snapshots sidecars reported applied.", registry=r)
        self.nacks = Counter(f"{PREFIX}config_nacks", "Snapshots sidecars reported refused.", registry=r)
        self.snapshots = Counter(
            f"{PREFIX}snapshot_watchers",
            "Watchers at each compiled generation: woken with a new snapshot, or left waiting (config unchanged).",
            ["outcome"],
            registry=r,
        )
        labels = ["method", "route", "code"]
        self.api_requests = Counter(f"{PREFIX}api_requests", "API requests answered.", labels, registry=r)
        self.api_seconds = Histogram(
            f"{PREFIX}api_request_duration_seconds",
            "From a request's arrival to its response's start.",
            labels,
            buckets=API_BUCKETS,
            registry=r,
        )
        self.svids = Counter(f"{PREFIX}svids_issued", "SVIDs signed for sidecars.", registry=r)
        self.sidecars = Gauge(f"{PREFIX}sidecars_registered", "Sidecars and gateways registered.", registry=r)
        self.sidecars_live = Gauge(f"{PREFIX}sidecars_live", "Those whose registration is live.", registry=r)
        self.generation = Gauge(f"{PREFIX}generation", "The mesh generation (config version).", registry=r)
        for kind in ("stream", "long_poll"):  # present from the start, at 0
            self.watchers.labels(kind)
        for stage in ("sent", "acked"):
            self.push_seconds.labels(stage)
        for outcome in ("pushed", "unchanged"):
            self.snapshots.labels(outcome)
        #: generation -> when this process first saw it (monotonic seconds).
        self._seen: dict[int, float] = {}
        #: sidecar id -> (version sent, when its push started): the ACK closes it.
        self._sent: dict[int, tuple[int, float]] = {}

    # === the push clock ===

    def generation_seen(self, generation: int) -> None:
        self._seen.setdefault(generation, time.monotonic())
        while len(self._seen) > REMEMBERED_GENERATIONS:
            del self._seen[min(self._seen)]

    def pushed(self, sidecar_id: int, version: int, waiting_since: float) -> None:
        """A snapshot of `version` handed to the server for `sidecar_id`, whose watch has waited
        since `waiting_since` (monotonic): a first fetch counts from the request, not from a
        generation made long before the sidecar existed."""
        start = max(self._seen.get(version, waiting_since), waiting_since)
        self.push_seconds.labels("sent").observe(time.monotonic() - start)
        self._sent[sidecar_id] = (version, start)

    def acked(self, sidecar_id: int, version: int) -> None:
        self.acks.inc()
        sent = self._sent.get(sidecar_id)
        if sent is not None and sent[0] == version:  # once per push: a repeated ACK is not timed again
            del self._sent[sidecar_id]
            self.push_seconds.labels("acked").observe(time.monotonic() - sent[1])

    def snapshots_compiled(self, outcome: Outcome | None) -> None:
        """A generation compiled for every watcher: how many it woke, how many it left waiting."""
        if outcome is not None:
            self.snapshots.labels("pushed").inc(outcome.pushed)
            self.snapshots.labels("unchanged").inc(outcome.unchanged)

    def forget(self, sidecar_id: int) -> None:
        self._sent.pop(sidecar_id, None)

    @contextmanager
    def watching(self, kind: str) -> Iterator[None]:
        gauge = self.watchers.labels(kind)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    # === scrape ===

    def refresh(self, session: Session) -> None:
        """The gauges the database holds, read now (a scrape is rare; a hook per heartbeat is not)."""
        total, live = session.exec(
            select(func.count(), func.count().filter(col(Sidecar.expires_at) > now())).select_from(Sidecar)
        ).one()
        self.sidecars.set(total)
        self.sidecars_live.set(live)
        self.generation.set(crud.generation(session))

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """(body, content type): OpenMetrics when `accept` asks for it, else the text format 0.0.4."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


# === API requests ===


class RequestMetrics:
    """ASGI middleware: counts every HTTP request by method, route template and status, and times
    it to the start of its response. A request that raises before answering is a 500."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500
        answered = False

        async def timed_send(message: Message) -> None:
            nonlocal code, answered
            if message["type"] == "http.response.start" and not answered:
                answered, code = True, int(message["status"])
                self._observe(scope, code, time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            if not answered:
                self._observe(scope, code, time.perf_counter() - started)

    def _observe(self, scope: Scope, code: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        labels = (method, route_template(scope), str(code))
        self.metrics.api_requests.labels(*labels).inc()
        self.metrics.api_seconds.labels(*labels).observe(seconds)


def route_template(scope: Scope) -> str:
    """The matched route's path template; ``unmatched`` for a 404 of no route (the raw path
    would let any caller add series)."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
