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

DEFAULT_SERVER = "http://127.0.0.1:15010"
_PANEL = "Connection"

#: One option, two names: `--control-plane` is what `meshctl proxy` and `gateway` call it.
Server = Annotated[
    str,
    typer.Option(
        "--server",
        "--control-plane",
        envvar="MESHCTL_SERVER",
        metavar="URL",
        help="Control-plane URL.",
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
