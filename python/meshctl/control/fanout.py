"""Snapshots per sidecar, compiled for every watching sidecar at once when the
mesh generation moves, and handed only to the watchers whose config changed.

A sidecar's snapshot version is the generation at which its config last
changed, as this process saw it (not the mesh generation): a watcher holding
that version keeps waiting when a change elsewhere in the mesh leaves its
config as it was. What is decided for a watcher holding version ``held``
against its current snapshot ``(version, config)`` compiled at generation ``g``:

- ``held == version``: it runs this config already; it waits (and, when its
  last report to this process was about ``version``, that report is carried
  to ``g``: see `Fanout.carried`, so `acked_version == generation` still means
  "runs the current config").
- ``held < version``: push.
- ``held > version``: a version this process did not hand out (another
  replica's, or this process's before a restart, or the sidecar's cache): its
  content is unknown here, so the snapshot is stamped ``g`` and pushed when
  ``held < g``: at most one redundant push after a failover or a restart.
  (``held >= g``: it came from a replica further on; wait for the next
  generation.)

Versions never go backwards for a sidecar: only a version above the one it
holds is ever sent. The first compile of a sidecar in this process stamps the
current generation, so a sidecar coming from elsewhere gets one push.

The serialised config is spliced from parts (see `Parts`): the outbound
listeners and clusters a service's instances share are serialised once per
generation (orjson), the sidecar's own inbound listener, telemetry and tail
per sidecar; the bodies are built once, not per watcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from meshctl.control.compiler import (
    Mesh,
    Outbound,
    SidecarSpec,
    compile_outbound,
    compile_own,
    compile_sidecar,
    outbound_key,
)


def envelope(version: int, config: bytes) -> bytes:
    """The snapshot as sent: {"version", "config"} (no newlines: streams send one per line)."""
    return b'{"version":%d,"config":%s}' % (version, config)


@dataclass(slots=True)
class Snap:
    """One sidecar's current snapshot in this process."""

    version: int
    config: bytes
    body: bytes
    #: The newest generation this config was compiled at (it held from `version` to here).
    checked: int


def snap(version: int, config: bytes, checked: int) -> Snap:
    return Snap(version, config, envelope(version, config), checked)


class Parts:
    """One generation's serialised parts, shared by the sidecars that share them: the `Outbound`
    part per `outbound_key` (compiled once), its listeners with a service's access log and its
    clusters serialised once per (key, log)."""

    def __init__(self, mesh: Mesh):
        self.mesh = mesh
        self.outbound: dict[tuple[Any, ...], Outbound] = {}
        self._serialised: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}

    def outbound_of(self, spec: SidecarSpec) -> Outbound:
        key = outbound_key(spec, self.mesh)
        out = self.outbound.get(key)
        if out is None:
            out = self.outbound[key] = compile_outbound(self.mesh, spec)
        return out

    def has_outbound(self, spec: SidecarSpec) -> bool:
        return outbound_key(spec, self.mesh) in self.outbound

    def config(self, spec: SidecarSpec) -> bytes:
        """`compile_sidecar(mesh, spec)` serialised (equal as JSON), from shared parts."""
        out = self.outbound_of(spec)
        if spec.gateway:  # a gateway's own clusters may repeat the outbound ones: the plain way
            return orjson.dumps(compile_sidecar(self.mesh, spec, out))
        own, tail = compile_own(self.mesh, spec, out)
        log = own.log
        shared_key = (outbound_key(spec, self.mesh), orjson.dumps(log) if log is not None else None)
        shared = self._serialised.get(shared_key)
        if shared is None:
            listeners = [x | {"access_log": log} for x in out.listeners] if log is not None else out.listeners
            shared = self._serialised[shared_key] = (_items(listeners), _items(out.clusters))
        own_listeners = [x | {"access_log": log} for x in own.listeners] if log is not None else own.listeners
        rest = orjson.dumps({"telemetry": own.telemetry, **tail})
        return b'{"listeners":[%s],"clusters":[%s],%s' % (
            _join(_items(own_listeners), shared[0]),
            _join(_items(own.clusters), shared[1]),
            rest[1:],
        )


def _items(values: Iterable[Any]) -> bytes:
    """The items of a JSON array, without the brackets."""
    return orjson.dumps(list(values))[1:-1]


def _join(a: bytes, b: bytes) -> bytes:
    return a + b"," + b if a and b else a or b


@dataclass
class Watch:
    """A sidecar's watch in this process: the version it holds, what it last reported."""

    sidecar_id: int
    held: int
    #: Resolved (by `Fanout.wake`) when its snapshot may be worth sending.
    woken: asyncio.Future[None] = field(repr=False, default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass
class Outcome:
    """What one generation did to the watchers: how many got a new snapshot, how many did not."""

    generation: int
    pushed: int = 0
    unchanged: int = 0
    #: sidecar id -> (the generation its last report is carried to, the report's error or None).
    carried: dict[int, tuple[int, str | None]] = field(default_factory=dict)


class Fanout:
    """Every sidecar's snapshot and the watches waiting on them (on the event loop)."""

    def __init__(self) -> None:
        #: The generation the snapshots were last compiled at.
        self.generation = -1
        self.snaps: dict[SidecarSpec, Snap] = {}
        #: spec -> the watches of it in this process (a spec is one sidecar, but two watches of
        #: one sidecar may overlap while a sidecar reconnects).
        self.watches: dict[SidecarSpec, list[Watch]] = {}
        #: sidecar id -> (version, error) it last reported to this process.
        self.reports: dict[int, tuple[int, str | None]] = {}
        #: The last generations' outcomes, newest last (the bench reads them from /metrics).
        self.last: Outcome | None = None

    def watched(self) -> list[SidecarSpec]:
        return list(self.watches)

    def add(self, spec: SidecarSpec, watch: Watch) -> None:
        self.watches.setdefault(spec, []).append(watch)

    def remove(self, spec: SidecarSpec, watch: Watch) -> None:
        watches = self.watches.get(spec)
        if watches is not None and watch in watches:
            watches.remove(watch)
            if not watches:
                del self.watches[spec]

    def due(self, spec: SidecarSpec, held: int) -> Snap | None:
        """The snapshot to send a watcher of `spec` holding `held`, or None (it waits)."""
        current = self.snaps.get(spec)
        if current is None or held == current.version:
            return None
        if held < current.version:
            return current
        if held < self.generation:  # a version not from this process: stamp ours, once
            current = self.snaps[spec] = snap(self.generation, current.config, current.checked)
            return current
        return None

    def fresh(self, spec: SidecarSpec, generation: int) -> bool:
        """Whether `spec`'s snapshot was compiled at `generation` (or later)."""
        current = self.snaps.get(spec)
        return current is not None and current.checked >= generation

    def install(self, generation: int, configs: dict[SidecarSpec, bytes], *, batch: bool = True) -> Outcome:
        """Snapshots compiled at `generation` replace the older ones; the watchers whose config
        changed (or who hold a foreign version now behind) are woken, the others keep waiting.
        `batch`: every watched sidecar's, when the generation moved (`last` records it)."""
        self.generation = max(self.generation, generation)
        outcome = Outcome(generation)
        for spec, config in configs.items():
            old = self.snaps.get(spec)
            if old is None or old.config != config:
                self.snaps[spec] = snap(generation, config, generation)
            elif old.checked < generation:
                old.checked = generation
            current = self.snaps[spec]
            for w in self.watches.get(spec, ()):
                if self.due(spec, w.held) is not None:
                    outcome.pushed += 1
                    wake(w)
                    continue
                outcome.unchanged += 1
                report = self.reports.get(w.sidecar_id)
                if report is not None and report[0] == w.held == current.version:
                    outcome.carried[w.sidecar_id] = (generation, report[1])
        if batch:
            self.last = outcome
        return outcome

    def note(self, sidecar_id: int, spec: SidecarSpec | None, version: int, error: str | None) -> int:
        """A report of `version`; returns the generation it stands for (later than `version` when
        this process compiled the same config at newer generations since)."""
        self.reports[sidecar_id] = (version, error)
        current = self.snaps.get(spec) if spec is not None else None
        if current is not None and current.version == version:
            return max(version, current.checked)
        return version

    def forget(self, sidecar_id: int, spec: SidecarSpec | None) -> None:
        """A sidecar gone: its report and snapshot with it."""
        self.reports.pop(sidecar_id, None)
        if spec is not None and spec not in self.watches:
            self.snaps.pop(spec, None)


def wake(w: Watch) -> None:
    if not w.woken.done():
        w.woken.set_result(None)
