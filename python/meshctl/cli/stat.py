"""``meshctl stat``, ``meshctl top`` and ``meshctl edges``: the mesh's golden
metrics (requests, rps, success rate, p50/p95/p99) per service, route and
edge, as the control plane aggregates them from the sidecars' heartbeats
(linkerd viz habits). ``top`` redraws the busiest of each in place."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

import typer

from meshctl.cli import api, options
from meshctl.cli.api import Client, add_row, reported
from meshctl.cli.options import Format

if TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

#: What `stat` takes before the slash, and the API's kind for each.
KINDS = {
    "service": "service",
    "services": "service",
    "svc": "service",
    "route": "route",
    "routes": "route",
    "edge": "edge",
    "edges": "edge",
}

WindowOption = Annotated[
    str, typer.Option("--window", "-w", help="How far back: 10s to 1h (e.g. 30s, 1m, 15m); bare numbers are seconds.")
]
Namespace = Annotated[str | None, typer.Option("--namespace", "-n", help="Only this namespace.")]


def milliseconds(text: str, option: str) -> int:
    """A duration ("1m", "90s", "250ms"; a bare number is seconds); a usage error otherwise."""
    from meshctl.control.kinds.durations import parse_duration

    try:
        return int(text) * 1000 if text.isdigit() else parse_duration(text)
    except ValueError as e:
        api.fail(f"{option}: {e}")


def seconds(text: str) -> int:
    """--window in whole seconds (the control plane says which are too short or too long)."""
    ms = milliseconds(text, "--window")
    if ms % 1000:
        api.fail(f"--window: {text!r} is not a whole number of seconds")
    return ms // 1000


def target(text: str | None, namespace: str | None) -> tuple[str, str | None, str | None]:
    """(kind, namespace, name) of `KIND`, `KIND/NAME` or `KIND/NAMESPACE/NAME`."""
    if text is None:
        return "service", namespace, None
    word, _, rest = text.partition("/")
    kind = KINDS.get(word.lower())
    if kind is None:
        api.fail(f"unknown kind {word!r}: give service (svc), route or edge, optionally /NAME")
    if "/" in rest:
        namespace, _, rest = rest.partition("/")
    return kind, namespace, rest or None


# === cells ===


def rate(value: float | None) -> Text:
    """A success rate, coloured as linkerd does: green from 99 %, yellow from 95 %, red below."""
    from rich.text import Text

    if value is None:
        return Text("-", style="dim")
    style = "green" if value >= 0.99 else "yellow" if value >= 0.95 else "red"
    return Text(f"{value * 100:.2f}%", style=style)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}ms"


def _golden(row: dict[str, Any]) -> list[object]:
    return [row["requests"], f"{row['rps']:.2f}", rate(row["success_rate"])]


def _latencies(row: dict[str, Any]) -> list[object]:
    return [ms(row["p50_ms"]), ms(row["p95_ms"]), ms(row["p99_ms"])]


def mtls(value: bool) -> Text:
    from rich.text import Text

    return Text("yes", style="green") if value else Text("no", style="red")


_HEADS = {"service": ["SERVICE"], "route": ["ROUTE", "SERVICE"], "edge": ["SOURCE", "DESTINATION", "MTLS"]}
_GOLDEN = ["REQUESTS", "RPS", "SUCCESS", "P50", "P95", "P99"]


def stat_table(kind: str, rows: list[dict[str, Any]]) -> Table:
    t = api.table(*_HEADS[kind], *_GOLDEN)
    for r in rows:
        if kind == "service":
            head: list[object] = [r["name"]]
        elif kind == "route":
            head = [r["name"], r["service"] or "-"]
        else:
            head = [r["source"] or "(unknown)", r["destination"], mtls(r["mtls"])]
        add_row(t, *head, *_golden(r), *_latencies(r))
    return t


def edges_table(edges: list[dict[str, Any]]) -> Table:
    t = api.table("SOURCE", "DESTINATION", "MTLS", "PROTOCOL", "REQUESTS", "RPS", "SUCCESS", "P99")
    for e in edges:
        source = e["source"] or "(unknown)"
        add_row(t, source, e["destination"], mtls(e["mtls"]), e["protocol"], *_golden(e), ms(e["p99_ms"]))
    return t


# === the verbs ===


def _stats(client: Client, kind: str, window: int, namespace: str | None = None, name: str | None = None) -> Any:
    query = {"kind": kind, "window": window} | ({"namespace": namespace} if namespace else {})
    return client.get("/api/v1/stats?" + urlencode(query | ({"name": name} if name else {})))


def stat(
    what: Annotated[
        str | None,
        typer.Argument(
            metavar="[KIND[/NAME]]",
            help="service (svc, the default), route or edge; /NAME: only that service "
            "(a route's or an edge's service), /NAMESPACE/NAME outside -n.",
        ),
    ] = None,
    window: WindowOption = "1m",
    namespace: Namespace = None,
    output: options.TableOutput = Format.table,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Success rate, requests per second and p50/p95/p99 latency per service, route or edge over the
    last --window, from the sidecars' heartbeats."""
    kind, ns, name = target(what, namespace)
    client = api.connect_reading(server, token, token_file)
    with reported(client):
        page = _stats(client, kind, seconds(window), ns, name)
    if api.printed(output, page):
        return
    if not page["rows"]:
        api.console().print(f"no {kind} traffic in the last {window}")
        return
    api.console().print(stat_table(kind, page["rows"]))


def edges(
    window: WindowOption = "1m",
    output: options.TableOutput = Format.table,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Who calls whom over the last --window, with mTLS or not, its rps, success rate and p99."""
    client = api.connect_reading(server, token, token_file)
    with reported(client):
        page = client.get(f"/api/v1/edges?window={seconds(window)}")
    if api.printed(output, page):
        return
    if not page["edges"]:
        api.console().print(f"no calls in the last {window}")
        return
    api.console().print(edges_table(page["edges"]))


#: Rows per section of `top`.
TOP_ROWS = 10


def _busiest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for r in rows if r["requests"]), key=lambda r: -r["rps"])[:TOP_ROWS]


def top_view(client: Client, window: int, label: str) -> Group:
    """The busiest services, routes and edges, one table each."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = [Text(f"meshctl top: the last {label}, at {time.strftime('%H:%M:%S')}", style="bold")]
    for kind, title in (("service", "services"), ("route", "routes"), ("edge", "edges")):
        rows = _busiest(_stats(client, kind, window)["rows"])
        parts += [Text(""), Text(title, style="bold underline")]
        parts.append(stat_table(kind, rows) if rows else Text("no traffic", style="dim"))
    return Group(*parts)


def top(
    window: WindowOption = "1m",
    interval: Annotated[str, typer.Option("--interval", help="How often to refresh.")] = "2s",
    iterations: Annotated[
        int | None,
        typer.Option("--iterations", min=1, help="Stop after this many refreshes.", show_default="until Ctrl-C"),
    ] = None,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """A live view of the busiest services, routes and edges, refreshed every --interval."""
    from rich.live import Live

    span, every = seconds(window), milliseconds(interval, "--interval") / 1000
    client = api.connect_reading(server, token, token_file)
    done = 0
    with reported(client), Live(console=api.console(), auto_refresh=False) as live:
        try:
            while True:
                live.update(top_view(client, span, window), refresh=True)
                done += 1
                if iterations is not None and done >= iterations:
                    break
                time.sleep(every)
        except KeyboardInterrupt:
            pass
