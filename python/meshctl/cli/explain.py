"""``meshctl explain``: what the mesh would do with one request from a
service, and why: each rule in the order the data plane tries it, whether it
matched and what failed, then the route's timeout, retries (for this request's method), fault and
mirrors, then the backends with their share and endpoints and, for each, the
circuit breakers, retry budget, outlier detection, health check, locality and
rate limits (marking the data plane's defaults) and the endpoints the caller's
sidecars have ejected or failing now; then what the receiving service's
authorization decides and by which rule."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

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
    method: Annotated[str, typer.Option("--method", "-X", help="The request's method.")] = "GET",
    path: Annotated[str, typer.Option("--path", help="Path and query, e.g. /api?debug=1.")] = "/",
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="'Name: value', repeatable.")] = None,
    zone: Annotated[
        str | None, typer.Option("--zone", help="The caller's zone.", show_default="the zone of each of its sidecars")
    ] = None,
    output: options.TextOutput = Format.text,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Which route and rule a request would take, why the others did not match, where it would go, what
    keeps it resilient (timeout, retries, limits, fault, mirrors; ejected or unhealthy endpoints), and
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
        "zone": zone,
    }
    client = api.connect_reading(server, token, token_file)
    with reported(client):
        result = client.post("/api/v1/explain", body)
    if api.printed(output, result):
        return
    render(result)


def render(r: dict[str, Any]) -> None:
    from rich.text import Text

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
            out.print(Text(f"  {_filter(f)}"))
    if r.get("resilience"):
        render_route_resilience(r["resilience"])
    if r["backends"]:
        out.print("backends:")
        for b in r["backends"]:
            subset = ",".join(f"{k}={v}" for k, v in sorted(b["subset"].items()))
            name = b["service"] + (f"{{{subset}}}" if subset else "")
            res = b.get("resilience")
            lb = b["load_balancer"] + (" (default)" if res and res["load_balancer"]["defaults"] else "")
            how = lb + (f", policy {b['policy']}" if b["policy"] else "")
            out.print(Text(f"  {name}  {b['share_percent']:g}% (weight {b['weight']})  {how}"))
            endpoints = ", ".join(b["endpoints"]) if b["endpoints"] else "none live"
            out.print(Text(f"    endpoints: {endpoints}", style="" if b["endpoints"] else "yellow"))
            if res:
                render_backend_resilience(res, b["service"])
    seen: set[str] = set()
    for verdict in [r.get("authorization"), *(b.get("authorization") for b in r["backends"])]:
        if verdict and verdict["service"] not in seen:
            seen.add(verdict["service"])
            render_authorization(verdict)


def _filter(f: dict[str, Any]) -> str:
    """`RequestHeaderModifier {"set": [...]}`: the filter's type, then its settings as JSON
    (those left empty omitted)."""
    settings = [v for k, v in f.items() if k != "type"]
    shown = [{k: x for k, x in v.items() if x not in ([], {})} if isinstance(v, dict) else v for v in settings]
    return " ".join([f["type"], *map(json.dumps, shown)])


def render_authorization(v: dict[str, Any]) -> None:
    from rich.text import Text

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


# === resilience ===


def _value(v: Any) -> str:
    return ", ".join(map(str, v)) if isinstance(v, list) else str(v)


def _setting(label: str, s: dict[str, Any]) -> str:
    """`label: set values; default: the others`, or `label (default): values`."""
    values = s["values"]
    pairs = [(k, _value(v)) for k, v in values.items()]
    given = ", ".join(f"{k} {v}" for k, v in pairs if k not in s["defaults"])
    default = ", ".join(f"{k} {v}" for k, v in pairs if k in s["defaults"])
    if not given:
        return f"    {label} (default): {default}"
    return f"    {label}: {given}" + (f"; default: {default}" if default else "")


def _bucket(b: dict[str, Any]) -> str:
    return f"{b['rps']:g}/s, burst {b['burst']}" + (" (default)" if b["burst_default"] else "")


def render_route_resilience(res: dict[str, Any]) -> None:
    from rich.text import Text

    out = api.console()
    timeout = f"{res['timeout_ms']} ms for every try together" if res["timeout_ms"] else "none"
    out.print(Text(f"timeout: {timeout}"))
    retry = res["retry"]
    origin = "default" if retry["source"] == "default" else "route"
    how = f"back-off {retry['backoff_base_ms']}..{retry['backoff_max_ms']} ms"
    if retry["per_try_timeout_ms"]:
        how += f", {retry['per_try_timeout_ms']} ms per try"
    out.print(Text(f"retries ({origin}): {retry['note']}; {how}"))
    if fault := res.get("fault"):
        parts = []
        if d := fault.get("delay"):
            parts.append(f"delay {d['percent']:g}% by {d['fixed_ms']} ms")
        if a := fault.get("abort"):
            status = f"HTTP {a['http_status']}" if a.get("http_status") else f"gRPC status {a['grpc_status']}"
            parts.append(f"abort {a['percent']:g}% with {status}")
        out.print(Text(f"fault: {'; '.join(parts)}", style="yellow"))
    if res["mirrors"]:
        out.print(Text("mirrors: " + ", ".join(f"{m['service']} {m['percent']:g}%" for m in res["mirrors"])))


def render_backend_resilience(res: dict[str, Any], service: str) -> None:
    from rich.text import Text

    out = api.console()
    for label, key in (
        ("circuit breakers", "circuit_breakers"),
        ("retry budget", "retry_budget"),
        ("outlier detection", "outlier_detection"),
        ("health check", "health_check"),
    ):
        if res.get(key):
            out.print(Text(_setting(label, res[key])))
    if not res.get("health_check"):
        out.print(Text("    health check: none (the data plane checks only when a policy asks)"))
    for place in res["locality"]:
        if not place["enabled"]:
            out.print(Text(f"    locality in {place['zone']}: off (the policy's enabled: false)"))
            continue
        then = ", ".join([*place["failover"], "any zone"])
        share = f"{place['min_healthy_percent']}%" + (" (default)" if place["defaults"] else "")
        out.print(
            Text(
                f"    locality in {place['zone']}: {place['local_endpoints']} local endpoint(s) while {share}"
                f" of them are healthy, then {then}"
            )
        )
    if limit := res.get("rate_limit"):
        parts = [f"total {_bucket(limit['total'])}"] if limit["total"] else []
        if limit["caller_bucket"] == "override":
            parts.append(f"this caller: overrides[{limit['override_index']}] {_bucket(limit['caller'])}")
        elif limit["caller_bucket"] == "identity":
            parts.append(f"this caller: its own {_bucket(limit['caller'])}")
        where = f"{limit['policy']}, {limit['unit']} per sidecar of {service}"
        out.print(Text(f"    rate limit ({where}): {'; '.join(parts)}"))
    if res["unhealthy"]:
        for e in res["unhealthy"]:
            out.print(Text(f"    out of balancing: {e['endpoint']}: {e['summary']}", style="yellow"))
    elif res["reporting_sidecars"]:
        n = res["reporting_sidecars"]
        out.print(Text(f"    every endpoint healthy, as {n} caller sidecar{'s' if n > 1 else ''} report"))
