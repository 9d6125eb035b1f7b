"""The ``meshctl`` command.

``meshctl proxy`` is what every sidecar runs (and ``meshctl gateway`` every
ingress gateway, ``meshctl run`` every app's supervisor), so it starts without
the interactive CLI stack (typer, rich): a proxy should cost the memory of the
data plane, not of a terminal UI. Every other verb goes through the typer app.
"""

from __future__ import annotations

import sys

#: Verbs parsed with argparse, routed here before typer loads: the processes that stay running
#: (a sidecar, a gateway, an app's supervisor) and root's iptables tool. Each module has `main(argv) -> int`.
LEAN_VERBS = {
    "proxy": "meshctl.cli.proxy",
    "gateway": "meshctl.cli.gateway",
    "run": "meshctl.cli.run",
    "iptables": "meshctl.cli.iptables",
}


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    import importlib

    args = sys.argv[1:] if argv is None else argv
    if args[:1] and args[0] in LEAN_VERBS:
        sys.exit(importlib.import_module(LEAN_VERBS[args[0]]).main(args[1:]))
    from meshctl.cli.app import app

    app(args)
