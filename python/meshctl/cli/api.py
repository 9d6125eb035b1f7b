"""What the control-plane verbs share: the client their connection options
(``options.Server``, ``options.Token``, ``options.TokenFile``) build, API errors
turned into messages (never a traceback), and small output helpers.

Exit codes: 1 when the API refused or could not be reached, 2 for usage and
file errors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

# rich (tables) is imported by the functions that print: `--help` never loads it (issue 13, 14b).
from meshctl.cli.options import DEFAULT_URL
from meshctl.client import ApiClient, ApiError, TrustError, Unreachable, format_detail, split_urls

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from meshctl.trust import Trust


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` on stderr and exit (2: usage or file error)."""
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {message}", err=True)
    raise typer.Exit(code)


def default_token_file() -> Path:
    """Where ``meshctl control-plane`` writes the admin token with its default data dir."""
    return Path(os.environ.get("MESHCTL_DATA_DIR") or "~/.meshctl").expanduser() / "admin.token"


class Client(ApiClient):
    """The API client, knowing where its token came from (for a helpful 401)."""

    def __init__(self, urls: list[str], token: str | None, token_source: str | None):
        super().__init__(urls, token, trust=trust_for(urls))
        self.token_source = token_source


# === trust in the control plane's certificate ===


class TrustOptions:
    """The root options ``meshctl --ca-file FILE | --ca-hash PIN [--insecure] VERB`` (or
    $MESHCTL_CA_FILE, $MESHCTL_CA_HASH, $MESHCTL_INSECURE), set before the verb runs."""

    ca_file: Path | None = None
    ca_hash: str | None = None
    insecure: bool = False


trust_options = TrustOptions()


def trust_for(urls: list[str]) -> Trust | None:
    """How the client verifies the https:// ones of `urls` (see meshctl.trust): --ca-file,
    --ca-hash (one pin for every replica), else the system's trust store plus the data dir's
    tls/ca.pem (the CLI on the control-plane host needs nothing more). Plain http:// to another
    host is refused without --insecure (a warning with it)."""
    from meshctl.trust import Trust, parse_pin, plain_http

    o = trust_options
    for url in urls:
        try:
            warning = plain_http(url, insecure=o.insecure)
        except ValueError as e:
            fail(f"--server: {e}")
        if warning:
            typer.echo(f"{typer.style('warning:', fg='yellow', bold=True)} {warning}", err=True)
    if o.ca_file is not None and o.ca_hash is not None:
        fail("give --ca-file or --ca-hash, not both")
    https = [u for u in urls if u.startswith("https:")]
    if not https:
        if o.ca_file is not None or o.ca_hash is not None:
            fail("--ca-file and --ca-hash are for an https:// --server")
        return None
    try:
        pin = parse_pin(o.ca_hash) if o.ca_hash is not None else None
    except ValueError as e:
        fail(f"--ca-hash: {e}")
    data_dir = Path(os.environ.get("MESHCTL_DATA_DIR") or "~/.meshctl").expanduser()
    return Trust(https[0], ca_file=o.ca_file, pin=pin, extra=data_dir / "tls" / "ca.pem")


def _read_token(path: Path) -> str:
    try:
        token = path.expanduser().read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read the token file {path}: {getattr(e, 'strerror', None) or e}")
    if not token:
        fail(f"the token file {path} is empty")
    return token


def connect(server: str | Sequence[str] | None, token: str | None, token_file: Path | None) -> Client:
    """The client for these options (`server`: one URL or several, see meshctl.client; None: the
    default). The token is the first of: --token, --token-file, $MESHCTL_TOKEN, the default token
    file if it exists; else none (the API answers 401)."""
    try:
        server = split_urls(server or DEFAULT_URL)
    except ValueError as e:
        fail(f"--server: {e}")
    if token is not None and token_file is not None:
        fail("give --token or --token-file, not both")
    if token is not None:
        return Client(server, token, "--token")
    if token_file is not None:
        return Client(server, _read_token(token_file), f"--token-file {token_file}")
    if env := os.environ.get("MESHCTL_TOKEN"):
        return Client(server, env, "$MESHCTL_TOKEN")
    default = default_token_file()
    if default.is_file():
        return Client(server, _read_token(default), str(default))
    return Client(server, None, None)


def connect_reading(server: str | Sequence[str] | None, token: str | None, token_file: Path | None) -> Client:
    """`connect` for a verb that only reads: when no token is given (--token, --token-file,
    $MESHCTL_TOKEN) and the data dir holds the read-only token (reader.token), that one rather
    than the admin token, so that looking never risks writing."""
    if token is None and token_file is None and not os.environ.get("MESHCTL_TOKEN"):
        reader = default_token_file().with_name("reader.token")
        if reader.is_file():
            client = connect(server, None, reader)
            client.token_source = str(reader)  # as the default file, not as if --token-file said it
            return client
    return connect(server, token, token_file)


#: Turns the `loc` of one 422 item into a note on where that input came from (e.g. a file and document).
Locate = Callable[[list[Any]], str | None]


def error_lines(e: ApiError, client: Client, locate: Locate | None = None) -> list[str]:
    """An API error as a person reads it: status and explanation, 422 items one per line."""
    if e.status == 401:
        hint = (
            f"the token from {client.token_source} was refused; give --token or --token-file"
            if client.token_source
            else "give --token or --token-file"
        )
        return [f"401 {format_detail(e.detail)} ({hint})"]
    if e.status == 403 and client.token_source:
        return [f"403 {format_detail(e.detail)} (the token from {client.token_source})"]
    if e.status == 422 and isinstance(e.detail, list):
        lines = ["422 invalid input"]
        for item in e.detail:
            line = format_detail([item])
            note = locate(list(item.get("loc", []))) if locate and isinstance(item, dict) else None
            lines.append(f"  {line}" + (f"  ({note})" if note else ""))
        return lines
    return [f"{e.status} {format_detail(e.detail)}"]


def report(e: ApiError, client: Client, locate: Locate | None = None) -> None:
    """Print an API error on stderr, without exiting."""
    first, *rest = error_lines(e, client, locate)
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {first}", err=True)
    for line in rest:
        typer.echo(line, err=True)


@contextmanager
def reported(client: Client, locate: Locate | None = None) -> Iterator[None]:
    """Run API calls; a refusal or an unreachable server becomes a message and exit code 1."""
    try:
        yield
    except ApiError as e:
        report(e, client, locate)
        raise typer.Exit(1) from None
    except TrustError as e:
        fail(f"not trusting the control plane: {e}", 1)
    except Unreachable as e:
        fail(f"cannot reach the control plane at {e} (is it running? --server or $MESHCTL_SERVER)", 1)


# === output ===


def printed(output: object, doc: object) -> bool:
    """Prints `doc` (the API's answer, whole) as indented JSON or as YAML when `output` is one of
    those formats; whether it did. Every reading verb prints its json and yaml through here."""
    fmt = getattr(output, "value", output)
    if fmt == "json":
        typer.echo(json.dumps(doc, indent=2))
    elif fmt == "yaml":
        import yaml

        typer.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), nl=False)
    else:
        return False
    return True


#: The json-only name `printed` had; kept for verbs written against it.
printed_json = printed


def console() -> Console:
    """Where tables go. Into a pipe or a file (not a terminal), lines are never wrapped nor cut at
    80 columns: scripts get whole rows, as `kubectl get | grep` does."""
    import sys

    from rich.console import Console

    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(highlight=False, width=1_000_000, soft_wrap=True)


def table(*columns: str) -> Table:
    from rich.table import Table

    t = Table(box=None, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def add_row(t: Table, *cells: object) -> None:
    """Cells as plain text: resource data never goes through rich markup."""
    from rich.text import Text

    t.add_row(*(c if isinstance(c, Text) else Text("" if c is None else str(c)) for c in cells))


def parse_time(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def age(value: str | None) -> str:
    """How long ago, kubectl style: 45s, 12m, 5h, 3d."""
    if not value:
        return ""
    seconds = int((datetime.now(UTC) - parse_time(value)).total_seconds())
    if seconds < 0:
        return "0s"
    for unit, size, limit in (("s", 1, 120), ("m", 60, 120 * 60), ("h", 3600, 48 * 3600)):
        if seconds < limit:
            return f"{seconds // size}{unit}"
    return f"{seconds // 86400}d"


def until(value: str) -> str:
    """How long from now: `in 25s`, or `expired`."""
    seconds = int((parse_time(value) - datetime.now(UTC)).total_seconds())
    return f"in {seconds}s" if seconds > 0 else "expired"


def local_time(value: str) -> str:
    return parse_time(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def qualified(namespace: str | None, name: str, home: str) -> str:
    """`name` within `home`'s namespace, `namespace/name` outside it."""
    return name if (namespace or home) == home else f"{namespace}/{name}"
