"""How the compiler's parts write a data-plane section from a spec: only the
fields the spec sets, so that every field left out keeps the data plane's
default (and shows as such in its /config)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from meshctl.control.kinds.durations import parse_duration

Section = TypeVar("Section", bound=Mapping[str, object])


def present(section: type[Section], **fields: Any) -> Section:
    """A `section` (a dataplane_config TypedDict) of the `fields` that are not None."""
    # mypy cannot check keyword names against a TypedDict: this does, on every call.
    if unknown := fields.keys() - section.__required_keys__ - section.__optional_keys__:  # type: ignore[attr-defined]
        raise TypeError(f"{section.__name__} has no {', '.join(sorted(unknown))}")
    return cast(Section, {k: v for k, v in fields.items() if v is not None})


def ms(duration: str | None) -> int | None:
    """A Gateway API duration in milliseconds (None stays None)."""
    return None if duration is None else parse_duration(duration)
