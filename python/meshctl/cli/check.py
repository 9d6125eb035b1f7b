"""``meshctl check``: is the mesh healthy? Like ``linkerd check`` and
``istioctl analyze``. The CLI checks what only it can (the control plane
answers, the token is accepted and may read, the versions agree: codes MC00xx),
then shows the control plane's analysis (``GET /api/v1/check``: sidecars,
identity, routes, resources) grouped by category, each check passed (a check
mark), a warning (a double exclamation mark), an error (a cross) or a note (an
information sign), with every finding's resource, message and fix hint. The
catalogue of codes is ``meshctl.control.analysis.codes``.

Exit 1 when there is an error (the control plane unreachable included), else 0.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import typer

from meshctl.cli import api, options
from meshctl.cli.options import Format

Output = Annotated[
    Literal[Format.table, Format.json, Format.yaml],
    typer.Option("--output", "-o", help="Checks grouped by category; json and yaml: the whole report."),
]

PASSED, WARNING, ERROR, INFO = "\u2714", "\u203c", "\u00d7", "\u2139"  # linkerd check's marks, and a note's
_MARKS = {"error": (ERROR, "red"), "warning": (WARNING, "yellow"), "info": (INFO, "blue")}


def _client_finding(code: str, message: str, name: str) -> dict[str, Any]:
    from meshctl.control.analysis.codes import BY_CODE

    c = BY_CODE[code]
    return {
        "code": code,
        "severity": c.severity,
        "category": c.category,
        "resource": {"kind": "ControlPlane", "name": name, "field": None},
        "message": message,
        "hint": c.hint,
    }


def _client_checks(codes: list[str]) -> list[dict[str, Any]]:
    from meshctl.control.analysis.codes import BY_CODE

    return [
        {"code": c.code, "category": c.category, "severity": c.severity, "title": c.title}
        for c in (BY_CODE[code] for code in codes)
    ]


def _run(client: api.Client, grace: float) -> dict[str, Any]:
    """The whole report: the CLI's checks, then the control plane's (when it could be asked)."""
    from meshctl import __version__
    from meshctl.client import ApiError, Unreachable

    where = client.url
    ran, found = ["MC0001"], []
    server: dict[str, Any] = {}
    try:
        client.get("/healthz", timeout=10)
        ran += ["MC0002", "MC0003"]
        try:
            server = client.get(f"/api/v1/check?grace={grace:g}", timeout=grace + 60)
        except ApiError as e:
            if e.status not in (401, 403):
                raise
            code = "MC0002" if e.status == 401 else "MC0003"
            source = f" (the token from {client.token_source})" if client.token_source else ""
            found.append(_client_finding(code, f"{e.status} {e.detail}{source}", where))
        if server:
            ran.append("MC0004")
            try:
                theirs = client.get("/api/v1/version", timeout=10)["meshctl"]
            except ApiError as e:  # a control plane older than /api/v1/version
                if e.status != 404:
                    raise
                theirs = server["server_version"]
            if theirs != __version__:
                message = f"the CLI runs meshctl {__version__}, the control plane meshctl {theirs}"
                found.append(_client_finding("MC0004", message, where))
    except Unreachable as e:
        found.append(_client_finding("MC0001", f"cannot reach the control plane: {e}", where))
    findings = found + server.get("findings", [])
    return {
        "client_version": __version__,
        "server_version": server.get("server_version"),
        "generation": server.get("generation"),
        "checked_at": server.get("checked_at"),
        "checks": _client_checks(ran) + server.get("checks", []),
        "findings": findings,
        "errors": sum(f["severity"] == "error" for f in findings),
        "warnings": sum(f["severity"] == "warning" for f in findings),
    }


def _print_table(report: dict[str, Any]) -> None:
    from meshctl.control.analysis.codes import CATEGORIES

    by_code: dict[str, list[dict[str, Any]]] = {}
    for f in report["findings"]:
        by_code.setdefault(f["code"], []).append(f)
    for category, heading in CATEGORIES.items():
        checks = [c for c in report["checks"] if c["category"] == category]
        if not checks:
            continue
        typer.echo(f"{heading}\n{'-' * len(heading)}")
        for c in checks:
            found = by_code.get(c["code"], [])
            if not found:
                typer.echo(f"{typer.style(PASSED, fg='green')} {c['title']}")
                continue
            mark, color = _MARKS[c["severity"]]
            typer.echo(f"{typer.style(mark, fg=color, bold=True)} {c['title']} [{c['code']}]")
            hints = {f["hint"] for f in found}
            for f in found:
                r = f["resource"]
                what = f"{r['kind']} {r['name']}" + (f" {r['field']}" if r["field"] else "")
                typer.echo(f"    {what}: {f['message']}")
                if len(hints) > 1:
                    typer.echo(f"      fix: {f['hint']}")
            if len(hints) == 1:
                typer.echo(f"    fix: {hints.pop()}")
        typer.echo("")
    errors, warnings = report["errors"], report["warnings"]
    if errors:
        verdict = typer.style(ERROR, fg="red", bold=True)
    else:
        verdict = typer.style(WARNING if warnings else PASSED, fg="yellow" if warnings else "green", bold=True)
    plural = [f"{errors} error{'s' * (errors != 1)}", f"{warnings} warning{'s' * (warnings != 1)}"]
    typer.echo(f"Status check results are {verdict}: {', '.join(plural)}")


def check(
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            metavar="SECONDS",
            min=0,
            max=60,
            help="Seconds a sidecar behind the mesh's config gets to catch up before it counts as out of sync.",
        ),
    ] = 5.0,
    output: Output = Format.table,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Check the mesh: the control plane, sidecars (in sync, versions, revoked join tokens), SVIDs and
    the CA, routes (shadowed rules, backends without endpoints) and resources (dangling references,
    PERMISSIVE services). Exits 1 when there is an error."""
    client = api.connect(server, token, token_file)
    with api.reported(client):
        report = _run(client, grace)
    if output == Format.json:
        typer.echo(json.dumps(report, indent=2))
    elif output == Format.yaml:
        import yaml

        typer.echo(yaml.safe_dump(report, sort_keys=False, allow_unicode=True), nl=False)
    else:
        _print_table(report)
    if report["errors"]:
        raise typer.Exit(1)
