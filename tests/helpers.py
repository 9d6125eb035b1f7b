"""Helpers shared by the tests: config builders, waiting on conditions, an HTTP backend that
records every request exactly as it arrived and answers as told, and a raw TCP upstream that runs
a script per connection."""

from __future__ import annotations

import contextlib
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


#: Ports unused_port has handed out in this process: the kernel may pick a released port again at
#: once, and a test starting 20 sidecars (80 ports) would then give two of them one port.
_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def unused_port() -> int:
    """A port nothing listens on (bound then released), never one this process was given before."""
    with _HANDED_OUT_LOCK:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = {
            "method": self.command,
            "path": self.path,
            # Every header line in order, repeats kept: the demo backend keeps only the last.
            "headers": [[k.lower(), v] for k, v in self.headers.items()],
        }
        with self.server.lock:
            self.server.seen.append({**seen, "body": body})
        backend = self.server.backend
        if backend.delay:
            time.sleep(backend.delay)
        if backend.reset:
            self.close_connection = True
            self.connection.close()
            return
        reply = json.dumps({"by": backend.name, **seen, "body": body.decode(errors="replace")}).encode()
        self.send_response(backend.health if self.path == "/healthz" else backend.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.send_header("X-Backend", backend.name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Health checks, the proxy's pool and the tests' bursts may connect at once: a connect failure
    # from an overflowing listen queue is not what any test is about.
    request_queue_size = 128

    def __init__(self, backend: HttpBackend) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.backend = backend
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()


class HttpBackend:
    """HTTP/1.1 server that records every request and answers as its attributes say when the
    request comes (a test may change them while it runs): `status`, or `health` for /healthz,
    after `delay` seconds, or a dropped connection if `reset`. The answer is JSON with the
    server's name ("by") and the request's method, raw path, every header line and body; the
    X-Backend header names the server too."""

    def __init__(
        self, name: str = "echo", status: int = 200, health: int = 200, delay: float = 0.0, reset: bool = False
    ) -> None:
        self.name, self.status, self.health, self.delay, self.reset = name, status, health, delay, reset
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"backend-{name}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def seen(self) -> list[dict[str, Any]]:
        """The requests received so far: method, path, headers (as `header_values` reads them), body."""
        with self._server.lock:
            return list(self._server.seen)

    @property
    def bodies(self) -> list[bytes]:
        """The bodies of the requests received so far."""
        return [s["body"] for s in self.seen]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def header_values(seen: dict[str, Any], name: str) -> list[str]:
    """Every value of header `name` (lower-case) in an HttpBackend record, in order."""
    return [v for k, v in seen["headers"] if k == name]


Script = Callable[[socket.socket, int], None]


class ScriptedUpstream:
    """Runs `script(conn, index)` for each connection it accepts (counted, from 1)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                index = self.connections
            threading.Thread(target=self._run, args=(conn, index), daemon=True).start()

    def _run(self, conn: socket.socket, index: int) -> None:
        with conn, contextlib.suppress(EOFError, OSError):
            self.script(conn, index)

    def close(self) -> None:
        self.sock.close()
