"""``meshctl traces`` and ``meshctl trace``: the control plane's trace store,
as a list of recent (slow, failed) traces and as one trace's waterfall drawn
in the terminal."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer

from meshctl.cli import api, options
from meshctl.cli.api import add_row, reported
from meshctl.cli.options import Format

#: The waterfall's timeline column: as wide as the terminal leaves room for, within these.
BAR_WIDTH = (10, 60)


def duration(ms: float) -> str:
    """12.3ms, 1.25s, 2m05s."""
    if ms < 1:
        return f"{ms * 1000:.0f}µs"
    if ms < 1000:
        return f"{ms:.3g}ms" if ms < 100 else f"{ms:.0f}ms"
    if ms < 60_000:
        return f"{ms / 1000:.3g}s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    return f"{minutes}m{seconds:02d}s"


def traces(
    service: Annotated[
        str | None, typer.Option("--service", help='Traces with a span of this service ("name" or "ns/name").')
    ] = None,
    min_duration: Annotated[
        str | None, typer.Option("--min-duration", help="Traces at least this long: 250ms, 1.5s, or milliseconds.")
    ] = None,
    errors: Annotated[bool, typer.Option("--errors", help="Only traces with a failed span.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")] = 20,
    output: options.TableOutput = Format.table,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """The newest traces in the control plane's trace store, newest first: filter them to the slow
    (--min-duration) and the failed (--errors)."""
    from rich.text import Text

    params: dict[str, Any] = {"limit": limit}
    if service:
        params["service"] = service
    if min_duration:
        params["minDuration"] = min_duration
    if errors:
        params["error"] = "true"
    client = api.connect_reading(server, token, token_file)
    with reported(client):
        found = client.get(f"/api/v1/traces?{urlencode(params)}")["traces"]
    if api.printed(output, found):
        return
    if not found:
        typer.echo("no traces match", err=True)
        return
    t = api.table("TRACE", "AGE", "DURATION", "SPANS", "ERRORS", "ROOT", "SERVICES")
    for column in t.columns[:5]:  # ids are copied whole, numbers read whole: names fold instead
        column.no_wrap = True
    for tr in found:
        root = f"{tr['root_service']}: {tr['root_name']}" if tr["root_service"] else tr["root_name"]
        errs = Text(str(tr["error_count"]), style="red" if tr["error_count"] else "")
        add_row(
            t,
            tr["trace_id"],
            api.age(tr["start"]),
            duration(tr["duration_ms"]),
            tr["span_count"],
            errs,
            root,
            ",".join(tr["services"]),
        )
    api.console().print(t)


def trace(
    trace_id: Annotated[str, typer.Argument(help="The trace id (32 hex digits).", show_default=False)],
    output: options.TableOutput = Format.table,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """One trace as a waterfall: a line per span, indented under its parent, with a bar where it
    ran within the trace, its service, name, duration and status."""
    from rich.text import Text

    client = api.connect_reading(server, token, token_file)
    with reported(client):
        found = client.get(f"/api/v1/traces/{quote(trace_id, safe='')}")
    if api.printed(output, found):
        return
    spans = found["spans"]
    total = max((s["start_ms"] + s["duration_ms"] for s in spans), default=0.0)
    services = sorted({s["service"] for s in spans})
    typer.echo(f"trace {found['trace_id']}: {len(spans)} spans, {', '.join(services)}, {duration(total)}")
    rows = _depths(spans)
    console = api.console()
    width = _bar_width(console.width, rows)
    t = api.table("SPAN", "TIMELINE", "SERVICE", "KIND", "DURATION", "STATUS")
    t.columns[1].no_wrap = True
    for span, depth in rows:
        failed = span["status"] == "error"
        add_row(
            t,
            "  " * depth + span["name"],
            Text(bar(span["start_ms"], span["duration_ms"], total, width), style="red" if failed else "cyan"),
            span["service"],
            span["kind"].lower(),
            duration(span["duration_ms"]),
            Text(span["status"], style="red" if failed else ""),
        )
    console.print(t)


def _bar_width(columns: int, rows: list[tuple[dict[str, Any], int]]) -> int:
    """What the other columns leave of the terminal (`columns` wide) for the timeline."""
    name = max((2 * depth + len(s["name"]) for s, depth in rows), default=4)
    service = max((len(s["service"]) for s, _ in rows), default=7)
    others = name + service + len("internal") + len("DURATION") + len("STATUS") + 2 * 5
    return max(BAR_WIDTH[0], min(BAR_WIDTH[1], columns - others))


def _depths(spans: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """Each span with its depth; the API sends them in waterfall order (parents first)."""
    depth: dict[str, int] = {}
    out = []
    for s in spans:
        d = depth.get(s["parent_span_id"], -1) + 1
        depth[s["span_id"]] = d
        out.append((s, d))
    return out


def bar(start_ms: float, duration_ms: float, total_ms: float, width: int) -> str:
    """Where a span ran within the trace, `width` characters wide; at least one mark."""
    if total_ms <= 0:
        return "█" + " " * (width - 1)
    begin = min(width - 1, int(start_ms / total_ms * width))
    length = max(1, min(width - begin, round(duration_ms / total_ms * width)))
    return " " * begin + "█" * length + " " * (width - begin - length)
