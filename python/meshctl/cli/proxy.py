"""``meshctl proxy``: run the data plane in the foreground from a config file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meshctl import BindError, ConfigError
from meshctl.cli import logs
from meshctl.sidecar.file_config import FileConfigProxy


def proxy(
    config: Annotated[Path, typer.Option("--config", "-c", help="Data-plane config (YAML or JSON).")],
    workers: Annotated[int, typer.Option(help="Worker threads (0: one per CPU).")] = 0,
    grace: Annotated[float, typer.Option(help="Seconds to drain in-flight work on SIGINT/SIGTERM.")] = 10.0,
    watch: Annotated[bool, typer.Option(help="Reload when the file changes (SIGHUP always reloads).")] = True,
) -> None:
    """Run the data plane in the foreground. SIGINT/SIGTERM drain and exit; SIGHUP reloads."""
    log = logs.setup()
    try:
        runner = FileConfigProxy(config, workers=workers or None, grace=grace, watch=watch)
    except (OSError, ConfigError) as e:
        log.error("%s", e)
        raise typer.Exit(2) from None
    try:
        runner.start()
    except BindError as e:
        log.error("%s", e)
        raise typer.Exit(1) from None
    runner.run_until_signalled()
