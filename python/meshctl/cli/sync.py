"""Whether the sidecars run the mesh's config: ``meshctl apply --wait`` waits
for it, ``meshctl status`` exits by it.

Which sidecars a write affects: every live one. A sidecar's snapshot is
versioned by the mesh generation, and every write raises it and is sent to
every sidecar (a route change reaches its callers in any namespace; working
out whose compiled config really changed would take the compiler's work
twice). So ``apply --wait`` waits until every live sidecar has ACKed the
generation the apply made, or a newer one (which holds it). Sidecars whose
registration expired (gone) are not waited for; those that join meanwhile
are, and one that stops meanwhile drops out once it deregisters or expires.

A sidecar that NACKed that generation (or a newer one it has not ACKed) has
settled too: it keeps its running config, so there is no point waiting for
it. ``--wait`` ends when every sidecar settled (exit 0 if all ACKed, 1
naming each NACK with its error) or at ``--timeout`` (exit 1 naming those
still behind).

``status`` exits 1 when a live sidecar NACKs the current generation, or is
behind it past a grace (``--grace``, 5 s by default): a push takes
milliseconds, but right after a write, or while a sidecar reconnects with
backoff, "behind" is normal for a moment. So status looks again during the
grace while only sidecars catching up are out of sync, and shows the last look.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import typer

from meshctl.cli import api

#: How often `--wait` and the grace look at the sidecars again (ACKs are written in ~0.2 s batches).
POLL_SECONDS = 0.25

Sidecar = dict[str, Any]
Settled = Literal["acked", "nacked", "behind", "gone"]


def settled(sc: Sidecar, generation: int) -> Settled:
    """Where the sidecar stands with `generation`: ACKed it (or newer), NACKed it (or a newer one,
    not ACKed since), still behind, or gone (registration expired)."""
    if not sc["live"]:
        return "gone"
    acked, nacked = sc["acked_version"], sc["nacked_version"]
    if acked is not None and acked >= generation:
        return "acked"
    if nacked is not None and nacked >= generation and sc["last_error"]:
        return "nacked"
    return "behind"


def name(sc: Sidecar) -> str:
    return f"sidecar {sc['id']} ({sc['namespace']}/{sc['service']})"


def lag(sc: Sidecar) -> str:
    """What a sidecar that is behind runs: `acked 6`, or `no ACK yet`."""
    return "no ACK yet" if sc["acked_version"] is None else f"acked {sc['acked_version']}"


# === apply --wait ===


def wait_for_acks(client: api.Client, generation: int, timeout: float) -> None:
    """Return when every live sidecar ACKed `generation`; exit 1 naming each that NACKed it, or at
    `timeout` seconds each still behind."""
    deadline = time.monotonic() + timeout
    while True:
        with api.reported(client):
            sidecars: list[Sidecar] = client.get("/api/v1/sidecars")
        by = {s: [sc for sc in sidecars if settled(sc, generation) == s] for s in ("acked", "nacked", "behind")}
        if not by["behind"] or time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    for sc in by["nacked"]:
        typer.echo(f"error: {name(sc)} refused generation {sc['nacked_version']}: {sc['last_error']}", err=True)
    if by["behind"]:
        behind = ", ".join(f"{name(sc)}: {lag(sc)}" for sc in by["behind"])
        typer.echo(f"error: timed out after {timeout:g}s waiting for generation {generation}: {behind}", err=True)
    if by["nacked"] or by["behind"]:
        raise typer.Exit(1)
    n = len(by["acked"])
    typer.echo(
        f"generation {generation}: " + (f"ACKed by {n} sidecar{'s' if n != 1 else ''}" if n else "no live sidecars")
    )


# === status ===


def catching_up(sc: Sidecar) -> bool:
    """Live, not in sync, and not refusing the current generation: may be in sync in a moment."""
    return settled(sc, sc["mesh_generation"]) == "behind"


def out_of_sync(sidecars: list[Sidecar]) -> list[str]:
    """Each live sidecar not running the current generation, and why."""
    out = []
    for sc in sidecars:
        state = settled(sc, sc["mesh_generation"])
        if state == "nacked":
            out.append(f"{name(sc)} refused generation {sc['nacked_version']}: {sc['last_error']}")
        elif state == "behind":
            out.append(f"{name(sc)} is behind generation {sc['mesh_generation']}: {lag(sc)}")
    return out


def after_grace(fetch: Callable[[], list[Sidecar]], first: list[Sidecar], grace: float) -> list[Sidecar]:
    """`first`, or while some sidecar is catching up, a newer look (for up to `grace` seconds)."""
    deadline = time.monotonic() + grace
    sidecars = first
    while any(catching_up(sc) for sc in sidecars) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        sidecars = fetch()
    return sidecars


def exit_if_out_of_sync(sidecars: list[Sidecar]) -> None:
    """Exit 1 after naming on stderr each live sidecar out of sync; return when none is."""
    problems = out_of_sync(sidecars)
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
