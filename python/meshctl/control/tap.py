"""Tap sessions: live request metadata relayed from sidecars to an operator.

A session lives only in this process's memory, from the operator's
``GET /api/v1/tap/{namespace}/{service}`` until its limit, its time or the
operator going away. The sidecars of that service learn of it by long-polling
``GET /api/v1/sidecars/{id}/tap`` (answered when the set of open sessions of
their service changes, else 204), open a tap on their data plane with its
filters, and POST batches of events to ``/api/v1/sidecars/{id}/tap/{session}``
until it answers 410 Gone. With no session open, a sidecar costs one parked
request and its data plane nothing.

With several control-plane replicas on PostgreSQL the operator and the
sidecars may reach different ones: a session opened on one replica is
announced to the others (``control.relay``, topic ``taps``), whose sidecars
list it as theirs; the events they POST there are relayed to the replica that
holds the session, and its close is announced too. Nothing is stored.

Each session buffers a bounded number of events: when the operator reads
slower than the sidecars send, events are dropped and counted; a sidecar's
POST never waits on the operator. Events are redacted here again (defence in
depth; the data plane already does it): only known fields pass, and only the
allow-listed request headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Engine

from meshctl.control.longpoll import wait_ready
from meshctl.control.notify import Listener
from meshctl.control.relay import Parts, Relay, chunks

log = logging.getLogger("meshctl.control.tap")

#: The request headers an event may carry; every other header is dropped (the data plane's list).
ALLOWED_HEADERS = frozenset({"user-agent", "content-type", "content-length", "accept", "x-request-id"})
#: The most events, and seconds, one session may ask for.
MAX_LIMIT = 10_000
MAX_SECONDS = 300.0
#: Sessions open at once on one service: a tap costs every sidecar of it a thread and a data-plane tap.
MAX_SESSIONS_PER_SERVICE = 8
#: Events buffered per session for a slow operator; more are dropped and counted.
QUEUE_EVENTS = 1000
#: The most events in one batch a sidecar POSTs.
MAX_BATCH = 1000
#: An idle stream sends a blank line this often: both ends notice a dead peer.
KEEPALIVE_SECONDS = 15.0
#: How often an idle stream looks whether its session was ended (shutdown).
CHECK_SECONDS = 1.0
#: A session this long past its time is closed by the next open or long-poll (its stream is gone).
REAP_SECONDS = 10.0


# === the shapes on the wire ===


class TapEvent(BaseModel):
    """One request seen by a sidecar's data plane (contract B), as the operator receives it.
    Unknown fields are dropped, and request headers outside `ALLOWED_HEADERS`."""

    model_config = ConfigDict(extra="ignore")

    ts: float = Field(default=0.0, description="Unix seconds when the request finished.")
    direction: str = Field(default="", description="inbound, outbound or gateway.")
    listener: str = ""
    route: str = Field(default="", description='The route that matched ("" when none did).')
    method: str = ""
    authority: str = ""
    path: str = ""
    status: int = 0
    grpc_status: int | None = None
    duration_ms: float = 0.0
    source: str = Field(default="", description='The peer\'s SPIFFE ID ("" for a plaintext or outside caller).')
    client: str = Field(default="", description="ip:port of the client.")
    upstream: str = Field(default="", description='ip:port of the endpoint picked ("" when none was).')
    trace_id: str = ""
    request_id: str = ""
    flags: list[str] = Field(default_factory=list, description="Response flags (no route, timeout, ...).")
    request_headers: dict[str, str] = Field(
        default_factory=dict, description="Only user-agent, content-type, content-length, accept, x-request-id."
    )
    sidecar: int | None = Field(default=None, description="The sidecar that saw it (set by the control plane).")

    @field_validator("request_headers")
    @classmethod
    def _redact(cls, headers: dict[str, str]) -> dict[str, str]:
        return {k.lower(): v for k, v in headers.items() if k.lower() in ALLOWED_HEADERS}


class TapEnd(BaseModel):
    """The stream's last line, as ``{"end": {...}}``: why it ended and what was lost."""

    reason: Literal["limit", "time", "shutdown"]
    events: int = Field(description="Events sent on this stream.")
    dropped: int = Field(description="Events lost: the sidecars' data planes and this stream's buffer were full.")


class TapSessionInfo(BaseModel):
    """An open session as its sidecars see it: what to tap for, and for how long at most."""

    id: str
    method: str | None = None
    path: str | None = Field(default=None, description="A path prefix.")
    status: int | None = None
    limit: int = Field(description="Events the operator wants at most (the sidecar may stop after that many).")
    seconds_left: float = Field(description="Close the tap after this long even without word from here.")


class TapSessions(BaseModel):
    sessions: list[TapSessionInfo]


class TapBatch(BaseModel):
    """Events a sidecar's tap produced for one session, and how many its data plane dropped
    since the last batch."""

    events: list[TapEvent] = Field(default_factory=list, max_length=MAX_BATCH)
    dropped: int = Field(default=0, ge=0)


# === sessions ===


@dataclass(frozen=True)
class TapFilter:
    method: str | None = None
    path: str | None = None  # a prefix
    status: int | None = None

    def matches(self, e: TapEvent) -> bool:
        return (
            (self.method is None or e.method.upper() == self.method)
            and (self.path is None or e.path.startswith(self.path))
            and (self.status is None or e.status == self.status)
        )


class TooManySessions(Exception):
    """The service has `MAX_SESSIONS_PER_SERVICE` sessions open already."""


@dataclass(eq=False)
class TapSession:
    id: str
    service: str  # "namespace/name"
    filter: TapFilter
    limit: int
    deadline: float  # on the event loop's clock
    queue: asyncio.Queue[TapEvent] = field(default_factory=lambda: asyncio.Queue(QUEUE_EVENTS))
    dropped: int = 0
    sent: int = 0
    closed: bool = False
    #: Held by another replica (its operator streams there): events are relayed to it.
    remote: bool = False

    def offer(self, *, sidecar: int, events: Iterable[TapEvent], dropped: int) -> None:
        """Queue what a sidecar sent (never waits): what the filter lets through, as far as it fits."""
        self.dropped += dropped
        for e in events:
            if not self.filter.matches(e):
                continue
            e.sidecar = sidecar
            try:
                self.queue.put_nowait(e)
            except asyncio.QueueFull:
                self.dropped += 1

    def info(self, now: float) -> TapSessionInfo:
        return TapSessionInfo(
            id=self.id,
            method=self.filter.method,
            path=self.filter.path,
            status=self.filter.status,
            limit=self.limit,
            seconds_left=round(max(0.0, self.deadline - now), 3),
        )


class Taps:
    """The open sessions; lives on the server's event loop (`stop` may be called from any thread)."""

    def __init__(self, engine: Engine | None = None, listener: Listener | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.closing = False
        self._sessions: dict[str, TapSession] = {}
        #: Set (and replaced) when a service's sessions change: wakes its sidecars' long-polls.
        self._changed: dict[str, asyncio.Event] = {}
        #: Relayed batches being put together, by session and batch.
        self._parts: dict[str, dict[str, Parts]] = {}
        # (on SQLite one process serves the database: nobody to relay to)
        on_postgres = engine is not None and engine.dialect.name == "postgresql"
        self.relay = (
            Relay(engine, listener, "taps", self._from_listener) if engine is not None and on_postgres else None
        )

    # === between replicas ===

    def _background(self, *payloads: str) -> None:
        """Announce to the other replicas from a thread; a failure is logged (the tap goes on here)."""
        if self.relay is None:
            return

        def done(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.warning("tap: telling the other replicas failed: %s", f.exception())

        self.loop.run_in_executor(None, self.relay.send, *payloads).add_done_callback(done)

    def _from_listener(self, payload: str) -> None:
        self.loop.call_soon_threadsafe(self._heard, payload)

    def _heard(self, payload: str) -> None:
        """A message from a replica (this one's own too), on the loop."""
        kind, _, rest = payload.partition(":")
        try:
            if kind == "open":
                self._opened(*rest.split(":", 1))
            elif kind == "close" and (session := self._sessions.get(rest)) is not None and session.remote:
                self.close(session)
            elif kind == "events":
                session_id, batch, index, parts, text = rest.split(":", 4)
                self._relayed(session_id, batch, int(index), int(parts), text)
        except (ValueError, KeyError, TypeError, ValidationError) as e:
            log.warning("tap: a relayed %s message is not readable: %s", kind, e)

    def _opened(self, session_id: str, doc: str) -> None:
        """A session opened on another replica: listed to the sidecars here too."""
        if session_id in self._sessions:
            return  # (ours, announced)
        info = json.loads(doc)
        self._sessions[session_id] = TapSession(
            id=session_id,
            service=info["service"],
            filter=TapFilter(method=info.get("method"), path=info.get("path"), status=info.get("status")),
            limit=int(info["limit"]),
            deadline=self.loop.time() + float(info["seconds"]),
            remote=True,
        )
        self._wake(info["service"])

    def _relayed(self, session_id: str, batch: str, index: int, parts: int, text: str) -> None:
        """Part of a batch a sidecar sent to another replica for a session held here."""
        session = self._sessions.get(session_id)
        if session is None or session.remote:
            return
        pending = self._parts.setdefault(session_id, {})
        doc = pending.setdefault(batch, Parts(parts)).add(index, text)
        if doc is not None:
            del pending[batch]
            events = [TapEvent.model_validate(e) for e in doc["events"]]
            session.offer(sidecar=int(doc["sidecar"]), events=events, dropped=int(doc["dropped"]))

    async def deliver(self, session: TapSession, *, sidecar: int, batch: TapBatch) -> None:
        """A sidecar's batch: queued here, or relayed to the replica that holds the session."""
        if not session.remote or self.relay is None:
            session.offer(sidecar=sidecar, events=batch.events, dropped=batch.dropped)
            return
        doc: dict[str, Any] = {"sidecar": sidecar, "events": [e.model_dump() for e in batch.events]}
        doc["dropped"] = batch.dropped
        payloads = chunks(f"events:{session.id}:{secrets.token_hex(4)}", doc)
        await asyncio.to_thread(self.relay.send, *payloads)

    # === sessions ===

    def open(self, *, service: str, filter: TapFilter, limit: int, seconds: float) -> TapSession:
        self._reap()
        if len(self.of(service)) >= MAX_SESSIONS_PER_SERVICE:
            raise TooManySessions(f"{service} has {MAX_SESSIONS_PER_SERVICE} taps open already")
        session = TapSession(
            id=secrets.token_hex(8),
            service=service,
            filter=filter,
            limit=limit,
            deadline=self.loop.time() + seconds,
        )
        self._sessions[session.id] = session
        self._wake(service)
        opened = {"service": service, "limit": limit, "seconds": seconds}
        opened |= {"method": filter.method, "path": filter.path, "status": filter.status}
        self._background(f"open:{session.id}:{json.dumps(opened)}")
        return session

    def close(self, session: TapSession) -> None:
        session.closed = True
        self._parts.pop(session.id, None)
        if self._sessions.pop(session.id, None) is not None:
            self._wake(session.service)
            if not session.remote:
                self._background(f"close:{session.id}")

    def get(self, session_id: str) -> TapSession | None:
        return self._sessions.get(session_id)

    def of(self, service: str) -> list[TapSession]:
        return [s for s in self._sessions.values() if s.service == service]

    def _reap(self) -> None:
        """Close sessions well past their time: one whose stream never started (the client left
        before the first byte) has nobody else to close it."""
        late = self.loop.time() - REAP_SECONDS
        for session in [s for s in self._sessions.values() if s.deadline < late]:
            self.close(session)

    def _wake(self, service: str) -> None:
        if (event := self._changed.pop(service, None)) is not None:
            event.set()

    async def wait_change(self, service: str, known: set[str], timeout: float) -> list[TapSessionInfo] | None:
        """The service's open sessions once they differ from `known` (ids), or None after `timeout`
        seconds or at shutdown."""

        def changed() -> list[TapSessionInfo] | None:
            sessions = self.of(service)
            if {s.id for s in sessions} == known:
                return None
            now = self.loop.time()
            return [s.info(now) for s in sessions]

        self._reap()
        return await wait_ready(
            changed, events=self._changed, key=service, timeout=timeout, closing=lambda: self.closing
        )

    async def stream(self, session: TapSession) -> AsyncIterator[bytes]:
        """The session's events as NDJSON, then one ``{"end": ...}`` line; the session is closed
        however the stream ends (limit, time, shutdown, or the client going away)."""
        try:
            reason: Literal["limit", "time", "shutdown"] = "time"
            idle = 0.0
            while session.sent < session.limit:
                if self.closing or session.closed:
                    reason = "shutdown"
                    break
                remaining = session.deadline - self.loop.time()
                if remaining <= 0:
                    break
                wait = min(remaining, CHECK_SECONDS)
                try:
                    event = await asyncio.wait_for(session.queue.get(), wait)
                except TimeoutError:
                    idle += wait
                    if idle >= KEEPALIVE_SECONDS:
                        idle = 0.0
                        yield b"\n"
                    continue
                idle = 0.0
                session.sent += 1
                yield event.model_dump_json().encode() + b"\n"
            else:
                reason = "limit"
            end = TapEnd(reason=reason, events=session.sent, dropped=session.dropped)
            yield b'{"end":' + end.model_dump_json().encode() + b"}\n"
        finally:
            self.close(session)

    def stop(self) -> None:
        """Server shutdown: end every stream and long-poll now (callable from any thread)."""
        self.loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        self.closing = True
        for service in list(self._changed):
            self._wake(service)
