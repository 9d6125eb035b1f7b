"""One look for every verb's ``--help``, typer's and argparse's alike.

The typer verbs (through ``meshctl.cli.lazy``) and the lean, argparse-parsed
``proxy`` and ``gateway`` describe their options as rows of this module, and
it lays them out the same way:

    Usage: meshctl get [OPTIONS] KIND [NAME]

      What the verb does.

    Options:
      -o, --output table|yaml|json  What it is for.  [default: table]

Value placeholders name the value (``URL``, ``FILE``, ``NAMESPACE``) or list the
choices, never a type (``<str>``, ``<bool>``); flags have none. Defaults, env
vars and bounds are shown one way: ``[default: X]`` after the help. Standard
library only: the proxy imports it.
"""

from __future__ import annotations

import argparse
import os
import textwrap
from collections.abc import Iterable, Sequence

#: (not `typing`: a proxy would import it for annotations alone, 0.4 MB; mypy reads this as typing's)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


class Section:
    """A titled list of (names and placeholder, help) rows. (A plain class: `dataclasses` imports
    `inspect`, most of a megabyte in every proxy.)"""

    def __init__(self, title: str, rows: list[tuple[str, str]] | None = None) -> None:
        self.title = title
        self.rows = rows if rows is not None else []


def width() -> int:
    """The terminal's width ($COLUMNS first), between 60 and 120; 100 when there is no terminal."""
    # (as shutil.get_terminal_size, which a proxy would import, with bz2 and lzma, only for this)
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(1).columns
        except OSError:
            columns = 0
    return max(60, min(columns or 100, 120))


def extras(
    *,
    default: str | None = None,
    envvar: str | None = None,
    required: bool = False,
    bounds: str | None = None,
) -> str:
    """The bracket after an option's help: `[env var: X; default: Y]`."""
    parts = []
    if envvar:
        parts.append(f"env var: {envvar}")
    if default is not None and default != "":
        parts.append(f"default: {default}")
    if bounds:
        parts.append(bounds)
    if required:
        parts.append("required")
    return f"[{'; '.join(parts)}]" if parts else ""


def join_help(text: str | None, extra: str) -> str:
    text = " ".join((text or "").split())
    return f"{text}  {extra}" if text and extra else text or extra


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in textwrap.dedent(text).strip().split("\n\n") if p.strip()]


def render(usage: str, description: str | None, sections: Iterable[Section], cols: int | None = None) -> str:
    """The whole help page."""
    cols = cols or width()
    out = [f"Usage: {usage}", ""]
    for paragraph in _paragraphs(description or ""):
        out += [*textwrap.wrap(paragraph, cols - 2, initial_indent="  ", subsequent_indent="  "), ""]
    sections = [s for s in sections if s.rows]
    names = [len(n) for s in sections for n, _ in s.rows]
    # One column for every section; an over-long name puts its help on the next line.
    column = min(max(names, default=0), 34) + 4
    for s in sections:
        out.append(f"{s.title}:")
        for name, text in s.rows:
            lines = textwrap.wrap(text, max(cols - column, 30)) or [""]
            if len(name) + 4 > column:
                out.append(f"  {name}")
                out += [" " * column + line for line in lines if line]
            else:
                out.append(f"  {name}".ljust(column) + lines[0])
                out += [" " * column + line for line in lines[1:]]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# === argparse ===


def _metavar(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "|".join(str(c) for c in action.choices)
    return action.dest.upper()


def _row(action: argparse.Action) -> tuple[str, str]:
    longs = [o for o in action.option_strings if o.startswith("--")]
    shorts = [o for o in action.option_strings if not o.startswith("--")]
    if isinstance(action, argparse.BooleanOptionalAction):
        name = " / ".join(longs)
        default = None if action.default is None else longs[0] if action.default else longs[1]
    else:
        name = ", ".join([*shorts, *longs])
        shown = (
            action.default is not None and action.default is not False and action.default not in ([], argparse.SUPPRESS)
        )
        default = str(action.default) if shown and action.nargs != 0 else None
    metavar = _metavar(action)
    return (f"{name} {metavar}" if metavar else name), join_help(
        action.help, extras(default=default, required=action.required)
    )


def _usage_piece(action: argparse.Action) -> str:
    metavar = _metavar(action)
    name = max(action.option_strings, key=len)
    return f"{name} {metavar}" if metavar else name


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter told the width: asked for none, it calls `shutil.get_terminal_size`,
    and argparse makes one for every `add_argument` (shutil brings bz2 and lzma: 0.5 MB)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=width())


class ArgumentParser(argparse.ArgumentParser):
    """argparse with meshctl's help layout (the proxy and gateway verbs parse with it)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kw)

    def format_usage(self) -> str:
        pieces = [self.prog]
        for group in self._mutually_exclusive_groups:
            if group.required:
                pieces.append("(" + " | ".join(_usage_piece(a) for a in group._group_actions) + ")")
        grouped = {a for g in self._mutually_exclusive_groups for a in g._group_actions}
        pieces += [_usage_piece(a) for a in self._actions if a.required and a.option_strings and a not in grouped]
        pieces.append("[OPTIONS]")
        return f"Usage: {' '.join(pieces)}\n"

    def format_help(self) -> str:
        sections = []
        for group in self._action_groups:
            title = group.title or ""
            title = "Options" if title in ("options", "optional arguments") else title[:1].upper() + title[1:]
            rows = [_row(a) for a in group._group_actions if a.help is not argparse.SUPPRESS]
            sections.append(Section(title, rows))
        return render(self.format_usage().removeprefix("Usage: ").strip(), self.description, sections)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.format_usage()}Try '{self.prog} --help' for help.\n\nError: {message}\n")


def argparse_parser(prog: str, description: str, **kw: Any) -> ArgumentParser:
    """An ArgumentParser whose --help reads like the typer verbs' (help first among options)."""
    p = ArgumentParser(prog=prog, description=description, add_help=False, **kw)
    p.add_argument("--help", "-h", action="help", help="Show this message and exit.")
    return p


def names(decls: Sequence[str]) -> str:
    """Option names short first: `-o, --output`."""
    return ", ".join(sorted(decls, key=lambda d: d.startswith("--")))
