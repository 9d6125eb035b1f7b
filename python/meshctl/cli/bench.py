"""``meshctl bench URL``: generate load from the Rust core and report latency."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def bench(
    url: Annotated[str, typer.Argument(help="http://host:port/path, h2c://host:port/path or tcp://host:port")],
    connections: Annotated[int, typer.Option("--connections", "-c", help="Concurrent connections.")] = 10,
    duration: Annotated[
        float | None, typer.Option("--duration", "-d", help="Seconds to run.", show_default="10")
    ] = None,
    requests: Annotated[int | None, typer.Option("--requests", "-n", help="Stop after this many requests.")] = None,
    rps: Annotated[float | None, typer.Option(help="Open loop at this rate, latency from intended send times.")] = None,
    http2: Annotated[bool, typer.Option("--http2", help="HTTP/2 with prior knowledge (same as h2c://).")] = False,
    method: Annotated[str, typer.Option("--method", "-m", help="HTTP request method.")] = "GET",
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="'Name: value', repeatable.")] = None,
    body: Annotated[str, typer.Option(help="Request body.")] = "",
    timeout: Annotated[float, typer.Option(help="Seconds before a request counts as timed out.")] = 10.0,
    threads: Annotated[int, typer.Option(help="Generator threads (0: one per CPU).")] = 0,
    tcp_mode: Annotated[str, typer.Option(help="tcp:// targets: echo (round trips) or bulk (throughput).")] = "echo",
    size: Annotated[int | None, typer.Option(help="tcp:// message or chunk size in bytes.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write a latency-distribution PNG here.")] = None,
) -> None:
    """Generate load against URL and report throughput, latency percentiles and errors."""
    from rich.console import Console

    from meshctl.loadgen import report as render
    from meshctl.loadgen.runner import run_bench

    options: dict[str, Any] = {
        "url": url,
        "connections": connections,
        "duration": duration,
        "requests": requests,
        "rps": rps,
        "http2": http2,
        "method": method,
        "headers": header or [],
        "body": body,
        "timeout": timeout,
        "threads": threads,
        "tcp_mode": tcp_mode,
        "size": size,
    }
    err = Console(stderr=True)
    try:
        report = run_bench(options, console=err, show_progress=not as_json and err.is_terminal)
    except ValueError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        out = Console()
        out.print(render.table(report))
        for line in render.error_lines(report):
            out.print(f"  [yellow]{line}[/]")
    if plot:
        try:
            render.plot(report, plot)
        except RuntimeError as e:
            err.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
