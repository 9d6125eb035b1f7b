"""The few Markdown pieces every generator writes: inline text that stays literal, code, tables."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# A code span (kept as is) or one character Markdown or HTML would take for syntax.
_INLINE = re.compile(r"(``.+?``|`[^`]+`)|([\\*_<>|\[\]])")
_ESCAPES = {"<": "&lt;", ">": "&gt;", "|": "&#124;"}


def text(value: str | None) -> str:
    """Prose from a docstring or help string, on one line, rendered literally: code spans the
    author wrote in backticks stay code, everything else is escaped."""
    if not value:
        return ""
    flat = " ".join(value.split())

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            # Inside a table a pipe would end the cell even in a code span.
            return m.group(1).replace("|", "\\|")
        ch = m.group(2)
        return _ESCAPES.get(ch, "\\" + ch)

    return _INLINE.sub(one, flat)


def code(value: str) -> str:
    """An inline code span holding `value` exactly (table-safe)."""
    ticks = "``" if "`" in value else "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{ticks}{pad}{value.replace('|', chr(92) + '|')}{pad}{ticks}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table; cells are already-rendered Markdown."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def anchor(prefix: str, name: str) -> str:
    """A stable HTML id for a heading (attr_list's `{#id}`), from any name."""
    return prefix + "-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
