"""``meshctl explain``: what the mesh would do with one request from a
service, and why: each rule in the order the data plane tries it, whether it
matched and what failed, then the backends with their share and endpoints,
then what the receiving service's authorization decides and by which rule."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.text import Text

from meshctl.cli import api, options
from meshctl.cli.api import reported
from meshctl.cli.options import Format


def _headers(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, sep, value = v.partition(":")
        if not sep or not name.strip():
            api.fail(f"-H takes 'Name: value', got {v!r}")
        out[name.strip()] = value.strip()
    return out


def explain(
    source: Annotated[str, typer.Option("--from", help="The calling service: NAME or NAMESPACE/NAME.")],
    to: Annotated[str | None, typer.Option("--to", help="The service called: NAME or NAMESPACE/NAME.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Or the Host the request is sent to.")] = None,
    method: Annotated[str, typer.Option("--method", "-X")] = "GET",
    path: Annotated[str, typer.Option("--path", help="Path and query, e.g. /api?debug=1.")] = "/",
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="'Name: value', repeatable.")] = None,
    output: options.TextOutput = Format.text,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Which route and rule a request would take, why the others did not match, where it would go, and
    whether the receiving service's AuthorizationPolicies let it in."""
    if (to is None) == (host is None):
        api.fail("give the destination with --to SERVICE or --host HOST (one of them)")
    body = {
        "source": source,
        "destination": to,
        "host": host,
        "method": method.upper(),
        "path": path,
        "headers": _headers(header or []),
    }
    client = api.connect(server, token, token_file)
    with reported(client):
        result = client.post("/api/v1/explain", body)
    if output is Format.json:
        typer.echo(json.dumps(result, indent=2))
        return
    render(result)


def render(r: dict[str, Any]) -> None:
    out = api.console()
    ok = r["outcome"] in ("forward", "redirect")
    out.print(Text(r["summary"], style="bold green" if ok else "bold red"))
    out.print(Text(f"{r['source']} -> {r['destination']} ({r['protocol']}), {r['outcome'].replace('_', ' ')}"))
    if r.get("route"):
        out.print(Text(f"route: {r['route']}"))
    if r["rules"]:
        out.print("rules, in the order they are tried:")
        for v in r["rules"]:
            mark = Text("  ✓ ", style="green") if v["matched"] else Text("  ✗ ", style="red")
            out.print(mark + Text(f"{v['rule']}: {v['reason']}"))
    if r["filters"]:
        out.print("filters:")
        for f in r["filters"]:
            out.print(Text(f"  {f}"))
    if r["backends"]:
        out.print("backends:")
        for b in r["backends"]:
            subset = ",".join(f"{k}={v}" for k, v in sorted(b["subset"].items()))
            name = b["service"] + (f"{{{subset}}}" if subset else "")
            how = b["load_balancer"] + (f", policy {b['policy']}" if b["policy"] else "")
            out.print(Text(f"  {name}  {b['share_percent']:g}% (weight {b['weight']})  {how}"))
            endpoints = ", ".join(b["endpoints"]) if b["endpoints"] else "none live"
            out.print(Text(f"    endpoints: {endpoints}", style="" if b["endpoints"] else "yellow"))
            if limits := b.get("circuit_breakers"):
                shown = ", ".join(f"{k} {v}" for k, v in sorted(limits.items()))
                rest = "" if len(limits) == 3 else " (unset ones: the data plane's default)"
                out.print(Text(f"    circuit breakers: {shown}{rest}"))
    seen: set[str] = set()
    for verdict in [r.get("authorization"), *(b.get("authorization") for b in r["backends"])]:
        if verdict and verdict["service"] not in seen:
            seen.add(verdict["service"])
            render_authorization(verdict)


def render_authorization(v: dict[str, Any]) -> None:
    out = api.console()
    request = f", {v['method']} {v['path']}" if v["path"] is not None else ""
    policies = ", ".join(v["policies"]) or "none"
    out.print(
        Text(f"authorization at {v['service']} (mTLS {v['mtls']}, policies: {policies}) for {v['principal']}{request}:")
    )
    for rule in v["rules"]:
        mark = Text("  ✓ ", style="green") if rule["matched"] else Text("  ✗ ", style="red")
        out.print(mark + Text(f"{rule['action'].upper()} {rule['rule']}: {rule['reason']}"))
    allowed = v["decision"] == "allow"
    out.print(Text(f"  -> {v['decision'].upper()} ({v['decided_by']})", style="green" if allowed else "bold red"))
