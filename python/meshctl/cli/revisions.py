"""``meshctl history``, ``diff`` and ``rollback``: the mesh's revision log,
where every change is kept, any two revisions compared and any one restored."""

from __future__ import annotations

import difflib
from typing import Annotated, Any

import typer
import yaml

from meshctl.cli import api, options
from meshctl.cli.api import Client, add_row, reported
from meshctl.cli.options import Format
from meshctl.cli.resources import ref

_VERB = {"added": "created", "removed": "deleted", "changed": "configured"}


def history(
    output: options.TableOutput = Format.table,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Every revision of the mesh, oldest first."""
    client = api.connect_reading(server, token, token_file)
    with reported(client):
        revisions = client.get("/api/v1/revisions")
    if api.printed_json(output, revisions):
        return
    if not revisions:
        typer.echo("no revisions yet", err=True)
        return
    t = api.table("REVISION", "TIME", "ACTION", "KIND", "NAME")
    for r in revisions:
        add_row(
            t, r["id"], api.local_time(r["created_at"]), r["action"], "" if r["kind"] == "*" else r["kind"], r["name"]
        )
    api.console().print(t)


def _spec_yaml(kind: str, side: dict[str, Any] | None) -> list[str]:
    if side is None:
        return []
    spec = side.get("spec")
    # A service's stored spec is its list of ports; show it as documents spell it.
    doc = {"ports": spec} if kind == "Service" and isinstance(spec, list) else spec
    return yaml.safe_dump(doc, sort_keys=False).splitlines(keepends=True)


def _color(line: str) -> str:
    if line.startswith(("+++", "---")):
        return typer.style(line, bold=True)
    if line.startswith("+"):
        return typer.style(line, fg="green")
    if line.startswith("-"):
        return typer.style(line, fg="red")
    if line.startswith("@@"):
        return typer.style(line, fg="cyan")
    return line


def _latest(client: Client) -> int:
    revisions = client.get("/api/v1/revisions")
    if not revisions:
        api.fail("no revisions yet", 1)
    return int(revisions[-1]["id"])


def diff(
    rev1: Annotated[int, typer.Argument(help="The revision to compare from.")],
    rev2: Annotated[int | None, typer.Argument(help="The revision to compare to (default: the latest).")] = None,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """What changed from REV1 to REV2: each resource added, removed or changed, with a diff of its spec."""
    client = api.connect_reading(server, token, token_file)
    with reported(client):
        after = rev2 if rev2 is not None else _latest(client)
        changes = client.get(f"/api/v1/revisions/{rev1}/diff/{after}")
    if not changes:
        typer.echo(f"no changes from revision {rev1} to {after}")
        return
    for i, c in enumerate(changes):
        if i:
            typer.echo()
        typer.echo(typer.style(f"{c['change']} {ref(c['kind'], c['name'])}", bold=True))
        lines = difflib.unified_diff(
            _spec_yaml(c["kind"], c.get("before")),
            _spec_yaml(c["kind"], c.get("after")),
            fromfile=f"revision {rev1}" if c["change"] != "added" else "/dev/null",
            tofile=f"revision {after}" if c["change"] != "removed" else "/dev/null",
        )
        for line in lines:
            typer.echo(_color(line.rstrip("\n")))


def rollback(
    revision: Annotated[int, typer.Argument(help="The revision to restore.")],
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Restore every resource to what it was at REVISION; recorded as a new revision."""
    client = api.connect(server, token, token_file)
    with reported(client):
        new = client.post(f"/api/v1/revisions/{revision}/rollback")
        earlier = [r["id"] for r in client.get("/api/v1/revisions") if r["id"] < new["id"]]
        changes = client.get(f"/api/v1/revisions/{max(earlier)}/diff/{new['id']}") if earlier else []
    for c in changes:
        typer.echo(f"{ref(c['kind'], c['name'])} {_VERB[c['change']]}")
    what = f"{len(changes)} change{'s' if len(changes) != 1 else ''}" if changes else "nothing to change"
    typer.echo(f"rolled back to revision {revision}: {what}, recorded as revision {new['id']}")
