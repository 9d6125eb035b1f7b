"""Run a benchmark from Python: the load is generated on Rust threads; this
side only polls the counters for a progress bar."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from meshctl._core import Bench


def run_bench(options: dict[str, Any], *, console: Console | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Run one benchmark to the end and return its report (see `meshctl bench --json`)."""
    bench = Bench(options)
    bench.start()
    if not show_progress:
        report = bench.wait()
        assert report is not None
        return report
    console = console or Console(stderr=True)
    seconds, requests = bench.planned_seconds, bench.planned_requests
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[done]} done  {task.fields[rate]}/s  {task.fields[errors]} errors"),
        TimeElapsedColumn(),
    )
    started = time.monotonic()
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(options["url"], total=requests or seconds or 1.0, done=0, rate=0, errors=0)
            while (report := bench.wait(0.1)) is None:
                done, errors, _, _ = bench.progress()
                elapsed = time.monotonic() - started
                position = done if requests else min(elapsed, seconds or elapsed)
                bar.update(task, completed=position, done=done, rate=int(done / max(elapsed, 1e-3)), errors=errors)
    except KeyboardInterrupt:
        bench.cancel()
        report = bench.wait()
    assert report is not None
    return report
