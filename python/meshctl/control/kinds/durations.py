"""Durations as the Gateway API writes them (GEP-2257, used by GEP-1742's
timeouts): one to four numbers of up to five digits, each with a unit of h, m,
s or ms ("1s", "250ms", "1h30m", "0s"). Specs take them as strings; the
compiler hands the data plane whole milliseconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

_FORMAT = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
#: The longest duration the data plane takes anywhere (its timeouts and intervals: 24 h).
MAX_MS = 86_400_000


def parse_duration(text: str) -> int:
    """Milliseconds in a Gateway API duration ("1h30m" is 5400000); ValueError when the text is
    not one. Parts add up, as Go's time.ParseDuration does."""
    if not _FORMAT.match(text):
        how = "up to four parts of a number and a unit h, m, s or ms (e.g. 1s, 250ms, 1m30s)"
        raise ValueError(f"{text!r} is not a duration: write {how}")
    return sum(int(n) * _UNIT_MS[unit] for n, unit in _PART.findall(text))


def _within(text: str, *, least: int) -> str:
    ms = parse_duration(text)
    if ms < least:
        raise ValueError(f"{text!r} must be at least {least}ms")
    if ms > MAX_MS:
        raise ValueError(f"{text!r} is longer than 24h, the data plane's limit")
    return text


def _any(text: str) -> str:
    return _within(text, least=0)


def _positive(text: str) -> str:
    return _within(text, least=1)


_DOC = "A Gateway API duration: e.g. 1s, 250ms, 1m30s (units h, m, s, ms)."
# The pattern is for the schema's readers; the validator checks it, with a message saying how.
_SCHEMA: dict[str, Any] = {"pattern": _FORMAT.pattern}

#: A duration from 0s to 24h, kept as written (the spec stores what the user wrote); read it with
#: `parse_duration`. Where "0s" means something special ("no timeout"), the field says so.
Duration = Annotated[str, Field(description=_DOC, json_schema_extra=_SCHEMA), AfterValidator(_any)]
#: A duration from 1ms to 24h.
PositiveDuration = Annotated[str, Field(description=_DOC, json_schema_extra=_SCHEMA), AfterValidator(_positive)]
