"""The control plane's full garbage collections (control/collector.py): none
starts by itself while a Collector runs, however much is allocated; one runs
once the mesh is quiet after a load, and at the latest after MAX_SECONDS when
loads keep coming. Observed with CPython's own gc callbacks."""

from __future__ import annotations

import asyncio
import gc
import time
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
