"""Config push: the mesh generation, sidecars long-polling for a newer one,
and compiled snapshots cached per generation.

Writes in this process publish their new generation at once; on PostgreSQL,
writes through every replica are announced (control/notify.py) and each
replica's Hub advances on them at once. A tick each second also reads the
generation from the database (the fallback, should an announcement be missed)
and notices endpoints that expired, which happens without a write: when the
live set differs from the one the cached mesh was loaded with, the tick bumps
the generation, once across replicas (see `crud.bump_past`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from meshctl.control import crud, instances, notify, replicas
from meshctl.control.compile_egress import transparent_ports
from meshctl.control.compiler import (
    EndpointView,
    Mesh,
    Outbound,
    SidecarSpec,
    compile_outbound,
    compile_sidecar,
    outbound_key,
)
from meshctl.control.kinds.common import now
from meshctl.control.kinds.registry import KINDS
from meshctl.control.kinds.service import Service
from meshctl.control.metrics import Metrics
from meshctl.control.models import Endpoint, Sidecar
from meshctl.control.notify import Listener

log = logging.getLogger("meshctl.control.push")

COALESCE_SECONDS = 0.002
ACK_FLUSH_SECONDS = 0.2


def load_mesh(
    session: Session,
    *,
    trust_domain: str = "cluster.local",
    authz_default: str = "allow",
    outbound_policy: str = "ALLOW_ANY",
) -> Mesh:
    """The compiler's input, read in one transaction together with its generation; the
    settings it carries (trust domain, authorization default, outbound policy) are the caller's."""
    generation = crud.generation(session)  # first: what is read next is at least this new
    parts: dict[str, Any] = {}
    for kind in KINDS:  # each kind reads its own rows
        parts.update(kind.load(crud.list_all(session, kind.table)))
    endpoints: dict[str, list[EndpointView]] = {}
    live = (
        select(Endpoint, Service.namespace, Service.name)
        .where(col(Endpoint.service_id) == col(Service.id), col(Endpoint.expires_at) > now())
        .outerjoin(Sidecar, instances.with_sidecar())
        .where(instances.serving())  # an app that is not healthy (yet) takes no calls
        .order_by(col(Endpoint.id))
    )
    for ep, namespace, name in session.exec(live).all():
        endpoints.setdefault(f"{namespace}/{name}", []).append(
            EndpointView(ep.address, ep.port, ep.weight, dict(ep.labels))
        )
    return Mesh(
        generation=generation,
        trust_domain=trust_domain,
        authz_default=authz_default,
        outbound_policy=outbound_policy,
        endpoints=endpoints,
        **parts,
    )


class Hub:
    """Lives on the server's event loop; `publish` may be called from any thread."""

    def __init__(
        self,
        engine: Engine,
        tick: float = 1.0,
        *,
        trust_domain: str = "cluster.local",
        authz_default: str = "allow",
        outbound_policy: str = "ALLOW_ANY",
        bundle: Callable[[], list[str]] | None = None,
        metrics: Metrics | None = None,
        listener: Listener | None = None,
    ):
        self.engine, self.tick = engine, tick
        self.trust_domain, self.authz_default = trust_domain, authz_default
        self.outbound_policy = outbound_policy
        #: The CA's current roots; every phase change of a rotation raises the generation.
        self.bundle = bundle
        #: Push latency, watchers and ACKs are counted here (see control/metrics.py).
        self.metrics = metrics or Metrics()
        self.loop = asyncio.get_running_loop()
        #: Set (from any thread) to poll the database now rather than at the next tick.
        self._poll_soon = asyncio.Event()
        #: Sidecars by id, with the service they act as and the token they registered with (an
        #: expired join token acts only for its own): watches need no database read. A sidecar
        #: registering with another spec through another replica is announced ("sidecars").
        self.sidecars: dict[int, tuple[SidecarSpec, str, int | None]] = {}
        #: Tells this Hub's own announcements from the others' (payload "id origin").
        self._origin = uuid.uuid4().hex[:12]
        if listener is not None:  # before the generation is read: nothing announced after is missed
            listener.on("generation", self._heard_generation)
            listener.on("sidecars", self._heard_sidecar)
        with Session(engine) as session:
            # Before the first snapshot is compiled: the time no control plane was running does
            # not count against the registrations (see instances.resume_leases; once across replicas).
            self.replica, gap = replicas.start(session, tick=tick)
            if gap > timedelta(0):
                log.info("registrations resumed: %.0f s since the last heartbeat did not count", gap.total_seconds())
            self.generation = crud.generation(session)
        #: The live endpoints the cached mesh was loaded with.
        self._endpoints: str | None = None
        self._next: asyncio.Future[int] = self.loop.create_future()
        self._mesh: Mesh | None = None
        self._mesh_lock = asyncio.Lock()
        self.closing = False
        self._snapshots: dict[SidecarSpec, bytes] = {}
        self._outbound: dict[tuple[Any, ...], Outbound] = {}
        #: ACKs POSTed to `status`, written in batches.
        self._acks: dict[int, int] = {}
        self._task = self.loop.create_task(self._run())
        self._ack_task = self.loop.create_task(self._flush_acks())

    async def close(self) -> None:
        self._task.cancel()
        self._ack_task.cancel()
        await asyncio.to_thread(self._write_acks, self._acks)
        if self.replica is not None:
            await asyncio.to_thread(self._leave, self.replica)

    def _leave(self, replica: str) -> None:
        with Session(self.engine) as session:
            replicas.leave(session, replica)

    def _heard_generation(self, payload: str | None) -> None:
        """An announced generation (listener thread): advance at once; None: poll now."""
        if payload is None:
            self.loop.call_soon_threadsafe(self._poll_soon.set)
        else:
            self.publish(int(payload))

    def registered(self, session: Session, sidecar_id: int, known: tuple[SidecarSpec, str, int | None]) -> None:
        """A sidecar registered (or heartbeat) through this replica, `session`'s write committed:
        remember it; when that differs from what was remembered here (or nothing was), tell every
        replica to forget what it remembers (a transaction of its own: rare past the first)."""
        if self.sidecars.get(sidecar_id) != known:
            notify.announce(session, "sidecars", f"{sidecar_id} {self._origin}")
            session.commit()
        self.sidecars[sidecar_id] = known

    def forget(self, session: Session, sidecar_id: int) -> None:
        """A sidecar left (its row went, committed): here and on every replica."""
        self.sidecars.pop(sidecar_id, None)
        notify.announce(session, "sidecars", f"{sidecar_id} {self._origin}")
        session.commit()

    def _heard_sidecar(self, payload: str | None) -> None:
        """A sidecar re-registered with another spec or left (listener thread): forget it here."""
        if payload is None:
            self.loop.call_soon_threadsafe(self.sidecars.clear)
            return
        sidecar_id, _, origin = payload.partition(" ")
        if origin != self._origin:  # (what this Hub announced, it remembers already)
            self.loop.call_soon_threadsafe(self.sidecars.pop, int(sidecar_id), None)

    def note_ack(self, sidecar_id: int, version: int) -> None:
        self._acks[sidecar_id] = max(version, self._acks.get(sidecar_id, -1))
        self.metrics.acked(sidecar_id, version)

    async def _flush_acks(self) -> None:
        while True:
            await asyncio.sleep(ACK_FLUSH_SECONDS)
            acks, self._acks = self._acks, {}
            if acks:
                try:
                    await asyncio.to_thread(self._write_acks, acks)
                except Exception:
                    log.exception("recording %d ACKs failed", len(acks))

    def _write_acks(self, acks: dict[int, int]) -> None:
        with Session(self.engine) as session:
            instances.record_acks(session, acks)

    def publish(self, generation: int) -> None:
        self.loop.call_soon_threadsafe(self._advance, generation)

    def _advance(self, generation: int) -> None:
        if generation > self.generation:
            self.generation = generation
            self.metrics.generation_seen(generation)
            woken, self._next = self._next, self.loop.create_future()
            woken.set_result(generation)

    def stop_watches(self) -> None:
        """Server shutdown: end every long-poll and stream now (callable from any thread)."""
        self.loop.call_soon_threadsafe(self._close_watches)

    def _close_watches(self) -> None:
        self.closing = True
        woken, self._next = self._next, self.loop.create_future()
        woken.set_result(self.generation)

    async def wait_newer(self, version: int, timeout: float) -> int | None:
        """The generation once it is above `version`, or None after `timeout` seconds (or at shutdown)."""
        deadline = self.loop.time() + timeout
        while self.generation <= version and not self.closing:
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(asyncio.shield(self._next), remaining)
            except TimeoutError:
                return None
        return None if self.closing else self.generation

    async def snapshot(self, sidecar: SidecarSpec) -> tuple[int, bytes]:
        """(version, {"version", "config"} as JSON bytes), compiled once per generation and sidecar."""
        mesh = await self._current_mesh()
        body = self._snapshots.get(sidecar)
        if body is None:  # (JSON without newlines: streams send one snapshot per line)
            key = outbound_key(sidecar, mesh)
            outbound = self._outbound.get(key)
            if outbound is None:  # the costly part, shared by a service's instances
                outbound = await asyncio.to_thread(compile_outbound, mesh, sidecar)
            config = compile_sidecar(mesh, sidecar, outbound)
            body = json.dumps({"version": mesh.generation, "config": config}).encode()
            if mesh is self._mesh:
                self._snapshots[sidecar] = body
                self._outbound[key] = outbound
        return mesh.generation, body

    async def push(self, sidecar_id: int, sidecar: SidecarSpec, waiting_since: float) -> tuple[int, bytes]:
        """`snapshot`, for a watch of `sidecar_id` waiting since `waiting_since` (time.monotonic()),
        timed into the push-latency histogram."""
        version, body = await self.snapshot(sidecar)
        self.metrics.pushed(sidecar_id, version, waiting_since)
        return version, body

    async def _current_mesh(self) -> Mesh:
        async with self._mesh_lock:  # one load per generation, however many watchers wake
            if self._mesh is None or self._mesh.generation < self.generation:
                # Let a burst of writes (a fleet registering, an apply loop) land: one load covers them.
                await asyncio.sleep(COALESCE_SECONDS)
                self._mesh = await asyncio.to_thread(self._load)
                self._snapshots, self._outbound = {}, {}
                if self._mesh.generation < self.generation:
                    # The database is the truth: never promise watchers a version it does not have.
                    log.warning("generation %d announced, database has %d", self.generation, self._mesh.generation)
                    self.generation = self._mesh.generation
                self._advance(self._mesh.generation)
            return self._mesh

    def _load(self) -> Mesh:
        with Session(self.engine) as session:
            self._endpoints = instances.live_endpoints_digest(session)
            mesh = load_mesh(
                session,
                trust_domain=self.trust_domain,
                authz_default=self.authz_default,
                outbound_policy=self.outbound_policy,
            )
        if self.bundle is not None:
            mesh.trust_bundle = tuple(self.bundle())
        return mesh

    def _poll(self) -> int:
        with Session(self.engine) as session:
            mesh, loaded = self._mesh, self._endpoints
            if mesh is not None and loaded is not None and instances.live_endpoints_digest(session) != loaded:
                self._endpoints = None  # one try until the next load
                # Only from the generation the stale mesh has: when another replica bumped (or
                # anything was written) since, the next load reads the live set anyway.
                if crud.bump_past(session, mesh.generation):
                    session.commit()
            if self.replica is not None:
                replicas.seen(session, self.replica)
            return crud.generation(session)

    async def _run(self) -> None:
        while True:
            # The tick, or sooner when the listener reconnected (it may have missed some).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_soon.wait(), self.tick)
            self._poll_soon.clear()
            try:
                self._advance(await asyncio.to_thread(self._poll))
            except Exception:  # a database hiccup must not end the tick
                log.exception("polling the mesh generation failed")


def sidecar_spec(sc: Any, svc: Service) -> SidecarSpec:
    return SidecarSpec(
        namespace=svc.namespace,
        service=svc.name,
        address=sc.address,
        inbound_port=sc.inbound_port,
        app_port=sc.app_port,
        upstreams=tuple(sorted(sc.upstreams.items())),
        http_proxy_port=sc.http_proxy_port,
        admin_port=sc.admin_port,
        gateway=sc.gateway,
        zone=sc.zone,
        transparent=transparent_ports(sc.transparent),
    )
