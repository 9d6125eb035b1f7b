"""Helpers shared by the tests: config builders, waiting on conditions, and a
backend that echoes the request exactly as it arrived."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _EchoServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        seen = {
            "method": self.command,
            "path": self.path,
            # Every header line in order, repeats kept: the demo backend keeps only the last.
            "headers": [[k.lower(), v] for k, v in self.headers.items()],
        }
        with self.server.lock:
            self.server.seen.append(seen)
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _handle


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()


class EchoBackend:
    """HTTP/1.1 server answering JSON with the method, raw path and every header line it received."""

    def __init__(self) -> None:
        self._server = _EchoServer()
        self._thread = threading.Thread(target=self._server.serve_forever, name="echo-backend", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def seen(self) -> list[dict[str, Any]]:
        """The requests received so far."""
        with self._server.lock:
            return list(self._server.seen)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def header_values(seen: dict[str, Any], name: str) -> list[str]:
    """Every value of header `name` (lower-case) in an EchoBackend record, in order."""
    return [v for k, v in seen["headers"] if k == name]


class _StatusHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _StatusServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status = self.server.health if self.path == "/healthz" else self.server.status
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.send_header("X-Backend", self.server.name)
        self.end_headers()

    do_GET = do_POST = do_HEAD = _handle


class _StatusServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # health checks and the proxy's pool may connect in a burst

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _StatusHandler)
        self.name = name
        self.status = 200
        self.health = 200


class StatusBackend:
    """HTTP/1.1 server whose answers can be changed while it runs: `health` for GET /healthz,
    `status` for every other request; each answer names the server in `X-Backend`."""

    def __init__(self, name: str, status: int = 200, health: int = 200) -> None:
        self._server = _StatusServer(name)
        self.status, self.health = status, health
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"status-{name}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def status(self) -> int:
        return self._server.status

    @status.setter
    def status(self, value: int) -> None:
        self._server.status = value

    @property
    def health(self) -> int:
        return self._server.health

    @health.setter
    def health(self, value: int) -> None:
        self._server.health = value

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
