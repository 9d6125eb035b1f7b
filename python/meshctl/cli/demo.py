"""``meshctl demo``: a whole mesh on this machine — control plane, three
services behind sidecars, a canary — with traffic through it and what the
sidecars measured; then resilience: an instance killed under load, and a
fault injected and rolled back."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from meshctl.demo.mesh import MeshDemo


def demo(
    requests: Annotated[int, typer.Option(help="Requests to send into the frontend.")] = 3000,
    connections: Annotated[int, typer.Option(help="Keep-alive client connections.")] = 8,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the mesh running until Ctrl-C.")] = False,
    resilience: Annotated[
        bool, typer.Option(help="Then kill a pricing instance under load, and inject a 10 % abort fault.")
    ] = True,
) -> None:
    """Start a control plane, frontend -> catalog -> pricing (v1, v2) behind sidecars, a 90/10 canary,
    drive traffic with the built-in load generator, and print what each sidecar saw. Then scale pricing
    v1 to three instances, kill one with SIGKILL under load (no request fails), apply a 10 % abort
    fault to pricing's route (about 90 % succeed) and roll it back (100 % again)."""
    from rich.console import Console
    from rich.table import Table

    from meshctl.demo.mesh import MeshDemo
    from meshctl.loadgen.runner import run_bench

    console = Console()
    mesh = MeshDemo()
    try:
        mesh.start(progress=lambda line: console.print(f"  {line}"))
        entry = f"http://127.0.0.1:{mesh.entry_port}/items"
        console.print(f"sending {requests} requests to the frontend sidecar ({entry}) ...")
        report = run_bench(
            {"url": entry, "requests": requests, "connections": connections, "threads": 1},
            console=console,
            show_progress=console.is_terminal,
        )

        rows = mesh.report()
        table = Table(title="What each sidecar saw (inbound)")
        for col in ("instance", "requests", "success", "p50 ms", "p99 ms", "connections"):
            table.add_column(col, justify="left" if col == "instance" else "right")
        for row in rows:
            lat = row.get("latency_ms") or {}
            table.add_row(
                row["instance"],
                str(row["requests"]),
                f"{100 * row['success']:.1f}%",
                _ms(lat.get("p50")),
                _ms(lat.get("p99")),
                _tls(row["tls"]),
            )
        console.print(table)
        console.print(
            "between sidecars: mutual TLS 1.3 over HTTP/2, each side checking the other's SPIFFE ID "
            "(the frontend is PERMISSIVE: the load generator is outside the mesh)"
        )
        split = next((r["split"] for r in rows if "split" in r), {"v1": 0, "v2": 0})
        total = max(1, sum(split.values()))
        console.print(
            f"pricing canary (HTTPRoute pricing-canary, 90/10): v1 {100 * split['v1'] / total:.1f}%  "
            f"v2 {100 * split['v2'] / total:.1f}%"
        )
        lat = report["latency_ms"]
        ok = report["statuses"]["2xx"]
        console.print(
            f"client: {report['requests']} requests, {100 * ok / max(1, report['requests']):.1f}% ok, "
            f"{report['rps']:.0f} rps, p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms (three hops)"
        )
        resilient = not resilience or _resilience(console, mesh)
        if keep:
            done = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: done.set())
            signal.signal(signal.SIGTERM, lambda *_: done.set())
            console.print(f"running; try: curl -H 'x-canary: true' {entry}   (Ctrl-C stops)")
            tokens = mesh.workdir / "control-plane"
            console.print(f"control plane {mesh.cp_url}, admin token in {tokens}")
            reader = tokens / "reader.token"
            console.print(f"dashboard {mesh.cp_url}/ui/ (log in with {reader}; tap needs the admin token)")
            done.wait()
        if report["errors"]["total"] or ok != report["requests"]:
            console.print(f"[red]some requests failed: {report['errors']}[/]")
            raise typer.Exit(1)
        if not resilient:
            console.print("[red]requests failed in the resilience step where none should have[/]")
            raise typer.Exit(1)
    finally:
        console.print("stopping the mesh ...")
        mesh.stop()


def _resilience(console: Console, mesh: MeshDemo) -> bool:
    """The resilience step, printed; False when a request failed where none should have."""
    from meshctl.demo.resilience import ResilienceDemo
    from meshctl.loadgen.runner import run_bench

    console.rule("resilience")
    step = ResilienceDemo(
        mesh,
        load=lambda options: run_bench(options, console=console, show_progress=console.is_terminal),
        # Plain text: a bracket in it must not be taken for rich markup.
        progress=lambda line: console.print(f"  {line}", markup=False),
    )
    killed, faulted = step.run()
    return killed.load.failed == 0 and faulted.restored.failed == 0


def _tls(tls: dict[str, int]) -> str:
    """An inbound listener's mTLS connections, and plaintext ones it let in."""
    text = f"{tls['handshakes']} mTLS"
    return text + (f" + {tls['plaintext_accepted']} plain" if tls["plaintext_accepted"] else "")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
