"""The CLI reference, walked from the typer app's command tree: every verb (and sub-verb) with its
usage, help, arguments and options as ``meshctl VERB --help`` shows them.

``proxy``, ``gateway``, ``run`` and ``iptables`` parse their own flags with argparse (they start
without typer, see ``meshctl.cli.LEAN_VERBS``); their pages come from those parsers.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator
from typing import Any

from meshctl.cli import LEAN_VERBS
from refgen.markdown import anchor, code, table, text

#: Verbs whose flags an argparse parser owns: verb -> the module with `parser()`.
ARGPARSE_VERBS = LEAN_VERBS


def root_command() -> Any:
    """The click command tree behind `meshctl`."""
    import typer.main

    from meshctl.cli.app import app

    return typer.main.get_command(app)


def walk(command: Any, path: tuple[str, ...] = ("meshctl",), parent: Any = None) -> Iterator[tuple[str, Any, Any]]:
    """(full name, command, its context) for the root and every verb below it, depth first, in the
    order `--help` lists them."""
    ctx = command.context_class(command, info_name=path[-1], parent=parent)  # click's, or typer's copy
    yield " ".join(path), command, ctx
    if not hasattr(command, "list_commands"):
        return
    for name in command.list_commands(ctx):
        # get_command, not .commands: a group may load its verbs lazily.
        sub = command.get_command(ctx, name)
        if sub is not None and not getattr(sub, "hidden", False):
            yield from walk(sub, (*path, name), ctx)


def verbs() -> list[str]:
    """Every verb's full name (`meshctl ca rotate start`), the root left out."""
    return [name for name, _, _ in walk(root_command())][1:]


def render() -> str:
    out = [
        "# CLI reference\n\n",
        "Generated from the `meshctl` command tree when this site was built: each verb's help, "
        "arguments and options, as `meshctl VERB --help` prints them.\n",
    ]
    entries = list(walk(root_command()))
    out.append("| verb | what it does |\n|---|---|\n")
    out += [f"| [{code(name)}](#{anchor('cli', name)}) | {text(_summary(cmd))} |\n" for name, cmd, _ in entries[1:]]
    out.append("\n")
    for name, cmd, ctx in entries:
        out.append(_section(name, cmd, ctx))
    return "".join(out)


def _summary(command: Any) -> str:
    help_text = command.help or getattr(command, "short_help", None) or ""
    return help_text.strip().split("\n\n")[0]


def _section(name: str, command: Any, ctx: Any) -> str:
    verb = name.split(" ", 1)[1] if " " in name else ""
    module = ARGPARSE_VERBS.get(verb)
    parser = getattr(importlib.import_module(module), "parser", None) if module else None
    if parser is not None:
        return _argparse_section(name, parser())
    depth = "##" if name.count(" ") <= 1 else "###"
    parts = [f"{depth} {name} {{#{anchor('cli', name)}}}\n\n"]
    parts.append(f"```text\n{_usage(name, command)}\n```\n\n")
    if command.help:
        parts.append(_paragraphs(command.help))
    if hasattr(command, "list_commands"):
        rows = [
            [
                f"[{code(name + ' ' + sub)}](#{anchor('cli', name + ' ' + sub)})",
                text(_summary(command.get_command(ctx, sub))),
            ]
            for sub in command.list_commands(ctx)
        ]
        parts.append("Subcommands:\n\n" + table(["verb", "what it does"], rows) + "\n")
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
    if arguments:
        parts.append("Arguments:\n\n" + table(["argument", "description"], [_record(p) for p in arguments]))
        parts.append("\n")
    if options:
        parts.append("Options:\n\n" + table(["option", "description"], [_record(p) for p in options]))
        parts.append("\n")
    return "".join(parts)


def _usage(name: str, command: Any) -> str:
    pieces = [name, "[OPTIONS]"]
    for p in command.params:
        if p.param_type_name == "argument":
            piece = _placeholder(p) + ("..." if p.nargs == -1 else "")
            pieces.append(piece if p.required else f"[{piece}]")
    if hasattr(command, "list_commands"):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def _record(param: Any) -> list[str]:
    """(names with their placeholder, help with default and environment variable) for a table row."""
    names = ", ".join([*param.opts, *param.secondary_opts]) if param.param_type_name == "option" else ""
    placeholder = _placeholder(param)
    flags = f"{names} {placeholder}".strip() if names else placeholder
    extra = []
    envvar = param.envvar if isinstance(param.envvar, str) else None
    if envvar:
        extra.append(f"env {envvar}")
    default = _default(param)
    if default is not None:
        extra.append(f"default: {default}")
    if param.required and param.param_type_name == "option":
        extra.append("required")
    help_text = (getattr(param, "help", None) or "").strip()
    return [code(flags), text(help_text + (f" [{'; '.join(extra)}]" if extra else ""))]


def _placeholder(param: Any) -> str:
    if param.metavar:
        return str(param.metavar)
    # typer describes its own parameters' types (type_descriptor); plain click ones carry `type`.
    described = getattr(param, "type_descriptor", None)
    choices = described.choices if described is not None and getattr(described, "is_choice", False) else None
    choices = choices or getattr(getattr(param, "type", None), "choices", None)
    if choices:
        return "|".join(str(getattr(c, "value", c)) for c in choices)
    if param.param_type_name == "argument":
        return (param.name or "").upper()
    if getattr(param, "is_flag", False):
        return ""
    return str(max(param.opts, key=len)).lstrip("-").upper().replace("-", "_")


def _default(param: Any) -> str | None:
    show = getattr(param, "show_default", True)
    if isinstance(show, str):
        return show
    value = param.default
    if show is False or value is None or value is False or callable(value) or value in ((), []):
        return None
    if isinstance(value, list | tuple):
        return ", ".join(str(getattr(v, "value", v)) for v in value)
    return str(getattr(value, "value", value))


def _paragraphs(value: str) -> str:
    # click's \b marks a paragraph not to rewrap; the page keeps paragraphs and flows the rest.
    paras = [p.replace("\b", "").strip() for p in value.strip().split("\n\n")]
    return "".join(text(p) + "\n\n" for p in paras if p)


# === argparse verbs ===


def _argparse_section(name: str, parser: argparse.ArgumentParser) -> str:
    parts = [f"## {name} {{#{anchor('cli', name)}}}\n\n"]
    usage = parser.format_usage().replace("usage: ", "", 1).strip()
    parts.append(f"```text\n{usage}\n```\n\n")
    if parser.description:
        parts.append(_paragraphs(parser.description))
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS]
        if not actions:
            continue
        title = (group.title or "options").rstrip(":")
        title = "Options" if title in ("options", "optional arguments") else title[0].upper() + title[1:]
        rows = [[code(_flags(a)), text(_argparse_help(a, parser))] for a in actions]
        parts.append(f"{title}:\n\n" + table(["option", "description"], rows) + "\n")
    return "".join(parts)


def _flags(action: argparse.Action) -> str:
    names = ", ".join(action.option_strings) or action.dest
    if action.nargs == 0:
        return names
    metavar = action.metavar or (action.dest.upper() if action.option_strings else "")
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if action.choices and not action.metavar:
        metavar = "{" + ",".join(str(c) for c in action.choices) + "}"
    return f"{names} {metavar}".strip()


def _argparse_help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    help_text = action.help or ""
    if "%(" in help_text:
        help_text = help_text % {**vars(action), "prog": parser.prog}
    default = action.default
    shown = default not in (None, False, argparse.SUPPRESS) and default != [] and default != {}
    if shown and action.nargs != 0 and "%(default)" not in (action.help or ""):
        help_text += f" [default: {default}]"
    return help_text.strip()
