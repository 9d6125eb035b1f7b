"""``meshctl token create|list|revoke``: the control plane's API tokens (the
admin token is needed for all three).

- A join token lets the sidecars of one service register, follow their config
  and get their certificates as that service, nothing more. It expires in 24 h
  unless ``--expires`` says otherwise. As kubeadm's, its expiry limits joining:
  once expired it joins no new instance, but the sidecars that joined with it
  keep working (heartbeats, config, certificate renewals, restarts of the same
  instance) until it is revoked. Revoking it stops them.
- An admin token may do everything; a reader token may read the mesh. They
  never expire unless ``--expires`` says so.

Rotation is three steps: ``token create`` a successor, switch its holders to
it (their token files), then ``token revoke`` the old one. The last live
admin token cannot be revoked.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import typer

from meshctl.cli import api, options
from meshctl.cli.api import Client, add_row, reported
from meshctl.cli.options import Format
from meshctl.client import ApiError, Unreachable

app = typer.Typer(
    help="API tokens (needs the admin token): join tokens for a service's sidecars (24 h unless "
    "--expires says otherwise), admin and read-only tokens (no expiry unless asked).\n\n"
    "A join token's expiry limits joining: once expired it joins no new instance, but the sidecars "
    "that joined with it keep working (heartbeats, config, certificate renewals, restarts of the "
    "same instance) until it is revoked. Revoking a join token stops its sidecars.\n\n"
    "Rotation: token create a successor, switch its holders to it (their token files; the data "
    "dir's admin.token or reader.token), then token revoke the old one. The last live admin token "
    "cannot be revoked.",
    no_args_is_help=True,
)

Role = Literal["join", "admin", "reader"]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def duration(value: str) -> int:
    """`90s`, `30m`, `24h`, `7d`, `2w` or a sum (`1h30m`) in seconds; `never` (or 0) is 0."""
    text = value.strip().lower()
    if text in ("never", "0"):
        return 0
    parts = re.findall(r"(\d+)([smhdw])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        api.fail(f"--expires {value!r}: give a duration such as 30m, 24h, 7d or 1h30m, or never")
    return sum(int(n) * _UNITS[u] for n, u in parts)


def service_key(value: str) -> str:
    """`name` (in the default namespace) or `namespace/name`."""
    return value if "/" in value else f"default/{value}"


def join_command(server: str, service: str, ca_hash: str | None) -> str:
    """The `meshctl proxy` line a sidecar of `service` joins with (its token in a 0600 file), with
    the pin of the control plane's serving CA when it serves HTTPS."""
    namespace, name = service.split("/", 1)
    pin = f" --ca-hash {ca_hash}" if ca_hash else ""
    return (
        f"meshctl proxy --control-plane {server}{pin} --namespace {namespace} --service {name} "
        f"--token-file {name}.token --app-port APP_PORT"
    )


def serving_ca_hash(client: Client) -> str | None:
    """The pin a sidecar trusts this control plane's HTTPS certificate by (None: plain HTTP, or an
    operator's certificate without a CA to pin). Asked of the server the token was made on, over
    the connection the CLI verified: the same as `meshctl.control.ca.serving.serving_ca_hash` on
    its data dir, which the CLI's host may not have."""
    try:
        answer = client.get("/api/v1/ca/serving")
    except (ApiError, Unreachable):
        return None  # the token is made: print the command without the pin rather than fail
    return answer.get("ca_hash") if answer.get("tls") else None


def expires(value: str | None, at: datetime | None = None) -> str:
    """`never`, `expired`, or how long is left: `in 23h`, `in 6d`."""
    if value is None:
        return "never"
    seconds = int((api.parse_time(value) - (at or datetime.now(UTC))).total_seconds())
    if seconds <= 0:
        return "expired"
    for unit, size, limit in (("s", 1, 120), ("m", 60, 120 * 60), ("h", 3600, 48 * 3600)):
        if seconds < limit:
            return f"in {seconds // size}{unit}"
    return f"in {seconds // 86_400}d"


def describe(t: dict[str, Any]) -> str:
    what = f"{t['role']} token {t['id']}" + (f" ({t['name']})" if t["name"] else "")
    if t["service"]:
        what += f" for {t['service']}"
    when = expires(t["expires_at"])
    return f"{what}, expires {when}" if when not in ("never", "expired") else f"{what}, {when} expiring"


@app.command("create")
def create(
    service: Annotated[
        str | None,
        typer.Option("--service", help="A join token's service: NAMESPACE/NAME, or NAME in the default namespace."),
    ] = None,
    role: Annotated[Role, typer.Option("--role", help="join (with --service), admin, or reader (read-only).")] = "join",
    name: Annotated[
        str | None, typer.Option("--name", help="Shown by token list, and as the author of the changes it makes.")
    ] = None,
    expires_in: Annotated[
        str | None,
        typer.Option(
            "--expires",
            help="Refused after this long (a join token: joins no new instance after this long; its "
            "sidecars keep working): 30m, 24h, 7d, 1h30m, or never. Default: 24h for a join token, "
            "never for admin and reader.",
            show_default=False,
        ),
    ] = None,
    output: options.TextOutput = Format.text,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Create a token. It is printed this once, alone on stdout (`> pricing.token`); only its hash
    is kept. For a join token, stderr shows the command its sidecars join with."""
    if role == "join" and service is None:
        api.fail("a join token needs --service NAMESPACE/NAME (or --role admin|reader)")
    if role != "join" and service is not None:
        api.fail(f"--service is for join tokens, not {role} tokens")
    body: dict[str, Any] = {"role": role, "service": service_key(service) if service else None, "name": name}
    if expires_in is not None:
        body["expires_in_seconds"] = duration(expires_in)
    client = api.connect(server, token, token_file)
    with reported(client):
        made = client.post("/api/v1/tokens", body)
    if api.printed(output, made):
        return
    typer.echo(made["token"])
    typer.echo(f"{describe(made)}; shown this once, only its hash is kept", err=True)
    if made["role"] == "join":
        typer.echo("Join a sidecar with it (the token in a 0600 file):", err=True)
        urls = ",".join(client.urls)  # every replica it was given: the sidecar fails over as the CLI does
        typer.echo(f"  {join_command(urls, made['service'], serving_ca_hash(client))}", err=True)


@app.command("list")
def list_tokens(
    role: Annotated[Role | None, typer.Option("--role", help="Only tokens of this role.")] = None,
    service: Annotated[
        str | None, typer.Option("--service", help="Only the join tokens of this service (NAMESPACE/NAME or NAME).")
    ] = None,
    output: options.TableOutput = Format.table,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """List the tokens: id, name, role, service, age, expiry. Never the tokens themselves."""
    params = {"role": role, "service": service_key(service) if service else None}
    query = urlencode({k: v for k, v in params.items() if v is not None})
    client = api.connect(server, token, token_file)
    with reported(client):
        rows = client.get("/api/v1/tokens" + (f"?{query}" if query else ""))
    if api.printed(output, rows):
        return
    now = datetime.now(UTC)
    t = api.table("ID", "NAME", "ROLE", "SERVICE", "AGE", "EXPIRES")
    for r in rows:
        add_row(t, r["id"], r["name"], r["role"], r["service"], api.age(r["created_at"]), expires(r["expires_at"], now))
    api.console().print(t)


@app.command("revoke")
def revoke(
    ids: Annotated[list[int], typer.Argument(help="The tokens' ids (see token list).", show_default=False)],
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Revoke tokens: refused from the next request on. A join token's sidecars (even those that
    outlived its expiry) can then no longer heartbeat nor renew their certificates (status and
    check show them). The last live admin
    token cannot be revoked: create its successor first."""
    client = api.connect(server, token, token_file)
    failed = False
    for token_id in ids:
        try:
            with reported(client):
                client.delete(f"/api/v1/tokens/{token_id}")
            typer.echo(f"token {token_id} revoked")
        except typer.Exit:
            failed = True  # reported; the others are still revoked
    if failed:
        raise typer.Exit(1)
