"""Whether one compiled route match takes every request another one matches
(``covers``): what decides that a rule is shadowed. It reads the data plane's
``MatchConfig`` (what the compiler emits, ``compiler.route_match``) and follows
the data plane's matching rules (rust/src/route.rs):

- ``path_prefix`` P (trailing slashes trimmed; "/" matches any path) matches a
  path equal to P or starting with P + "/"; ``path`` matches one path exactly;
- ``headers``: some value of the header equals the one wanted; ``header_regex``
  some value matches the (anchored) pattern; ``query``: some pair is exactly
  the one wanted; ``host``, ``method``: equal.

It answers True only when certain: a regular expression covers another match
only if the two patterns are the same text, or if it is asked about one exact
value (an exact path, an exact header value), which the data plane's own
matcher decides (``_core.match_route``). Any key it does not know makes the
answer False.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshctl import _core
from meshctl.dataplane_config import MatchConfig

_KNOWN = frozenset({"host", "path", "path_prefix", "path_regex", "method", "headers", "header_regex", "query"})


def _prefix(value: str) -> str | None:
    """A path prefix as the data plane keeps it; None for "/" (any path)."""
    trimmed = value.rstrip("/")
    return trimmed or None


def _under(prefix: str, path: str) -> bool:
    """Whether `path` (or every path under the prefix `path`) is matched by the trimmed prefix."""
    return path == prefix or path.startswith(prefix + "/")


def _regex_matches(pattern: str, *, path: str = "/", header: tuple[str, str] | None = None) -> bool:
    """The data plane's verdict on one concrete value against a pattern."""
    match: MatchConfig = {"path_regex": pattern} if header is None else {"header_regex": {header[0]: pattern}}
    choice = _core.match_route([match], method="GET", path=path, headers=[header] if header else [])
    return bool(choice["chosen"] == 0)


def _path_covers(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if "path" in a:
        return bool(b.get("path") == a["path"])
    if "path_regex" in a:
        if "path_regex" in b:
            return bool(b["path_regex"] == a["path_regex"])
        return "path" in b and _regex_matches(a["path_regex"], path=b["path"])
    if "path_prefix" in a and (prefix := _prefix(a["path_prefix"])) is not None:
        if "path" in b:
            return _under(prefix, b["path"])
        if "path_prefix" in b:
            other = _prefix(b["path_prefix"])
            return other is not None and _under(prefix, other)
        return False  # b matches any path, or a regex's: not certainly under the prefix
    return True  # a matches any path


def _headers_cover(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    exact_b, regex_b = b.get("headers", {}), b.get("header_regex", {})
    if any(exact_b.get(name) != value for name, value in a.get("headers", {}).items()):
        return False
    for name, pattern in a.get("header_regex", {}).items():
        if regex_b.get(name) == pattern:
            continue
        if name in exact_b and _regex_matches(pattern, header=(name, exact_b[name])):
            continue
        return False
    return True


def covers(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether every request that match `b` takes is also taken by match `a` (both as the
    compiler emits them for the data plane). Never True unless certain."""
    if not _KNOWN.issuperset(a) or not _KNOWN.issuperset(b):
        return False
    if "host" in a and b.get("host") != a["host"]:
        return False
    if "method" in a and b.get("method") != a["method"]:
        return False
    query_b = b.get("query", {})
    if any(query_b.get(name) != value for name, value in a.get("query", {}).items()):
        return False
    return _path_covers(a, b) and _headers_cover(a, b)
