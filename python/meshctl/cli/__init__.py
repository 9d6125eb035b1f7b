"""The ``meshctl`` command: one typer app, one module per verb group."""

from __future__ import annotations

from typing import Annotated

import typer

from meshctl import __version__
from meshctl.cli import backend, bench, demo, proxy

app = typer.Typer(
    name="meshctl",
    help="A service mesh that installs with pip.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"meshctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """A service mesh that installs with pip."""


app.command("proxy")(proxy.proxy)
app.command("demo")(demo.demo)
app.command("bench")(bench.bench)
app.command("backend")(backend.backend)


def main() -> None:
    """Console-script entry point."""
    app()
