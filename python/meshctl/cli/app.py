"""The typer app behind ``meshctl``: one module per verb group."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meshctl import __version__
from meshctl.cli import (
    backend,
    bench,
    ca,
    check,
    control_plane,
    demo,
    explain,
    prometheus,
    proxy_config,
    resources,
    revisions,
    stat,
    status,
    tap,
    tokens,
    traces,
)

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
    ca_file: Annotated[
        Path | None,
        typer.Option(envvar="MESHCTL_CA_FILE", help="Trust an https:// control plane by this PEM CA bundle."),
    ] = None,
    ca_hash: Annotated[
        str | None,
        typer.Option(
            envvar="MESHCTL_CA_HASH",
            metavar="sha256:HEX",
            help="Trust an https:// control plane whose CA has this pin (SHA-256 of its DER SubjectPublicKeyInfo).",
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(envvar="MESHCTL_INSECURE", help="Allow a plain http:// control plane on another host."),
    ] = False,
) -> None:
    """A service mesh that installs with pip."""
    if ca_file is not None or ca_hash is not None or insecure:
        from meshctl.cli import api  # (only then: --help stays fast)

        api.trust_options.ca_file, api.trust_options.ca_hash, api.trust_options.insecure = ca_file, ca_hash, insecure


app.command("demo")(demo.demo)
app.command("bench")(bench.bench)
app.command("backend")(backend.backend)
app.command("control-plane")(control_plane.control_plane)

# The control plane's user-facing verbs (their shared options in meshctl.cli.options).
app.command("apply")(resources.apply)
app.command("get")(resources.get)
app.command("delete")(resources.delete)
app.command("history")(revisions.history)
app.command("diff")(revisions.diff)
app.command("rollback")(revisions.rollback)
app.command("explain")(explain.explain)
app.command("status")(status.status)
app.command("check")(check.check)
app.command("tap")(tap.tap)
app.command("proxy-config")(proxy_config.proxy_config)
app.command("stat")(stat.stat)
app.command("top")(stat.top)
app.command("edges")(stat.edges)
app.command("prometheus-config")(prometheus.prometheus_config)
app.command("traces")(traces.traces)
app.command("trace")(traces.trace)
app.add_typer(ca.app, name="ca")
app.add_typer(tokens.app, name="token")


@app.command(
    "proxy",
    help="Run the data plane in the foreground (see `meshctl proxy --help`).",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def _proxy(ctx: typer.Context) -> None:
    # Normally routed before typer loads (meshctl.cli.main); kept here so help lists it.
    from meshctl.cli.proxy import main as proxy_main

    raise typer.Exit(proxy_main(list(ctx.args)))


@app.command(
    "gateway",
    help="Run the mesh's ingress gateway for a Gateway resource (see `meshctl gateway --help`).",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def _gateway(ctx: typer.Context) -> None:
    # Routed before typer loads, as proxy is (meshctl.cli.main); kept here so help lists it.
    from meshctl.cli.gateway import main as gateway_main

    raise typer.Exit(gateway_main(list(ctx.args)))
