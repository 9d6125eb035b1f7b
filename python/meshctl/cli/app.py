"""The typer app behind ``meshctl``: one module per verb group, each imported
only when its verb runs (``meshctl.cli.lazy``): ``--help`` and ``--version``
stay under 150 ms. A new verb is one line: ``lazy(app, "verb", "meshctl.cli.module:function")``
(a function, or a typer app for a group of verbs such as ``ca``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meshctl.cli.lazy import app as _app
from meshctl.cli.lazy import lazy

app = _app(
    name="meshctl",
    help="A service mesh that installs with pip.",
    no_args_is_help=True,
)


def _version(value: bool) -> None:
    if value:
        from meshctl import __version__

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


lazy(app, "demo", "meshctl.cli.demo:demo")
lazy(app, "up", "meshctl.cli.up:up")
lazy(app, "bench", "meshctl.cli.bench:bench")
lazy(app, "backend", "meshctl.cli.backend:backend")
lazy(app, "control-plane", "meshctl.cli.control_plane:control_plane")

# The control plane's user-facing verbs (their shared options in meshctl.cli.options).
lazy(app, "apply", "meshctl.cli.resources:apply")
lazy(app, "get", "meshctl.cli.resources:get")
lazy(app, "delete", "meshctl.cli.resources:delete")
lazy(app, "history", "meshctl.cli.revisions:history")
lazy(app, "diff", "meshctl.cli.revisions:diff")
lazy(app, "rollback", "meshctl.cli.revisions:rollback")
lazy(app, "explain", "meshctl.cli.explain:explain")
lazy(app, "status", "meshctl.cli.status:status")
lazy(app, "check", "meshctl.cli.check:check")
lazy(app, "tap", "meshctl.cli.tap:tap")
lazy(app, "proxy-config", "meshctl.cli.proxy_config:proxy_config")
lazy(app, "stat", "meshctl.cli.stat:stat")
lazy(app, "top", "meshctl.cli.stat:top")
lazy(app, "edges", "meshctl.cli.stat:edges")
lazy(app, "prometheus-config", "meshctl.cli.prometheus:prometheus_config")
lazy(app, "traces", "meshctl.cli.traces:traces")
lazy(app, "trace", "meshctl.cli.traces:trace")
lazy(app, "version", "meshctl.cli.version:version")
lazy(app, "ca", "meshctl.cli.ca:app")
lazy(app, "token", "meshctl.cli.tokens:app")


def _lean(verb: str, summary: str) -> None:
    """List an argparse verb (routed before typer loads: meshctl.cli.LEAN_VERBS) in the help."""

    def run(ctx: typer.Context) -> None:
        import importlib

        from meshctl.cli import LEAN_VERBS

        raise typer.Exit(importlib.import_module(LEAN_VERBS[verb]).main(list(ctx.args)))

    settings = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
    app.command(verb, help=f"{summary} (see `meshctl {verb} --help`).", context_settings=settings)(run)


_lean("proxy", "Run the data plane in the foreground")
_lean("gateway", "Run the mesh's ingress gateway for a Gateway resource")
_lean("run", "Run an app behind its sidecar: the app starts once the sidecar is ready")
_lean("iptables", "Install the transparent-interception rules, print them or clean them up")
