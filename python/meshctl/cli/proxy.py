"""``meshctl proxy``: run the data plane in the foreground from a config file.

Parsed with argparse, not typer: this is the sidecar's process and it stays
lean (see ``meshctl.cli.main``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from meshctl import BindError, ConfigError
from meshctl.cli import logs
from meshctl.sidecar.file_config import FileConfigProxy

HELP = "Run the data plane in the foreground. SIGINT/SIGTERM drain and exit; SIGHUP reloads."


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshctl proxy", description=HELP)
    p.add_argument("--config", "-c", type=Path, required=True, help="Data-plane config (YAML or JSON).")
    p.add_argument("--workers", type=int, default=0, help="Worker threads (0: one per CPU).")
    p.add_argument("--grace", type=float, default=10.0, help="Seconds to drain in-flight work on SIGINT/SIGTERM.")
    p.add_argument(
        "--watch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Reload when the file changes (SIGHUP always reloads).",
    )
    return p


def main(argv: list[str]) -> int:
    """Run until signalled; the exit code (0 after a clean drain, 1 bind failure, 2 bad config)."""
    args = parser().parse_args(argv)
    log = logs.setup()
    try:
        runner = FileConfigProxy(args.config, workers=args.workers or None, grace=args.grace, watch=args.watch)
    except (OSError, ConfigError) as e:
        log.error("%s", e)
        return 2
    try:
        runner.start()
    except BindError as e:
        log.error("%s", e)
        return 1
    runner.run_until_signalled()
    return 0
