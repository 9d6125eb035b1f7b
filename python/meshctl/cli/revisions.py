"""``meshctl history``, ``diff`` and ``rollback``: the mesh's revision log,
where every change is kept with who made it and why, any two revisions
compared and any one restored; and ``diff -f FILE``, what applying the files
would change in the live mesh (kubectl diff)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any

import typer

from meshctl.cli import api, options
from meshctl.cli.api import Client, add_row, fail, reported
from meshctl.cli.message import Message, with_message
from meshctl.cli.options import Format
from meshctl.cli.resources import Files, _locator, read_documents, ref

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
    if api.printed(output, revisions):
        return
    if not revisions:
        typer.echo("no revisions yet", err=True)
        return
    t = api.table("REVISION", "TIME", "ACTION", "KIND", "NAME", "AUTHOR", "MESSAGE")
    for r in revisions:
        kind = "" if r["kind"] == "*" else r["kind"]
        when = api.local_time(r["created_at"])
        add_row(t, r["id"], when, r["action"], kind, r["name"], r.get("author") or "", r.get("message") or "")
    api.console().print(t)


def _spec_yaml(kind: str, spec: Any) -> list[str]:
    import yaml

    if spec is None:
        return []
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


def _print_change(first: bool, title: str, kind: str, sides: tuple[Any, Any], names: tuple[str, str]) -> None:
    """One resource's change: a bold title, then a unified diff of its spec from `sides[0]` (named
    `names[0]`; None: absent) to `sides[1]`."""
    if not first:
        typer.echo()
    typer.echo(typer.style(title, bold=True))
    before, after = sides
    lines = difflib.unified_diff(
        _spec_yaml(kind, before),
        _spec_yaml(kind, after),
        fromfile=names[0] if before is not None else "/dev/null",
        tofile=names[1] if after is not None else "/dev/null",
    )
    for line in lines:
        typer.echo(_color(line.rstrip("\n")))


def diff(
    rev1: Annotated[int | None, typer.Argument(help="The revision to compare from.", show_default=False)] = None,
    rev2: Annotated[int | None, typer.Argument(help="The revision to compare to.", show_default="the latest")] = None,
    filename: Files = None,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """What changed from revision REV1 to REV2: each resource added, removed or changed, with a diff of its
    spec. Or, with -f FILE, what `apply -f FILE` would change in the live mesh, as the control plane would
    store it (defaults filled in): exit 0 when nothing, 1 when something would change, 2 on an error."""
    if filename:
        if rev1 is not None:
            fail("give REV1 [REV2] or -f FILE, not both")
        _diff_files(filename, server, token, token_file)
        return
    if rev1 is None:
        fail("give the revisions to compare (REV1 [REV2]) or the files to compare with the mesh (-f FILE)")
    client = api.connect_reading(server, token, token_file)
    with reported(client):
        after = rev2 if rev2 is not None else _latest(client)
        changes = client.get(f"/api/v1/revisions/{rev1}/diff/{after}")
    if not changes:
        typer.echo(f"no changes from revision {rev1} to {after}")
        return
    for i, c in enumerate(changes):
        sides = ((c.get("before") or {}).get("spec"), (c.get("after") or {}).get("spec"))
        title = f"{c['change']} {ref(c['kind'], c['name'])}"
        _print_change(i == 0, title, c["kind"], sides, (f"revision {rev1}", f"revision {after}"))


def _diff_files(filename: list[str], server: list[str] | None, token: str | None, token_file: Path | None) -> None:
    """`diff -f`: a dry run of the apply, each created or configured resource's stored spec against
    the one the apply would store. Exit codes as kubectl diff's."""
    docs, origins = read_documents(filename)
    if not docs:
        fail(f"no documents in {', '.join(filename)}")
    client = api.connect(server, token, token_file)
    try:
        with reported(client, _locator(docs, origins)):
            results = client.post("/api/v1/apply?dry_run=true", {"documents": docs}, timeout=60)
    except typer.Exit as e:  # 1 means "differences" here: errors are 2
        raise typer.Exit(2 if e.exit_code == 1 else e.exit_code) from None
    changed = [r for r in results if r["action"] != "unchanged"]
    for i, r in enumerate(changed):
        title = f"{r['action']} {ref(r['kind'], r['name'])}"
        _print_change(i == 0, title, r["kind"], (r.get("before"), r.get("after")), ("live", "applied"))
    if not changed:
        typer.echo(f"no changes: the mesh already is as {', '.join(filename)} says", err=True)
        return
    raise typer.Exit(1)


def rollback(
    revision: Annotated[int, typer.Argument(help="The revision to restore.")],
    message: Message = None,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Restore every resource to what it was at REVISION, recorded as a new revision; when every
    resource already is, nothing is recorded."""
    client = api.connect(server, token, token_file)
    with reported(client):
        done = client.post(with_message(f"/api/v1/revisions/{revision}/rollback", message))
    if not done["recorded"]:
        typer.echo(
            f"nothing to roll back: every resource already is as it was at revision {revision}"
            f" (no revision recorded; the latest is {done['id']})"
        )
        return
    changes = done["changes"]
    for c in changes:
        typer.echo(f"{ref(c['kind'], c['name'])} {_VERB[c['change']]}")
    what = f"{len(changes)} change{'s' if len(changes) != 1 else ''}"
    typer.echo(f"rolled back to revision {revision}: {what}, recorded as revision {done['id']}")
