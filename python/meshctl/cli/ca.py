"""``meshctl ca status`` and ``meshctl ca rotate start|activate|finish``: the
mesh CA's trust bundle, and a root rotation in three steps, none of which
breaks a connection (rotating needs the admin token):

1. ``start``: the new root joins the bundle; SVIDs still come from the old issuer.
2. ``activate``: SVIDs come from the new issuer (waits until every live sidecar has
   ACKed the new bundle, unless ``--force``).
3. ``finish``: the old root leaves the bundle (waits until every SVID from the old
   issuer has expired, unless ``--force``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from meshctl.cli import api, options
from meshctl.cli.api import Client, add_row, reported
from meshctl.cli.options import Format

app = typer.Typer(
    help="The mesh's certificate authority: its trust bundle and root rotation.",
    no_args_is_help=True,
)
rotate = typer.Typer(
    help="Rotate the root without downtime: start, then activate, then finish.",
    no_args_is_help=True,
)
app.add_typer(rotate, name="rotate")

ROTATION = "/api/v1/identity/rotation"

_NEXT = {
    "idle": "no rotation in progress (meshctl ca rotate start begins one)",
    "bundled": "the bundle holds both roots; SVIDs still come from the old issuer",
    "activated": "SVIDs come from the new issuer; the old root stays in the bundle until finish",
}


Force = Annotated[bool, typer.Option("--force", help="Even though it is not safe yet (see meshctl ca status).")]


def short(fp: str) -> str:
    """sha256:0123456789ab... as `0123456789ab`: enough to tell roots apart."""
    return fp.removeprefix("sha256:")[:16]


def _hint(info: dict[str, Any]) -> str:
    phase = info["phase"]
    if phase == "bundled":
        pending = info["sidecars_pending"]
        if pending:
            return f"waiting for {pending} live sidecar(s) to ACK generation {info['bundle_generation']}, then activate"
        return "every live sidecar has the new bundle: meshctl ca rotate activate"
    if phase == "activated":
        safe = info["finish_safe_after"]
        if safe and api.until(safe) != "expired":
            return f"old SVIDs valid until {api.local_time(safe)} ({api.until(safe)}), then: meshctl ca rotate finish"
        return "no SVID from the old issuer is valid any more: meshctl ca rotate finish"
    return ""


def show(info: dict[str, Any]) -> None:
    from rich.text import Text

    out = api.console()
    issuer = info["issuer"]
    out.print(Text(f"trust domain {info['trust_domain']}, rotation {info['phase']}: {_NEXT[info['phase']]}"))
    if hint := _hint(info):
        out.print(Text(f"next: {hint}"))
    out.print(
        Text(
            f"issuing from {issuer['subject']} ({short(issuer['fingerprint'])}), "
            f"expires {api.local_time(issuer['not_after'])}"
        )
    )
    out.print(Text(f"bundle {short(info['bundle_digest'])}:"))
    t = api.table("ROLE", "FINGERPRINT", "SUBJECT", "EXPIRES", "ISSUING")
    for r in info["roots"]:
        add_row(
            t,
            r["role"],
            short(r["fingerprint"]),
            r["subject"],
            api.local_time(r["not_after"]),
            "yes" if r["issuing"] else "",
        )
    out.print(t)


def status(
    output: options.TableOutput = Format.table,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """The trust bundle's roots (fingerprints), the issuer signing SVIDs, and the rotation's phase."""
    client = api.connect_reading(server, token, token_file)
    with reported(client):
        info = client.get(ROTATION)
    if output is Format.json:
        typer.echo(json.dumps(info, indent=2))
    else:
        show(info)


def _step(client: Client, path: str) -> dict[str, Any]:
    with reported(client):
        info: dict[str, Any] = client.post(path)
    return info


def start(
    server: options.Server = options.DEFAULT_SERVER, token: options.Token = None, token_file: options.TokenFile = None
) -> None:
    """Step 1: a new root joins the trust bundle; SVIDs still come from the current issuer.

    The new root is the operator's next-root.pem (+ next-root.key, or + next-issuer.pem/.key)
    placed in the CA directory, else a new one."""
    info = _step(api.connect(server, token, token_file), ROTATION)
    new = next(r for r in info["roots"] if r["role"] == "next")
    typer.echo(f"rotation started: the bundle holds the current root and the new one, {short(new['fingerprint'])}")
    typer.echo(f"next: {_hint(info)}")


def activate(
    force: Force = False,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Step 2: SVIDs come from the new issuer; sidecars move to it as they renew."""
    info = _step(api.connect(server, token, token_file), f"{ROTATION}/activate" + ("?force=true" if force else ""))
    typer.echo(f"rotation activated: new SVIDs come from {short(info['issuer']['fingerprint'])}")
    typer.echo(f"next: {_hint(info)}")


def finish(
    force: Force = False,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Step 3: the old root leaves the trust bundle."""
    info = _step(api.connect(server, token, token_file), f"{ROTATION}/finish" + ("?force=true" if force else ""))
    typer.echo(f"rotation finished: the bundle holds {short(info['roots'][0]['fingerprint'])} alone")


app.command("status")(status)
rotate.command("start")(start)
rotate.command("activate")(activate)
rotate.command("finish")(finish)
