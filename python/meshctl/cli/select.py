"""Label selectors for ``meshctl get -l``: kubectl's equality-based ones
(``key=value``, ``key==value``, ``key!=value``, ``key``, ``!key``, comma-separated,
all must hold), matched here, on the client, against what the API returns:
an object's ``labels`` (endpoints; resources when their metadata carries
labels) or ``metadata.labels``. An object without labels has none: only
``key!=value`` and ``!key`` requirements can match it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from meshctl.cli.api import fail

_KEY = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$")

Requirement = Callable[[dict[str, str]], bool]


def _requirement(term: str) -> Requirement:
    term = term.strip()
    for op in ("!=", "==", "="):
        key, sep, value = term.partition(op)
        if sep:
            key, value = key.strip(), value.strip()
            if not _KEY.match(key):
                break
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    else:
        if term.startswith("!") and _KEY.match(term[1:].strip()):
            missing = term[1:].strip()
            return lambda labels: missing not in labels
        if _KEY.match(term):
            return lambda labels: term in labels
    fail(f"bad selector term {term!r}: key=value, key!=value, key or !key")


def parse(selector: str) -> list[Requirement]:
    """The requirements of a selector (exit 2 on a malformed one)."""
    return [_requirement(t) for t in selector.split(",") if t.strip()]


def labels_of(item: dict[str, Any]) -> dict[str, str]:
    meta = item.get("metadata")
    labels = item.get("labels") or (meta.get("labels") if isinstance(meta, dict) else None)
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def filtered(items: list[dict[str, Any]], selector: str | None) -> list[dict[str, Any]]:
    """The items whose labels meet every requirement (all of them without a selector)."""
    if not selector:
        return items
    requirements = parse(selector)
    return [i for i in items if all(r(labels_of(i)) for r in requirements)]
