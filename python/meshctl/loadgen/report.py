"""Render a benchmark report: a table for people, a PNG for reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table


def table(report: dict[str, Any]) -> Table:
    lat = report["latency_ms"]
    errors = report["errors"]
    mode = f"open loop at {report['target_rps']:g} rps" if report["loop"] == "open" else "closed loop"
    t = Table(title=f"{report['url']}  ({report['protocol']}, {report['connections']} connections, {mode})")
    for col in ("requests", "rps", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"):
        t.add_column(col, justify="right")
    t.add_row(
        str(report["requests"]),
        f"{report['rps']:.0f}",
        *(f"{lat[k]:.3f}" for k in ("p50", "p90", "p99", "p99.9", "max")),
        str(errors["total"]),
    )
    return t


def error_lines(report: dict[str, Any]) -> list[str]:
    e = report["errors"]
    kinds = ("connect", "timeout", "io", "status_4xx", "status_5xx")
    return [f"{k}: {e[k]}" for k in kinds if e[k]]


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency by percentile, log-scaled toward the tail (HdrHistogram style)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError("--plot needs matplotlib: pip install 'meshctl[plot]'") from e
    points = [(q, ms) for q, ms in report["distribution"] if q < 100.0]
    xs = [1.0 / (1.0 - q / 100.0) for q, _ in points]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(xs, [ms for _, ms in points], marker=".", linewidth=1.5)
    ax.set_xscale("log")
    ticks = [1, 2, 10, 100, 1000, 10000, 100000]
    ax.set_xticks(ticks, ["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    ax.set_xlim(1, max(xs[-1], 10))
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{report['url']}: {report['rps']:.0f} rps, {report['loop']} loop")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
