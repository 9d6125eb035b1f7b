"""Option values turned into Python values without pydantic.

typer (0.29) coerces every parameter through a pydantic TypeAdapter, built on
first use: importing pydantic and building one costs ~200 ms, on every run of
every verb (the root group's own options are coerced too). The CLI's options
are plain (str, int, float, bool, Path, a choice, a list of those), and this
module coerces those with the standard library; anything else (a Path that must
exist, a tuple, a datetime) keeps typer's own coercion. :func:`install` is
called by ``meshctl.cli.lazy`` on every command before it parses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from typer._coercion import RuntimeParam
from typer._param_types import coerce_cli_choice

# The ParameterInfo settings only typer's coercion applies; a parameter using one keeps it.
_TYPER_ONLY = ("exists", "resolve_path", "writable", "clamp", "formats", "mode", "parser", "allow_dash", "path_type")
_TRUE, _FALSE = {"1", "true", "t", "yes", "y", "on"}, {"0", "false", "f", "no", "n", "off"}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError(f"{value!r} is not a valid boolean.")


def _number(kind: type, value: Any, low: Any, high: Any) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a valid {'integer' if kind is int else 'number'}.") from None
    if low is not None and number < low:
        raise ValueError(f"{value} is less than the minimum, {low}.")
    if high is not None and number > high:
        raise ValueError(f"{value} is more than the maximum, {high}.")
    return number


@dataclass(frozen=True)
class Plain(RuntimeParam):
    """str, int, float, bool, Path, a Literal or Enum choice, or a list of one of those."""

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        from typer import BadParameter

        annotation: Any = self.annotation
        try:
            if get_origin(annotation) is list:
                (element,) = get_args(annotation)
                return [self._one(element, v, ctx) for v in value]
            return self._one(annotation, value, ctx)
        except ValueError as e:
            raise BadParameter(str(e), ctx=ctx, param=param) from None

    def _one(self, annotation: Any, value: Any, ctx: Any) -> Any:
        info = self.parameter_info
        choices = _choices(annotation)
        if choices is not None:
            return coerce_cli_choice(value, choices=choices, case_sensitive=info.case_sensitive, ctx=ctx)
        if annotation is bool:
            return _bool(value)
        if annotation in (int, float):
            return _number(annotation, value, info.min, info.max)
        if annotation is Path:
            return Path(value)
        return str(value)


def _choices(annotation: Any) -> tuple[Any, ...] | None:
    from enum import Enum
    from typing import Literal

    if get_origin(annotation) is Literal:
        return get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return tuple(annotation)
    return None


def _plain(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        args = get_args(annotation)
        return len(args) == 1 and _plain(args[0])
    return annotation in (str, int, float, bool, Path) or _choices(annotation) is not None


def install(params: list[Any]) -> None:
    """Give each typer parameter of a plain type the standard-library coercion."""
    for p in params:
        described = getattr(p, "type_descriptor", None)
        if described is None or getattr(p, "_runtime_param", True) is not None:
            continue
        info = described.parameter_info
        plain = described.file_annotation is None and _plain(described.annotation)
        if plain and not any(getattr(info, name, None) for name in _TYPER_ONLY):
            p._runtime_param = Plain(parameter_info=info, annotation=described.annotation)
