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
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, col

from meshctl.control import crud, instances, notify, replicas
from meshctl.control.collector import Collector
from meshctl.control.compile_egress import transparent_ports
from meshctl.control.compiler import EndpointView, Mesh, SidecarSpec
from meshctl.control.fanout import Fanout, Outcome, Parts, Watch, wake
from meshctl.control.kinds.common import now
from meshctl.control.kinds.registry import KINDS
from meshctl.control.kinds.service import Service
from meshctl.control.metrics import Metrics
from meshctl.control.models import Endpoint, Sidecar
from meshctl.control.notify import Listener
from meshctl.control.rowcache import RowCache

log = logging.getLogger("meshctl.control.push")

COALESCE_SECONDS = 0.002
ACK_FLUSH_SECONDS = 0.2


def load_mesh(
    session: Session,
    *,
    trust_domain: str = "cluster.local",
    authz_default: str = "allow",
    outbound_policy: str = "ALLOW_ANY",
    rows: RowCache | None = None,
) -> Mesh:
    """The compiler's input, read in one transaction together with its generation; the
    settings it carries (trust domain, authorization default, outbound policy) are the caller's.
    `rows`: what the last load read, to read only the rows changed since (see control/rowcache.py)."""
    generation = crud.generation(session)  # first: what is read next is at least this new
    parts: dict[str, Any] = {}
    for kind in KINDS:  # each kind reads its own rows
        parts.update(rows.part(session, kind) if rows is not None else kind.load(crud.list_all(session, kind.table)))
    endpoints: dict[str, list[EndpointView]] = {}
    live = (
        sa.select(
            *(col(c) for c in (Endpoint.address, Endpoint.port, Endpoint.weight, Endpoint.labels)),
            col(Service.namespace),
            col(Service.name),
        )
        .where(col(Endpoint.service_id) == col(Service.id), col(Endpoint.expires_at) > now())
        .outerjoin(Sidecar, instances.with_sidecar())
        .where(instances.serving())  # an app that is not healthy (yet) takes no calls
        .order_by(col(Endpoint.id))
    )
    for address, port, weight, labels, namespace, name in session.execute(live).all():  # columns: no ORM objects
        endpoints.setdefault(f"{namespace}/{name}", []).append(EndpointView(address, port, weight, dict(labels)))
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
        #: Every sidecar's snapshot and the watches waiting on them (see control/fanout.py).
        self.fanout = Fanout()
        self._parts: Parts | None = None
        #: The resources as the last load read them: a load reads only the rows changed since.
        self.rows = RowCache()
        self._follower: asyncio.Task[None] | None = None
        #: ACKs POSTed to `status`, written in batches.
        self._acks: dict[int, int] = {}
        #: NACKs carried to a newer generation that left the refused config as it was.
        self._nacks: dict[int, tuple[int, str]] = {}
        #: Full garbage collections when no push waits for them (see control/collector.py).
        self.collector = Collector()
        self._task = self.loop.create_task(self._run())
        self._ack_task = self.loop.create_task(self._flush_acks())

    async def close(self) -> None:
        self.collector.close()
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
        self.metrics.acked(sidecar_id, version)
        # An ACK of a config this process compiled unchanged at newer generations stands for them.
        version = self.fanout.note(sidecar_id, self._spec(sidecar_id), version, None)
        self._acks[sidecar_id] = max(version, self._acks.get(sidecar_id, -1))

    def note_nack(self, sidecar_id: int, version: int, error: str) -> int:
        """A NACK (written at once by the caller): returns the generation it stands for."""
        self.metrics.nacks.inc()
        return self.fanout.note(sidecar_id, self._spec(sidecar_id), version, error)

    def drop_snapshot(self, sidecar_id: int) -> None:
        """A sidecar deregistered: its snapshot and last report are dropped (from any thread)."""
        self.loop.call_soon_threadsafe(self.fanout.forget, sidecar_id, self._spec(sidecar_id))

    def _spec(self, sidecar_id: int) -> SidecarSpec | None:
        known = self.sidecars.get(sidecar_id)
        return known[0] if known is not None else None

    async def _flush_acks(self) -> None:
        while True:
            await asyncio.sleep(ACK_FLUSH_SECONDS)
            acks, self._acks = self._acks, {}
            nacks, self._nacks = self._nacks, {}
            if acks or nacks:
                try:
                    await asyncio.to_thread(self._write_acks, acks, nacks)
                except Exception:
                    log.exception("recording %d ACKs failed", len(acks))

    def _write_acks(self, acks: dict[int, int], nacks: dict[int, tuple[int, str]] | None = None) -> None:
        with Session(self.engine) as session:
            instances.record_acks(session, acks)
            instances.carry_nacks(session, nacks or {})

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
        for watches in self.fanout.watches.values():
            for w in watches:
                wake(w)
        if self._follower is not None:
            self._follower.cancel()

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

    async def next_snapshot(
        self, sidecar_id: int, sidecar: SidecarSpec, held: int, timeout: float, since: float
    ) -> tuple[int, bytes] | None:
        """(version, body) of the snapshot to send a watch of `sidecar_id` holding version `held`,
        as soon as there is one it does not hold (see control/fanout.py: only a change of its own
        config wakes it); None after `timeout` seconds or at shutdown. `since` (time.monotonic())
        is when the watch started waiting, for the push-latency histogram."""
        if self._follower is None:
            self._follower = self.loop.create_task(self._follow())
        deadline = self.loop.time() + timeout
        watch = Watch(sidecar_id, held)
        self.fanout.add(sidecar, watch)
        try:
            while not self.closing:
                await self._fresh(sidecar)
                found = self.fanout.due(sidecar, held)
                if found is not None:
                    self.metrics.pushed(sidecar_id, found.version, since)
                    return found.version, found.body
                remaining = deadline - self.loop.time()
                if remaining <= 0:
                    return None
                watch.woken = self.loop.create_future()
                try:
                    await asyncio.wait_for(watch.woken, remaining)
                except TimeoutError:
                    return None
            return None
        finally:
            self.fanout.remove(sidecar, watch)

    async def _fresh(self, sidecar: SidecarSpec) -> None:
        """`sidecar`'s snapshot compiled at the current mesh (a watch that just arrived, or one of
        a sidecar not watching when the mesh was last compiled)."""
        mesh = await self._current_mesh()
        if self.fanout.fresh(sidecar, mesh.generation):
            return
        parts = self._parts
        assert parts is not None
        if parts.has_outbound(sidecar):
            config = parts.config(sidecar)
        else:  # the costly part, shared by a service's instances: off the loop
            config = await asyncio.to_thread(parts.config, sidecar)
        if mesh is self._mesh:
            self._carry(self.fanout.install(mesh.generation, {sidecar: config}, batch=False))

    async def _follow(self) -> None:
        """Compiles every watched sidecar's snapshot as soon as the generation moves (whether or not
        any of them changes: only the compile tells)."""
        while not self.closing:
            compiled = self._mesh.generation if self._mesh is not None else -1
            if await self.wait_newer(compiled, 3600) is not None:
                try:
                    await self._current_mesh()
                except Exception:  # a database hiccup: the next generation tries again
                    log.exception("compiling snapshots failed")
                    await asyncio.sleep(self.tick)

    def _carry(self, outcome: Outcome) -> None:
        """The reports of sidecars whose config `outcome`'s generation left as it was stand for it."""
        for sidecar_id, (generation, error) in outcome.carried.items():
            if error is None:
                self._acks[sidecar_id] = max(generation, self._acks.get(sidecar_id, -1))
            else:
                self._nacks[sidecar_id] = (generation, error)

    async def _current_mesh(self) -> Mesh:
        async with self._mesh_lock:  # one load per generation, however many watchers wake
            if self._mesh is None or self._mesh.generation < self.generation:
                # Let a burst of writes (a fleet registering, an apply loop) land: one load covers them.
                await asyncio.sleep(COALESCE_SECONDS)
                announced = self.generation  # committed before the load reads it (later ones: the next load)
                mesh, parts, configs = await asyncio.to_thread(self._load_compiled, self.fanout.watched())
                self._mesh, self._parts = mesh, parts
                if mesh.generation < announced:
                    # The database is the truth: never promise watchers a version it does not have.
                    log.warning("generation %d announced, database has %d", announced, mesh.generation)
                    self.generation = mesh.generation
                self._carry(self.fanout.install(mesh.generation, configs))
                self.metrics.snapshots_compiled(self.fanout.last)
                self._advance(mesh.generation)
                self.collector.loaded()
            return self._mesh

    def _load_compiled(self, specs: list[SidecarSpec]) -> tuple[Mesh, Parts, dict[SidecarSpec, bytes]]:
        """The mesh, and every watched sidecar's config compiled from it (one thread hop)."""
        mesh = self._load()
        if self._mesh is not None:  # what is still valid of the last compile is taken again
            mesh.earlier = self._mesh.service_routes
        parts = Parts(mesh)
        return mesh, parts, {spec: parts.config(spec) for spec in specs}

    def _load(self) -> Mesh:
        with Session(self.engine) as session:
            self._endpoints = instances.live_endpoints_digest(session)
            mesh = load_mesh(
                session,
                trust_domain=self.trust_domain,
                authz_default=self.authz_default,
                outbound_policy=self.outbound_policy,
                rows=self.rows,
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
