"""``meshctl backend``: a fast test backend for benchmarks and experiments."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from meshctl._core import BenchBackend
from meshctl.cli import logs


def backend(
    http: Annotated[str | None, typer.Option(help="Serve HTTP/1.1 and HTTP/2 here (IP:port).")] = None,
    tcp_sink: Annotated[str | None, typer.Option(help="Accept TCP and discard it here.")] = None,
    tcp_echo: Annotated[str | None, typer.Option(help="Echo TCP back here.")] = None,
    body: Annotated[str, typer.Option(help="HTTP response body.")] = "ok\n",
    threads: Annotated[int, typer.Option(help="Worker threads.")] = 1,
) -> None:
    """Serve a fixed HTTP answer, a TCP sink and/or a TCP echo until SIGINT/SIGTERM."""
    log = logs.setup()
    try:
        server = BenchBackend(http=http, tcp_sink=tcp_sink, tcp_echo=tcp_echo, body=body, threads=threads)
    except (ValueError, OSError) as e:
        log.error("%s", e)
        raise typer.Exit(2) from None
    for kind, address in sorted(server.addresses.items()):
        log.info("%s on %s", kind, address)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop()
