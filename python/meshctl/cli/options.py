"""The options the control-plane verbs share, each declared once: where the
control plane is (``--server``, ``--token``, ``--token-file``, in their own
help panel) and how to print the answer (``--output``). A verb takes them as
``server: options.Server = options.DEFAULT_SERVER`` and so on; ``api.connect``
turns the three connection options into a client.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import typer

# === connection ===

#: Where the control plane is when neither --server nor $MESHCTL_SERVER says.
DEFAULT_URL = "http://127.0.0.1:15010"
#: The default of `Server` (None: `DEFAULT_URL`; a list default would be shared between calls).
DEFAULT_SERVER: list[str] | None = None
_PANEL = "Connection"


def _urls(values: list[str] | None) -> list[str] | None:
    """--server's values checked as the command line is parsed: a bad URL is a usage error naming it."""
    if not values:
        return None
    from meshctl.client import split_urls

    try:
        return split_urls(values)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


#: One option, two names: `--control-plane` is what `meshctl proxy` and `gateway` call it. Several
#: URLs (replicas): comma-separated, or the flag repeated; the client fails over (meshctl.client).
Server = Annotated[
    list[str] | None,
    typer.Option(
        "--server",
        "--control-plane",
        envvar="MESHCTL_SERVER",
        metavar="URL",
        help="Control-plane URL; several (replicas): comma-separated or repeated, tried in turn when one does"
        " not answer.",
        show_default=DEFAULT_URL,
        callback=_urls,
        rich_help_panel=_PANEL,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        metavar="TOKEN",
        help="API bearer token.",
        show_default="$MESHCTL_TOKEN, else the --token-file default",
        rich_help_panel=_PANEL,
    ),
]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        metavar="FILE",
        help="File holding the token.",
        show_default="admin.token in $MESHCTL_DATA_DIR (~/.meshctl), if it exists",
        rich_help_panel=_PANEL,
    ),
]

# === output ===


class Format(StrEnum):
    """Every output format of the CLI. A verb offers the ones it can print, as a Literal of
    these (typer lists and accepts exactly those), so `-o text` is refused where it means nothing.
    Every reading verb offers json and yaml: the API's answer, complete (``api.printed``)."""

    table = "table"
    wide = "wide"
    text = "text"
    yaml = "yaml"
    json = "json"


_HELP = "json and yaml: the API's answer, whole."
#: A table for people, or the API's answer.
TableOutput = Annotated[
    Literal[Format.table, Format.json, Format.yaml], typer.Option("--output", "-o", help="A table; " + _HELP)
]
#: A table, with more columns for wide terminals, or the API's answer.
WideOutput = Annotated[
    Literal[Format.table, Format.wide, Format.json, Format.yaml],
    typer.Option("--output", "-o", help="A table (wide: more columns); " + _HELP),
]
#: Prose for people, or the API's answer.
TextOutput = Annotated[
    Literal[Format.text, Format.json, Format.yaml], typer.Option("--output", "-o", help="Prose; " + _HELP)
]
#: A table, or the resources as documents `meshctl apply -f` takes back.
DocumentOutput = Annotated[
    Literal[Format.table, Format.wide, Format.yaml, Format.json],
    typer.Option("--output", "-o", help="A table (wide: more columns), or documents for apply -f."),
]

# === selection ===

#: Resources by label, kubectl's equality selectors (see ``meshctl.cli.select``).
Selector = Annotated[
    str | None,
    typer.Option(
        "--selector",
        "-l",
        metavar="SELECTOR",
        help="Only those whose labels match: key=value, key!=value, key (has it), !key;"
        " comma-separated, all must hold.",
    ),
]
AllNamespaces = Annotated[
    bool, typer.Option("--all-namespaces", "-A", help="In every namespace (lists do so without -n, too).")
]
