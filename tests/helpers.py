"""Helpers shared by the tests: config builders and waiting on conditions."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def cluster(name: str, addresses: Iterable[str], **options: Any) -> dict[str, Any]:
    weights = options.pop("weights", None)
    endpoints = [{"address": a} for a in addresses]
    if weights:
        for ep, w in zip(endpoints, weights, strict=True):
            ep["weight"] = w
    return {"name": name, "endpoints": endpoints, **options}


def http_listener(name: str, routes: list[dict[str, Any]], address: str = "127.0.0.1:0") -> dict[str, Any]:
    return {"name": name, "address": address, "protocol": "http", "routes": routes}


def route(*clusters: str | tuple[str, int], **match: Any) -> dict[str, Any]:
    backends = [{"cluster": c} if isinstance(c, str) else {"cluster": c[0], "weight": c[1]} for c in clusters]
    r: dict[str, Any] = {"backends": backends}
    if match:
        r["match"] = match
    return r


def unused_port() -> int:
    """A port nothing listens on (bound then released; nobody else binds on loopback here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
