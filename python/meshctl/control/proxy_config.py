"""``meshctl proxy-config``: a running sidecar's data-plane config, relayed
from the sidecar to an operator through this process.

Sidecars run on other hosts and their admin listener (where ``/config`` is)
binds localhost only, so the operator cannot ask them directly. As with tap
(see ``control.tap``), the sidecar asks here: it long-polls
``GET /api/v1/sidecars/{id}/config-dumps`` (held ~25 s, answered at once when
an operator is waiting on it, else 204), builds the dump from its data plane
and POSTs it to ``/api/v1/sidecars/{id}/config-dumps/{request}``; the
operator's ``GET /api/v1/sidecars/{id}/proxy-config`` returns it. A request
lives only in memory and only while its operator waits. With several
control-plane replicas on PostgreSQL the operator and the sidecar may reach
different ones: the request and the dump travel between them as announcements
(``control.relay``); nothing is stored.

The dump has the sections the CLI shows: listeners, routes (each with its
listener), clusters, endpoints (each with its cluster and the data plane's
health of it) and identity (SPIFFE ID, SVID validity, trust-bundle digest,
never a key). The data plane redacts inline keys; any left is redacted here
again (defence in depth).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Engine

from meshctl.control.longpoll import wait_ready
from meshctl.control.notify import Listener
from meshctl.control.relay import DumpRelay, Heard, Parts

log = logging.getLogger("meshctl.control.proxy_config")

#: How long an operator waits for the sidecar's answer by default, and at most.
ANSWER_SECONDS = 10.0
MAX_ANSWER_SECONDS = 60.0
#: Operators waiting on one sidecar at once: each holds a request open.
MAX_WAITING = 16
#: The config keys whose values are secrets (inline PEM keys).
SECRET_KEYS = frozenset({"private_key"})
REDACTED = "<redacted>"


# === the shapes on the wire ===


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if k in SECRET_KEYS else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


class TrustBundleDigest(BaseModel):
    roots: int = Field(description="Root certificates in the bundle the sidecar verifies peers with.")
    sha256: str = Field(description="SHA-256 (hex) of the roots' DER certificates, concatenated in order.")


class ProxyIdentity(BaseModel):
    """The SVID the sidecar's data plane serves with; never its key."""

    model_config = ConfigDict(extra="ignore")

    spiffe_id: str
    serial: str = Field(description="The SVID's serial number (hex).")
    not_before: str
    not_after: str
    trust_bundle: TrustBundleDigest | None = None


class ProxyConfigReport(BaseModel):
    """What a sidecar sends: its data plane's running config in sections, with endpoint health.
    Each entry is the data plane's config document for it (see the data-plane config reference),
    plus the fields named here."""

    model_config = ConfigDict(extra="ignore")

    version: int | None = Field(description="The snapshot version its data plane runs (None: none yet).")
    listeners: list[dict[str, Any]] = Field(
        default_factory=list, description="Each listener without its routes, plus `bound`: the address it listens on."
    )
    routes: list[dict[str, Any]] = Field(
        default_factory=list, description="Each HTTP route, in match order, plus `listener` and `index`."
    )
    clusters: list[dict[str, Any]] = Field(default_factory=list, description="Each cluster without its endpoints.")
    endpoints: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Each endpoint, plus `cluster` and `health` (healthy, ejected, ejected_for_ms, health_check, "
        "active and requests, from the data plane's stats).",
    )
    identity: ProxyIdentity | None = None

    @field_validator("listeners", "routes", "clusters", "endpoints")
    @classmethod
    def _no_keys(cls, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        redacted: list[dict[str, Any]] = _redacted(entries)
        return redacted


class ProxyConfig(ProxyConfigReport):
    """A running sidecar's config, as ``meshctl proxy-config`` shows it."""

    sidecar: int
    namespace: str
    service: str


class DumpRequests(BaseModel):
    requests: list[str] = Field(description="Ids of the dumps operators are waiting for.")


# === requests waiting for an answer ===


class TooManyWaiting(Exception):
    """`MAX_WAITING` operators wait on this sidecar already."""


class ConfigDumps:
    """Operators waiting for a sidecar's dump; lives on the server's event loop (`stop` may be
    called from any thread). With an `engine` and a `listener`, requests and answers also travel
    to and from the other replicas (``control.relay``)."""

    def __init__(self, engine: Engine | None = None, listener: Listener | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.closing = False
        self._waiting: dict[int, dict[str, asyncio.Future[ProxyConfigReport]]] = {}
        #: Set (and replaced) when a sidecar is asked: wakes its long-poll.
        self._asked: dict[int, asyncio.Event] = {}
        #: Requests operators wait for on other replicas: sidecar -> request -> until (loop time).
        self._remote: dict[int, dict[str, float]] = {}
        #: Answers from other replicas being put together, by request.
        self._parts: dict[str, Parts] = {}
        #: Requests asked here -> until when (loop time) their own announcement may still come back:
        #: every replica hears its own, and one heard after the request ended here would look like
        #: another replica's operator waiting (the sidecar would build a dump nobody reads).
        self._mine: dict[str, float] = {}
        # (on SQLite one process serves the database: nobody to relay to)
        on_postgres = engine is not None and engine.dialect.name == "postgresql"
        self.relay = DumpRelay(engine, listener, self._from_listener) if engine is not None and on_postgres else None

    def _from_listener(self, heard: Heard) -> None:
        self.loop.call_soon_threadsafe(self._heard, heard)

    def _background(self, send: Callable[..., None], *args: Any) -> None:
        """A message to the other replicas, sent from a thread; a failure is logged (the local
        request goes on)."""
        if self.relay is None:
            return

        def done(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.warning("proxy-config: telling the other replicas failed: %s", f.exception())

        self.loop.run_in_executor(None, send, *args).add_done_callback(done)

    def _wake(self, sidecar_id: int) -> None:
        if (event := self._asked.pop(sidecar_id, None)) is not None:
            event.set()

    def _heard(self, h: Heard) -> None:
        """A message from a replica (this one's own too), on the loop."""
        waiting = self._waiting.get(h.sidecar, {})
        if h.kind == "ask" and h.request not in waiting and h.request not in self._mine:
            self._remote.setdefault(h.sidecar, {})[h.request] = self.loop.time() + h.seconds
            self._wake(h.sidecar)
        elif h.kind == "done":
            self._remote.get(h.sidecar, {}).pop(h.request, None)
            self._parts.pop(h.request, None)
        elif h.kind == "answer" and (answer := waiting.get(h.request)) is not None and not answer.done():
            try:
                doc = self._parts.setdefault(h.request, Parts(h.parts)).add(h.index, h.text)
                if doc is not None:
                    self._parts.pop(h.request, None)
                    answer.set_result(ProxyConfigReport.model_validate(doc))
            except (ValueError, ValidationError) as e:
                log.warning("proxy-config: a relayed dump for %s is not readable: %s", h.request, e)

    async def ask(self, sidecar_id: int, timeout: float) -> ProxyConfigReport | None:
        """The sidecar's dump, or None when it did not answer within `timeout` seconds (or at shutdown)."""
        waiting = self._waiting.setdefault(sidecar_id, {})
        if len(waiting) >= MAX_WAITING:
            raise TooManyWaiting(f"{MAX_WAITING} requests wait on sidecar {sidecar_id} already")
        request_id = secrets.token_hex(8)
        answer: asyncio.Future[ProxyConfigReport] = self.loop.create_future()
        waiting[request_id] = answer
        self._wake(sidecar_id)
        if self.relay is not None:  # the sidecar may long-poll another replica
            now = self.loop.time()
            for gone in [k for k, until in self._mine.items() if until <= now]:
                del self._mine[gone]
            self._mine[request_id] = now + timeout
            self._background(self.relay.ask, sidecar_id, request_id, timeout)
        try:
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            if self.closing:  # `stop` cancelled the wait
                return None
            raise  # the operator went away
        finally:
            waiting.pop(request_id, None)
            if not waiting:
                self._waiting.pop(sidecar_id, None)
            self._parts.pop(request_id, None)
            if self.relay is not None:
                self._background(self.relay.done, sidecar_id, request_id)

    def pending(self, sidecar_id: int) -> list[str]:
        """The requests for this sidecar's dump: waited for here, or on another replica."""
        now = self.loop.time()
        remote = self._remote.get(sidecar_id, {})
        for gone in [k for k, until in remote.items() if until <= now]:
            del remote[gone]
        return [k for k, f in self._waiting.get(sidecar_id, {}).items() if not f.done()] + list(remote)

    async def wait_asked(self, sidecar_id: int, timeout: float) -> list[str] | None:
        """Ids of the dumps waited for from this sidecar, once there are any; None after `timeout`
        seconds or at shutdown."""
        return await wait_ready(
            lambda: self.pending(sidecar_id) or None,
            events=self._asked,
            key=sidecar_id,
            timeout=timeout,
            closing=lambda: self.closing,
        )

    async def answer(self, sidecar_id: int, request_id: str, report: ProxyConfigReport) -> bool:
        """Hands the dump to its operator, here or on the replica where it waits; False when
        nobody waits for it any more."""
        answer = self._waiting.get(sidecar_id, {}).get(request_id)
        if answer is not None and not answer.done():
            answer.set_result(report)
            return True
        if self.relay is None or request_id not in self.pending(sidecar_id):
            return False
        self._remote[sidecar_id].pop(request_id, None)  # (answered: not listed to the sidecar again)
        await asyncio.to_thread(self.relay.answer, sidecar_id, request_id, report.model_dump(mode="json"))
        return True

    def stop(self) -> None:
        """Server shutdown: end every long-poll and wait now (callable from any thread)."""
        self.loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        self.closing = True
        self._remote.clear()
        for event in self._asked.values():
            event.set()
        for waiting in self._waiting.values():
            for answer in waiting.values():
                answer.cancel()


async def get_dumps(request: Request) -> ConfigDumps:
    dumps: ConfigDumps = request.app.state.dumps
    return dumps


DumpsDep = Annotated[ConfigDumps, Depends(get_dumps)]
