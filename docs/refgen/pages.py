"""Which generated page is made by which generator (site path -> function returning Markdown)."""

from __future__ import annotations

from collections.abc import Callable

from refgen import api, checks, cli, config

PAGES: dict[str, Callable[[], str]] = {
    "reference/cli.md": cli.render,
    "reference/api.md": api.render,
    "reference/dataplane-config.md": config.render,
    "reference/check-codes.md": checks.render,
}
