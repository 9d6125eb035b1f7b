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

Server = Annotated[
    str,
    typer.Option(
        "--server",
        envvar="MESHCTL_SERVER",
        help="Control-plane URL.",
        rich_help_panel=_PANEL,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="API bearer token. Default: $MESHCTL_TOKEN, else the --token-file default.",
        show_default=False,
        rich_help_panel=_PANEL,
    ),
]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="File holding the token. Default: admin.token in $MESHCTL_DATA_DIR (~/.meshctl), if it exists.",
        show_default=False,
        rich_help_panel=_PANEL,
    ),
]

# === output ===


class Format(StrEnum):
    """Every output format of the CLI. A verb offers the ones it can print, as a Literal of
    these (typer lists and accepts exactly those), so `-o yaml` is refused where it means nothing."""

    table = "table"
    text = "text"
    yaml = "yaml"
    json = "json"


#: A table for people, or the API's JSON.
TableOutput = Annotated[Literal[Format.table, Format.json], typer.Option("--output", "-o")]
#: Prose for people, or the API's JSON.
TextOutput = Annotated[Literal[Format.text, Format.json], typer.Option("--output", "-o")]
#: A table, or the resources as documents `meshctl apply -f` takes back.
DocumentOutput = Annotated[
    Literal[Format.table, Format.yaml, Format.json],
    typer.Option("--output", "-o", help="table, or documents for apply -f."),
]
