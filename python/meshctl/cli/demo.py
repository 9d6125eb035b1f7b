"""``meshctl demo``: a proxy in front of demo backends, with traffic through it."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from meshctl.demo.run import Demo, drive, percentile


def demo(
    requests: Annotated[int, typer.Option(help="Requests to send through the proxy.")] = 2000,
    connections: Annotated[int, typer.Option(help="Keep-alive client connections.")] = 4,
    listen: Annotated[str, typer.Option(help="Address of the demo's HTTP listener.")] = "127.0.0.1:0",
    keep: Annotated[bool, typer.Option("--keep", help="Keep running until Ctrl-C.")] = False,
) -> None:
    """Start backends and a proxy with a 90/10 canary split, send traffic, show what happened."""
    console = Console()
    d = Demo(listen)
    try:
        console.print(f"[bold]proxy[/] http://{d.address}  (admin http://{d.admin}/stats)")
        for b in d.backends:
            console.print(f"  backend {b.name} on {b.address}")
        console.print(f"sending {requests} requests over {connections} connections ...")
        r = drive(d.address, requests, connections)

        table = Table(title="Where the requests went (route 'split': catalog-v1 90, catalog-v2 10)")
        for col in ("backend", "requests", "share"):
            table.add_column(col, justify="right" if col != "backend" else "left")
        for name, n in sorted(r.by_backend.items()):
            table.add_row(name, str(n), f"{100 * n / max(1, requests):.1f}%")
        console.print(table)

        stats = d.dataplane.stats()
        web = stats["listeners"]["web"]
        ok = web["responses"]["2xx"]
        summary = Table(title="What the proxy measured")
        for col in ("listener", "requests", "success", "rps", "p50 ms", "p99 ms"):
            summary.add_column(col, justify="right")
        summary.add_row(
            "web",
            str(web["requests"]),
            f"{100 * ok / max(1, web['requests']):.1f}%",
            f"{requests / r.elapsed_s:.0f}",
            f"{percentile(r.latencies_ms, 0.5):.2f}",
            f"{percentile(r.latencies_ms, 0.99):.2f}",
        )
        console.print(summary)
        console.print(f"canary by header: curl -H 'x-canary: true' http://{d.address}/")
        if keep:
            done = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: done.set())
            signal.signal(signal.SIGTERM, lambda *_: done.set())
            console.print("running; Ctrl-C to stop")
            done.wait()
        if r.statuses.keys() - {200}:
            console.print(f"[red]unexpected statuses: {dict(r.statuses)}[/]")
            raise typer.Exit(1)
    finally:
        d.stop()
