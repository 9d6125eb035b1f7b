"""The ``meshctl`` command.

``meshctl proxy`` is what every sidecar runs (and ``meshctl gateway`` every
ingress gateway), so it starts without the interactive CLI stack (typer,
rich): a proxy should cost the memory of the data plane, not of a terminal
UI. Every other verb goes through the typer app.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["proxy"]:
        from meshctl.cli.proxy import main as proxy_main

        sys.exit(proxy_main(args[1:]))
    if args[:1] == ["gateway"]:
        from meshctl.cli.gateway import main as gateway_main

        sys.exit(gateway_main(args[1:]))
    from meshctl.cli.app import app

    app(args)
