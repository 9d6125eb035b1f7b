"""The control plane's full garbage collections (control/collector.py): none
starts by itself while a Collector runs, however much is allocated; one runs
once the mesh is quiet after a load, and at the latest after MAX_SECONDS when
loads keep coming; what a load leaves alive is frozen, out of those passes,
until the reclaim. Observed with CPython's own gc callbacks and weak
references."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from meshctl.control import collector
from meshctl.control.collector import Collector


@pytest.fixture
def full_collections() -> Iterator[list[float]]:
    """When each full (generation 2) collection started, as CPython reports them."""
    started: list[float] = []

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            started.append(time.monotonic())

    gc.callbacks.append(seen)
    yield started
    gc.callbacks.remove(seen)


def test_no_full_collection_by_itself_one_when_quiet_after_a_load(
    full_collections: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector, "QUIET_SECONDS", 0.3)
    before = gc.get_threshold()

    async def scenario() -> tuple[int, int, float]:
        c = Collector()
        kept = [[i] for i in range(2_000_000)]  # long-lived objects: CPython would start full collections
        by_itself = len(full_collections)
        loaded = time.monotonic()
        c.loaded()
        deadline = loaded + 10
        while c.runs == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        c.close()
        del kept
        return by_itself, c.runs, full_collections[-1] - loaded if full_collections else -1.0

    by_itself, runs, after = asyncio.run(scenario())
    assert by_itself == 0
    assert runs == 1 and after >= 0.3
    assert gc.get_threshold() == before


def test_loads_that_keep_coming_do_not_put_it_off_for_ever(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector, "QUIET_SECONDS", 0.5)
    monkeypatch.setattr(collector, "MAX_SECONDS", 1.0)

    async def scenario() -> int:
        c = Collector()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # a load every 0.2 s: never quiet for 0.5 s
            c.loaded()
            await asyncio.sleep(0.2)
        c.close()
        return c.runs

    assert asyncio.run(scenario()) >= 2


class Node:
    """An object in a reference cycle: only a full collection that walks it frees it."""

    def __init__(self) -> None:
        self.me = self


def test_a_load_freezes_what_is_alive_until_the_reclaim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector, "QUIET_SECONDS", 0.05)
    monkeypatch.setattr(collector, "RECLAIM_SECONDS", 3600.0)

    async def next_run(c: Collector) -> None:
        runs, deadline = c.runs, time.monotonic() + 10
        while c.runs == runs and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert c.runs == runs + 1

    async def scenario() -> None:
        c = Collector()
        try:
            before = Node()
            alive_at_load = weakref.ref(before)
            c.loaded()  # `before` is frozen with the rest of what is alive
            assert gc.get_freeze_count() > 0
            after = Node()
            made_since = weakref.ref(after)
            del before, after  # both garbage now, each held only by its own cycle
            await next_run(c)
            # The quiet pass walked what was made since the load, not the frozen heap.
            assert made_since() is None
            assert alive_at_load() is not None and c.reclaims == 0
            monkeypatch.setattr(collector, "RECLAIM_SECONDS", 0.0)
            c.loaded()
            await next_run(c)
            assert c.reclaims == 1 and alive_at_load() is None  # thawed, collected
            assert gc.get_freeze_count() > 0  # and what lives frozen again
        finally:
            c.close()
            gc.unfreeze()  # (this test process goes on without the control plane's rules)

    asyncio.run(scenario())
