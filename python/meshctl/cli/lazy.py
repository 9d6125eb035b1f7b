"""The typer app's machinery: verbs imported when they run, and one help layout.

``meshctl --version`` and every ``--help`` answer within 150 ms (issue 13,
item 14b), so the app loads no verb module it does not run: ``app.py`` names
each verb by where it lives (``lazy(app, "get", "meshctl.cli.resources:get")``)
and :class:`Group` imports that module and builds its click command when the
verb is called, asked for help or completed. A verb registered the eager way
(``app.command("x")(module.fn)``, ``app.add_typer(module.app, name="x")``)
still works, only at the cost of its import on every start.

Help is written by ``meshctl.cli.helptext`` for every command, whichever way
it was registered (:func:`adopt`): typer's rich help imports rich and markdown
(~150 ms) and shows type placeholders (``<str>``, ``<bool>``).
"""

from __future__ import annotations

import importlib
from enum import Enum
from typing import Any, ClassVar

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup
from typer.models import CommandInfo

from meshctl.cli import coerce, helptext

# === help ===


def _default(p: Any) -> str | None:
    show = getattr(p, "show_default", True)
    if isinstance(show, str):
        return str(show)
    value = p.default
    if show is False or value is None or callable(value) or value is False or value in ((), []):
        return None
    if getattr(p, "is_flag", False) and p.secondary_opts:
        return str(p.opts[-1] if value else p.secondary_opts[0])
    if isinstance(value, list | tuple):
        return ", ".join(str(getattr(v, "value", v)) for v in value)
    return str(value.value if isinstance(value, Enum) else value)


def _placeholder(p: Any) -> str:
    if p.metavar:
        return str(p.metavar)
    described = getattr(p, "type_descriptor", None)  # typer's; click's own options have `type`
    choices = (
        described.choices
        if described is not None and described.is_choice
        else getattr(getattr(p, "type", None), "choices", None)
    )
    if choices:
        return "|".join(str(getattr(c, "value", c)) for c in choices)
    if p.param_type_name == "argument":
        return (p.name or "").upper()
    return "" if p.is_flag else max(p.opts, key=len).lstrip("-").upper().replace("-", "_")


def _bounds(p: Any) -> str | None:
    low, high = getattr(p, "min", None), getattr(p, "max", None)
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"at least {low}"
    return None if high is None else f"at most {high}"


def _row(p: Any) -> tuple[str, str]:
    if p.param_type_name == "argument":
        name = _placeholder(p) + ("..." if p.nargs != 1 else "")
        return name, helptext.join_help(p.help, helptext.extras(default=_default(p), required=p.required))
    name = helptext.names(p.opts) + "".join(f" / {o}" for o in p.secondary_opts)
    placeholder = _placeholder(p)
    envvar = p.envvar if isinstance(p.envvar, str) else None
    extra = helptext.extras(default=_default(p), envvar=envvar, required=p.required, bounds=_bounds(p))
    return (f"{name} {placeholder}" if placeholder else name), helptext.join_help(p.help, extra)


def _usage(command: TyperCommand | TyperGroup, ctx: typer.Context) -> str:
    pieces = [ctx.command_path, "[OPTIONS]"]
    for p in command.get_params(ctx):
        if p.param_type_name == "argument":
            piece = _row(p)[0]
            pieces.append(piece if p.required else f"[{piece}]")
    if isinstance(command, TyperGroup):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def _help_page(command: TyperCommand | TyperGroup, ctx: typer.Context) -> str:
    arguments = helptext.Section("Arguments")
    panels: dict[str, helptext.Section] = {"Options": helptext.Section("Options")}
    for p in command.get_params(ctx):
        if getattr(p, "hidden", False):
            continue
        if p.param_type_name == "argument":
            arguments.rows.append(_row(p))
        else:
            panel = getattr(p, "rich_help_panel", None) or "Options"
            panels.setdefault(panel, helptext.Section(panel)).rows.append(_row(p))
    commands = helptext.Section("Commands")
    if isinstance(command, TyperGroup):
        for name in command.list_commands(ctx):
            commands.rows += [(name, short)] if (short := _short_help(command, ctx, name)) is not None else []
    return helptext.render(_usage(command, ctx), command.help, [arguments, *panels.values(), commands])


def _short_help(group: TyperGroup, ctx: Any, name: str) -> str | None:
    """A verb's line in its group's help (None: hidden). A lazy verb's is its docstring's first
    sentence, read without building its command (typer inspects every parameter to build one)."""
    target = getattr(group, "lazy", {}).get(name) if name not in group.commands else None
    if target is None:
        sub = group.get_command(ctx, name)
        return None if sub is None or sub.hidden else str(sub.get_short_help_str(200))
    module, _, attribute = target.partition(":")
    obj = getattr(importlib.import_module(module), attribute)
    doc = obj.info.help if isinstance(obj, typer.Typer) else obj.__doc__
    text = " ".join(str(doc or "").split("\n\n")[0].split())
    return text.split(". ")[0].rstrip(".") + "." if text else ""


class Command(TyperCommand):
    """A verb, with meshctl's help layout and coercion without pydantic (``meshctl.cli.coerce``)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        formatter.write(_help_page(self, ctx))

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        formatter.write(f"Usage: {_usage(self, ctx)}\n")

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        coerce.install(self.get_params(ctx))
        return super().parse_args(ctx, args)


class Group(TyperGroup):
    """A group of verbs, some imported only when used (`lazy`: name -> "module:attribute")."""

    lazy: ClassVar[dict[str, str]] = {}

    def format_help(self, ctx: Any, formatter: Any) -> None:
        formatter.write(_help_page(self, ctx))

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        formatter.write(f"Usage: {_usage(self, ctx)}\n")

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        coerce.install(self.get_params(ctx))
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in self.lazy:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            command = _click_command(cmd_name, getattr(importlib.import_module(module), attribute))
            self.commands[cmd_name] = command
        return adopt(command) if command is not None else None


def _click_command(name: str, target: Any) -> Any:
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)  # not get_command: that adds the completion options again
        command.name = name
        return command
    info = CommandInfo(name=name, callback=target, cls=Command)
    return typer.main.get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode=None)


def adopt(command: Any) -> Any:
    """Give a command registered the plain typer way (and its sub-commands) meshctl's help and
    plain error messages. Only the class changes: ours add no state to typer's."""
    if type(command) is TyperCommand:
        command.__class__ = Command
    elif type(command) is TyperGroup:
        command.__class__ = Group
    if isinstance(command, TyperCommand | TyperGroup):
        command.rich_markup_mode = None
    return command


# === the app ===


def app(**kw: Any) -> typer.Typer:
    """A typer app whose verbs may be registered lazily (:func:`lazy`)."""
    group = type("MeshctlGroup", (Group,), {"lazy": {}})
    return typer.Typer(cls=group, rich_markup_mode=None, pretty_exceptions_enable=False, **kw)


def lazy(app: typer.Typer, name: str, target: str) -> None:
    """Register verb `name`, the function or typer app at "module:attribute", imported when used."""
    group = app.info.cls
    assert isinstance(group, type) and issubclass(group, Group), "lazy() needs an app made by lazy.app()"
    group.lazy[name] = target
