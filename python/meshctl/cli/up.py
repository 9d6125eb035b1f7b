"""``meshctl up -f apps.yaml``: a local mesh from one compose file (see
``meshctl.up.spec`` for the format): an embedded control plane, every app
under ``meshctl run``, their output interleaved with each line prefixed by its
app's name, one status table once all is ready, and Ctrl-C stopping callers
before what they call, then the control plane.

Exit codes: 0 after a clean stop, 2 for a bad file (each problem naming its
field path) or resources the control plane refused, 1 when the mesh did not
come up (an app exited first, or the readiness deadline passed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meshctl.cli.api import fail


def up(
    file: Annotated[Path, typer.Option("--file", "-f", help="The compose file (YAML): controlPlane, apps, resources.")],
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="Where the control plane's database, tokens, caches and up.json go (kept).",
            show_default="a temporary directory, removed at exit",
        ),
    ] = None,
    grace: Annotated[float, typer.Option(help="Seconds each sidecar drains when its app stops.", min=0)] = 2.0,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every sidecar in sync and every app listening.", min=1)
    ] = 120.0,
) -> None:
    """Run a local mesh from a compose file: control plane, every app behind its sidecar, prefixed logs
    and a status table; Ctrl-C stops it in order."""
    from rich.console import Console

    from meshctl.up.controlplane import Interrupted
    from meshctl.up.procs import ConsoleOutput
    from meshctl.up.runner import Up
    from meshctl.up.spec import SpecError, load
    from meshctl.up.table import status_table

    try:
        spec = load(file)
    except SpecError as e:
        fail(str(e))
    names = [*(f"{a}#{s.replicas}" if s.replicas > 1 else a for a, s in spec.apps.items()), "control-plane"]
    output = ConsoleOutput(width=max(map(len, names)))
    mesh = Up(
        spec,
        output,
        workdir=workdir,
        progress=lambda line: output.line("up", line),
        grace=grace,
        ready_timeout=ready_timeout,
    )
    mesh.handle_signals()
    code = 0
    try:
        mesh.start()
        console = Console()
        if not console.is_terminal:  # a pipe or a file: no wrapping (rich would take 80 columns)
            console = Console(width=200)
        with console.capture() as table:
            console.print(status_table(mesh.rows()))
        output.stream.write(table.get())
        output.line("up", f"all up; work dir {mesh.workdir}; Ctrl-C stops")
        mesh.wait(on_exit=lambda inst, status: output.line("up", f"{inst.name} exited with code {status}"))
    except Interrupted:
        pass
    except SpecError as e:
        output.line("up", f"error: {e}")
        code = 2
    except (RuntimeError, TimeoutError) as e:
        output.line("up", f"error: {e}")
        code = 1
    finally:
        output.line("up", "stopping: callers first, then their upstreams, then the control plane")
        mesh.stop()
        output.line("up", "stopped")
    raise typer.Exit(code)
