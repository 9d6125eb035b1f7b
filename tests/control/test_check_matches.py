"""`analysis.matches.covers`: whether one compiled match takes every request of
another, as the data plane matches (checked against `_core.match_route` on
sample requests), and never True when unsure."""

from __future__ import annotations

from typing import Any

import pytest

from meshctl import _core
from meshctl.control.analysis.matches import covers

COVERED = [
    ({}, {"path": "/a"}),
    ({"path_prefix": "/"}, {"path_prefix": "/a"}),
    ({"path_prefix": "/api"}, {"path_prefix": "/api/"}),  # the data plane trims the slash
    ({"path_prefix": "/api/"}, {"path_prefix": "/api/v1"}),
    ({"path_prefix": "/api"}, {"path": "/api/x"}),
    ({"path_regex": "/u/[0-9]+"}, {"path": "/u/42"}),
    ({"method": "GET"}, {"method": "GET", "path": "/a"}),
    ({"headers": {"x-a": "1"}}, {"headers": {"x-a": "1", "x-b": "2"}}),
    ({"header_regex": {"x-a": "b.*"}}, {"headers": {"x-a": "beta"}}),
    ({"query": {"q": "1"}}, {"query": {"q": "1", "r": "2"}}),
    ({"host": "a.example.com"}, {"host": "a.example.com", "path": "/x"}),
]
NOT_COVERED = [
    ({"path_prefix": "/api"}, {"path_prefix": "/apix"}),  # segments, not characters
    ({"path_prefix": "/api"}, {}),
    ({"path": "/api"}, {"path_prefix": "/api"}),
    ({"path_regex": "/u/.*"}, {"path_prefix": "/u"}),  # a regex over a prefix: not decided
    ({"path_regex": "/u/[0-9]+"}, {"path": "/u/x"}),
    ({"method": "GET"}, {}),
    ({"headers": {"x-a": "1"}}, {"headers": {"x-a": "2"}}),
    ({"header_regex": {"x-a": "b.*"}}, {"headers": {"x-a": "alpha"}}),
    ({"header_regex": {"x-a": "b.*"}}, {"header_regex": {"x-a": "be.*"}}),  # narrower, but not decided
    ({"query": {"q": "1"}}, {}),
    ({"host": "a.example.com"}, {}),
    ({"future_field": 1}, {"future_field": 1}),  # unknown keys: never sure
]


def requests(match: dict[str, Any]) -> list[dict[str, Any]]:
    """Requests that `match` takes: its path and one below it, its method, headers and query."""
    paths = [match.get("path", "/u/42")]
    if "path_prefix" in match:
        base = match["path_prefix"].rstrip("/") or ""
        paths = [base or "/", base + "/deeper"]
    query = "&".join(f"{k}={v}" for k, v in match.get("query", {}).items())
    headers = list(match.get("headers", {}).items())
    return [
        {
            "method": match.get("method", "POST"),
            "path": p + (f"?{query}" if query else ""),
            "host": match.get("host"),
            "headers": headers,
        }
        for p in paths
    ]


@pytest.mark.parametrize(("a", "b"), COVERED)
def test_covered_matches_take_every_sample_request(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert covers(a, b)
    for req in requests(b):
        assert _core.match_route([b], **req)["chosen"] == 0, req  # the sample is b's
        assert _core.match_route([a], **req)["chosen"] == 0, req  # and a takes it


@pytest.mark.parametrize(("a", "b"), NOT_COVERED)
def test_uncertain_or_wrong_coverage_is_never_claimed(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert not covers(a, b)


def test_a_match_covers_itself() -> None:
    for a, _ in COVERED[1:] + NOT_COVERED[:-1]:
        assert covers(a, a)
