"""``meshctl proxy-config SIDECAR [SECTION]``: the config a running sidecar's
data plane serves with, asked of the sidecar itself through the control plane
(see ``control.proxy_config``): listeners, routes, clusters, endpoints with the
data plane's health of each, and its identity (SPIFFE ID, SVID validity,
trust-bundle digest; never a key). A table per section, or ``-o json|yaml``
(one section: its entries; ``all``: the whole dump).

SIDECAR is an id from ``meshctl status``, or ``NAMESPACE/SERVICE`` (``SERVICE``
with ``-n``) when that service has exactly one live sidecar.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import quote

import typer

from meshctl.cli import api, options
from meshctl.cli.options import Format


class Section(StrEnum):
    listeners = "listeners"
    routes = "routes"
    clusters = "clusters"
    endpoints = "endpoints"
    identity = "identity"
    all = "all"


Output = Annotated[
    Literal[Format.table, Format.json, Format.yaml],
    typer.Option("--output", "-o", help="table, json or yaml."),
]


def proxy_config(
    sidecar: Annotated[
        str,
        typer.Argument(
            help="A sidecar id (see meshctl status), or NAMESPACE/SERVICE when the service has one live sidecar.",
            show_default=False,
        ),
    ],
    section: Annotated[Section, typer.Argument(help="What to show.")] = Section.all,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="The namespace of a SERVICE given without one.")
    ] = None,
    output: Output = Format.table,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, max=60, help="Seconds to wait for the sidecar's answer.")
    ] = 10.0,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """The config a running sidecar serves with: listeners, routes, clusters, endpoints and their
    health, identity. Asked of the sidecar through the control plane."""
    client = api.connect(server, token, token_file)
    with api.reported(client):
        sidecar_id = resolve(client, sidecar, namespace)
        dump = client.get(f"/api/v1/sidecars/{sidecar_id}/proxy-config?timeout={timeout:g}", timeout=timeout + 10)
    value = dump if section is Section.all else dump[section.value]
    if output is Format.json:
        typer.echo(json.dumps(value, indent=2))
    elif output is Format.yaml:
        import yaml

        typer.echo(yaml.safe_dump(value, sort_keys=False), nl=False)
    else:
        show(dump, section)


def resolve(client: api.Client, sidecar: str, namespace: str | None) -> int:
    """The sidecar's id: given, or the one live sidecar of the service (exit 1 when it has none
    or several, naming them)."""
    if sidecar.isdigit():
        return int(sidecar)
    ns, _, name = sidecar.rpartition("/")
    ns = ns or namespace or "default"
    rows = client.get(f"/api/v1/sidecars?namespace={quote(ns)}")
    live = [r for r in rows if r["service"] == name and r["live"]]
    if len(live) == 1:
        return int(live[0]["id"])
    if live:
        ids = ", ".join(str(i) for i in sorted(r["id"] for r in live))
        api.fail(f"{ns}/{name} has {len(live)} live sidecars ({ids}): give one of these ids", 1)
    client.get(f"/api/v1/services/{quote(ns)}/{quote(name)}")  # 404 when there is no such service
    api.fail(f"{ns}/{name} has no live sidecar", 1)


# === tables ===


def show(dump: dict[str, Any], section: Section) -> None:
    out = api.console()
    head = f"sidecar {dump['sidecar']} ({dump['namespace']}/{dump['service']})"
    version = dump.get("version")
    out.print(head + (f", snapshot {version}" if version is not None else ", no config running yet"))
    for s in SECTIONS if section is Section.all else (section,):
        out.print()
        out.print(s.value.upper(), style="bold")
        if s is Section.identity:
            for line in identity_lines(dump.get("identity")):
                out.print(line, highlight=False, markup=False)
        else:
            out.print(TABLES[s](dump[s.value]))


def _match(m: dict[str, Any] | None) -> str:
    """A route's match in one cell: `path_prefix=/api method=GET x-user=~^a`; `*` for every request."""
    parts: list[str] = []
    for k, v in (m or {}).items():
        if isinstance(v, dict):
            op = "=~" if k == "header_regex" else "="
            parts += [f"{'?' if k == 'query' else ''}{name}{op}{val}" for name, val in v.items()]
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts) or "*"


def _backends(backends: list[dict[str, Any]] | None) -> str:
    return ", ".join(f"{b['cluster']}" + (f" ({b['weight']})" if "weight" in b else "") for b in backends or [])


def _health(h: dict[str, Any]) -> str:
    if h.get("ejected"):
        left = h.get("ejected_for_ms")
        return "ejected" + (f" ({int(left) / 1000:g}s left)" if left is not None else "")
    if h.get("healthy") is False:
        return "unhealthy" + (f" (health check: {h['health_check']})" if h.get("health_check") else "")
    return "healthy" if h else "-"


def listeners_table(listeners: list[dict[str, Any]]) -> Any:
    t = api.table("NAME", "ADDRESS", "PROTOCOL", "DIRECTION", "TLS", "TARGET")
    for li in listeners:
        tls = (li.get("tls") or {}).get("mode", "-")
        target = _backends(li.get("backends")) or li.get("cluster") or "routes"
        address = li.get("bound") or li.get("address")
        api.add_row(t, li["name"], address, li.get("protocol", "http"), li.get("direction", "-"), tls, target)
    return t


def routes_table(routes: list[dict[str, Any]]) -> Any:
    t = api.table("LISTENER", "#", "NAME", "MATCH", "BACKENDS")
    for r in routes:
        to = _backends(r.get("backends")) or ("redirect" if r.get("redirect") else "-")
        api.add_row(t, r["listener"], r["index"], r.get("name", "-"), _match(r.get("match")), to)
    return t


def clusters_table(clusters: list[dict[str, Any]]) -> Any:
    t = api.table("NAME", "SERVICE", "LB", "PROTOCOL", "MTLS PEERS")
    for c in clusters:
        peers = ", ".join((c.get("tls") or {}).get("peer_ids", [])) or "-"
        api.add_row(
            t, c["name"], c.get("service", c["name"]), c.get("lb", "round_robin"), c.get("protocol", "http1"), peers
        )
    return t


def endpoints_table(endpoints: list[dict[str, Any]]) -> Any:
    t = api.table("CLUSTER", "ADDRESS", "WEIGHT", "ZONE", "HEALTH", "ACTIVE", "REQUESTS")
    for e in endpoints:
        h = e.get("health") or {}
        row = (e["cluster"], e["address"], e.get("weight", 1), e.get("zone", "-"), _health(h))
        api.add_row(t, *row, h.get("active", "-"), h.get("requests", "-"))
    return t


def identity_lines(identity: dict[str, Any] | None) -> list[str]:
    from meshctl.cli.status import svid_left

    if not identity:
        return ["no SVID yet"]
    lines = [
        f"SPIFFE ID     {identity['spiffe_id']}",
        f"serial        {identity['serial']}",
        f"valid from    {api.local_time(identity['not_before'])}",
        f"valid until   {api.local_time(identity['not_after'])} ({svid_left(identity['not_after']).plain})",
    ]
    bundle = identity.get("trust_bundle")
    if bundle:
        lines.append(
            f"trust bundle  {bundle['roots']} root{'s' if bundle['roots'] != 1 else ''}, sha256 {bundle['sha256']}"
        )
    return lines


TABLES = {
    Section.listeners: listeners_table,
    Section.routes: routes_table,
    Section.clusters: clusters_table,
    Section.endpoints: endpoints_table,
}
#: What `all` shows, in this order.
SECTIONS = (*TABLES, Section.identity)
