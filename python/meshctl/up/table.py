"""The status table of ``meshctl up`` (and ``meshctl demo``): one row per app instance."""

from __future__ import annotations

from typing import Any

from rich.table import Table

COLUMNS = ("app", "service", "app port", "inbound port", "outbound ports", "state", "ready")


def status_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title)
    for col in COLUMNS:
        table.add_column(col, justify="right" if col.endswith("port") else "left")
    for r in rows:
        outbound = ", ".join(f"{name} :{port}" for name, port in r["outbound"].items()) or "-"
        table.add_row(
            r["app"], r["service"], str(r["app_port"]), str(r["inbound_port"]), outbound, r["state"], r["ready"]
        )
    return table
