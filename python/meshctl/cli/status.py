"""``meshctl status``: every sidecar, whether it runs the mesh's current
config (its ACKed snapshot version is the mesh generation) or refused it.
It exits 1 when a live sidecar is out of sync (see ``cli.sync``: NACKing, or
behind past ``--grace``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer

from meshctl.cli import api, options
from meshctl.cli.api import add_row, reported
from meshctl.cli.options import Format

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text


def sync_state(sc: dict[str, Any]) -> tuple[str, str]:
    """(short state, rich style): in sync, NACK, behind, waiting, or gone (registration expired)."""
    generation, acked, nacked = sc["mesh_generation"], sc["acked_version"], sc["nacked_version"]
    if not sc["live"]:
        return "gone", "dim"
    if acked == generation:
        return "in sync", "green"
    if sc["last_error"] and nacked is not None and (acked is None or nacked > acked):
        return f"NACK v{nacked}", "red"
    if acked is None:
        return "waiting", "yellow"
    return f"behind ({generation - acked})", "yellow"


def svid_left(expires_at: str | None) -> Text:
    """How long the sidecar's SVID has left (it renews at ~70 % of its life: one near its end,
    or expired, is failing to renew)."""
    from rich.text import Text

    if not expires_at:
        return Text("-", style="dim")
    left = int((api.parse_time(expires_at) - datetime.now(UTC)).total_seconds())
    if left <= 0:
        return Text("expired", style="red")
    return Text(api.age((datetime.now(UTC) - timedelta(seconds=left)).isoformat()) + " left")


def _address(sc: dict[str, Any]) -> str:
    """Where it is, and which instance when that says more: a gateway's id (instances of one Gateway
    may share an address), a sidecar's when it was given one."""
    if sc.get("gateway"):
        return f"{sc['address']} (gateway {sc.get('instance') or '-'})"
    endpoint = f"{sc['address']}:{sc['inbound_port']}"
    return endpoint if sc.get("instance", endpoint) == endpoint else f"{endpoint} ({sc['instance']})"


def sidecar_table(sidecars: list[dict[str, Any]], wide: bool = False) -> Table:
    """`wide` (`-o wide`) adds each sidecar's zone and the meshctl and data-plane versions it runs."""
    from rich.text import Text

    more = ("ZONE", "RUNS") if wide else ()
    t = api.table("ID", "SERVICE", "ADDRESS", "LIVE", "VERSION", "SYNC", "SVID", "LAST SEEN", "ERROR", *more)
    for sc in sidecars:
        state, style = sync_state(sc)
        add_row(
            t,
            sc["id"],
            f"{sc['namespace']}/{sc['service']}",
            _address(sc),
            "yes" if sc["live"] else "no",
            "-" if sc["acked_version"] is None else sc["acked_version"],
            Text(state, style=style),
            svid_left(sc.get("svid_expires_at")),
            api.age(sc["last_seen"]) + " ago",
            sc["last_error"] or "",
            *((sc.get("zone") or "", sc.get("version") or "") if wide else ()),
        )
    return t


def status(
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Only this namespace.")] = None,
    output: options.WideOutput = Format.table,
    grace: Annotated[
        float,
        typer.Option("--grace", min=0, help="Seconds sidecars that are behind get to catch up before exit 1."),
    ] = 5.0,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """The mesh generation and every sidecar: its config version, in sync or not, and why it refused one.
    Exits 1 when a live sidecar NACKs the current generation, or is still behind it after --grace."""
    from rich.text import Text

    from meshctl.cli import sync

    client = api.connect_reading(server, token, token_file)
    path = "/api/v1/sidecars" + (f"?namespace={quote(namespace)}" if namespace else "")
    with reported(client):
        sidecars = sync.after_grace(lambda: client.get(path), client.get(path), grace)
        mesh = client.get("/api/v1/mesh")
    # The whole answer: the mesh (its generation, which the sidecars' versions are compared to) too.
    if api.printed(output, {"mesh": mesh, "sidecars": sidecars}):
        sync.exit_if_out_of_sync(sidecars)
        return
    out = api.console()
    head = f"mesh generation {mesh['generation']}, revision {mesh['revision']}, {mesh['services']} services"
    if not sidecars:
        out.print(f"{head}: no sidecars registered" + (f" in namespace {namespace}" if namespace else ""))
        return
    states = [sync_state(sc)[0] for sc in sidecars]
    counts = {
        "in sync": states.count("in sync"),
        "NACK": sum(s.startswith("NACK") for s in states),
        "behind": sum(s.startswith("behind") for s in states),
        "waiting": states.count("waiting"),
        "gone": states.count("gone"),
    }
    summary = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    noun = "sidecar" if len(sidecars) == 1 else "sidecars"
    out.print(Text(f"{head}: {len(sidecars)} {noun}, {summary}"))
    out.print(sidecar_table(sidecars, wide=output is Format.wide))
    sync.exit_if_out_of_sync(sidecars)
