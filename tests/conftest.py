"""Fixtures: real backends and real data planes on 127.0.0.1, stopped after each test; the
layer markers, one per folder (tests/dataplane, tests/control, tests/e2e, tests/bench); and the
`database` marker of the tests that touch a control plane's database."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import HttpBackend
from meshctl import DataPlane
from meshctl.demo.backends import DemoBackend
from meshproc import ControlPlane

LAYERS = ("dataplane", "control", "e2e", "bench")


#: What a test module that touches a control plane's database says (a process, an engine, migrations).
DATABASE_WORDS = re.compile(r"ControlPlane|module_control_plane|^import pg$|make_engine|migrate\(", re.MULTILINE)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its layer, the folder under tests/ it lives in; and `database` when its
    module touches a control plane's database (the PostgreSQL pass in .ci/run runs only those)."""
    here = Path(__file__).parent
    touches: dict[Path, bool] = {}
    for item in items:
        layer = item.path.relative_to(here).parts[0]
        if layer not in LAYERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in one of tests/{{{','.join(LAYERS)}}}/")
        item.add_marker(getattr(pytest.mark, layer))
        if item.path not in touches:
            touches[item.path] = bool(DATABASE_WORDS.search(item.path.read_text()))
        if touches[item.path] or "cp" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.database)


@pytest.fixture
def backend() -> Iterator[Callable[..., DemoBackend]]:
    started: list[DemoBackend] = []

    def make(name: str, delay_ms: int = 0) -> DemoBackend:
        b = DemoBackend(name, delay_ms=delay_ms).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def http_backend() -> Iterator[Callable[..., HttpBackend]]:
    """Backends that record what they receive and whose answers a test sets (and changes while
    they run): see HttpBackend."""
    started: list[HttpBackend] = []

    def make(*args: Any, **kwargs: Any) -> HttpBackend:
        b = HttpBackend(*args, **kwargs)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def proxy() -> Iterator[Callable[..., DataPlane]]:
    started: list[DataPlane] = []

    def make(config: dict[str, Any] | str, workers: int = 2) -> DataPlane:
        dp = DataPlane(config, workers=workers)
        dp.start()
        started.append(dp)
        return dp

    yield make
    for dp in started:
        dp.stop(0.5)


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane process of the test's own, on a fresh data dir (modules that share one
    across their tests say `cp = meshproc.module_control_plane()` instead)."""
    plane = ControlPlane(tmp_path / "cp")
    plane.data_dir.mkdir()
    plane.start()
    yield plane
    plane.stop()
