"""``meshctl tap SERVICE``: a live stream of the requests the service's
sidecars see (method, path, status, latency, peer identity, trace id), one
line each, until ``--limit`` events or ``--seconds`` pass; ``-o json`` prints
the events as NDJSON. It needs the admin token. Why it ended, and how many
events were dropped (a reader slower than the traffic loses some, traffic
never waits), is said on stderr."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer

from meshctl.cli import api, options
from meshctl.cli.options import Format

#: The control plane sends a blank line every 15 s on an idle stream; this long without one, it is dead.
IDLE_SECONDS = 40.0

#: (header, width) of the table's columns; the last one is not padded.
COLUMNS = (
    ("TIME", 12),
    ("DIR", 4),
    ("METHOD", 7),
    ("AUTHORITY+PATH", 40),
    ("STATUS", 7),
    ("LATENCY", 10),
    ("PEER", 48),
    ("TRACE", 0),
)
DIRECTIONS = {"inbound": "in", "outbound": "out", "gateway": "gw"}


def status_text(e: dict[str, Any]) -> tuple[str, str | None]:
    """The HTTP status, with the gRPC status when there is one, and its colour by class."""
    code = int(e.get("status") or 0)
    text = str(code) + (f"/{e['grpc_status']}" if e.get("grpc_status") is not None else "")
    return text, "red" if code >= 500 or code == 0 else "yellow" if code >= 400 else None


def row(e: dict[str, Any]) -> str:
    """One event as a table line."""
    ts = datetime.fromtimestamp(float(e.get("ts") or 0)).strftime("%H:%M:%S.%f")[:-3]
    status, colour = status_text(e)
    cells = [
        ts,
        DIRECTIONS.get(e.get("direction", ""), e.get("direction", "")),
        e.get("method", ""),
        f"{e.get('authority', '')}{e.get('path', '')}",
        status,
        f"{float(e.get('duration_ms') or 0):.1f}ms",
        e.get("source") or "-",
        e.get("trace_id") or "-",
    ]
    padded = [c.ljust(width) for c, (_, width) in zip(cells, COLUMNS, strict=True)]
    if colour:  # styled after padding: escape codes have no width
        padded[4] = typer.style(padded[4], fg=colour)
    return " ".join(padded).rstrip()


def header() -> str:
    return " ".join(h.ljust(w) for h, w in COLUMNS).rstrip()


def tap(
    service: Annotated[str, typer.Argument(help="The service to tap: NAME, or NAMESPACE/NAME.", show_default=False)],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="The service's namespace.")] = "default",
    method: Annotated[str | None, typer.Option("--method", help="Only requests with this method.")] = None,
    path: Annotated[str | None, typer.Option("--path", help="Only requests whose path starts with this.")] = None,
    status: Annotated[int | None, typer.Option("--status", help="Only requests answered with this status.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Stop after this many requests (at most 10000).")] = 100,
    seconds: Annotated[float, typer.Option("--seconds", help="Stop after this long (at most 300).")] = 30.0,
    output: options.TableOutput = Format.table,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Watch the requests a service's sidecars handle, live (needs the admin token). Bounded: it
    stops after --limit requests or --seconds, and costs the mesh nothing when nobody taps."""
    if "/" in service:
        namespace, service = service.split("/", 1)
    query = {"method": method, "path": path, "status": status, "limit": limit, "seconds": seconds}
    url = f"/api/v1/tap/{quote(namespace, safe='')}/{quote(service, safe='')}?" + urlencode(
        {k: v for k, v in query.items() if v is not None}
    )
    client = api.connect(server, token, token_file)
    end: dict[str, Any] | None = None
    try:
        with api.reported(client):
            first = True
            for line in client.lines(url, timeout=IDLE_SECONDS):
                if not line.strip():
                    continue  # keeps an idle stream alive
                doc = json.loads(line)
                if "end" in doc:
                    end = doc["end"]
                    break
                if output is Format.json:
                    typer.echo(line.rstrip(b"\n").decode())
                    continue
                if first:
                    typer.echo(typer.style(header(), bold=True))
                    first = False
                typer.echo(row(doc))
    except KeyboardInterrupt:
        typer.echo("tap stopped", err=True)
        return
    if end is None:
        api.fail("the control plane ended the tap early (did it stop?)", 1)
    why = {"limit": "the limit was reached", "time": "the time was up", "shutdown": "the control plane stopped"}
    dropped = f", {end['dropped']} dropped" if end.get("dropped") else ""
    typer.echo(f"tap ended: {why.get(end['reason'], end['reason'])}; {end['events']} requests{dropped}", err=True)
    if end["reason"] == "shutdown":
        raise typer.Exit(1)
