"""A small HTTP/1.1 backend that says who it is; used by the demo and the tests.

Paths: ``/status/N`` answers N; ``?ms=N`` on any path waits N ms first (and
``delay_ms`` slows every request); everything else answers JSON naming the
backend and the request, with the request body echoed. With an ``upstream``
(``host:port``, its sidecar's outbound port) it first calls that with the
same path, as a service in a chain would, passing on the headers a mesh app
propagates, and nests the answer.

As a program (the apps of the demo's compose file, ``meshctl/demo/demo.yaml``)::

    python -m meshctl.demo.backends --name catalog --port 8081 --upstream pricing

``--upstream`` is ``host:port``, a URL (``http://127.0.0.1:7001``), or a
service name whose ``MESHCTL_UPSTREAM_<NAME>`` (set by ``meshctl run``) gives
the URL: the file names the service, ``run`` says where its sidecar listens.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet: the proxy logs
        pass

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", self.server.name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        with self.server.lock:
            self.server.requests += 1
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        delay_ms = int(query["ms"][0]) if "ms" in query else self.server.delay_ms
        if delay_ms:
            time.sleep(delay_ms / 1000)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if url.path.startswith("/status/"):
            self._reply(int(url.path.rsplit("/", 1)[1]), b"")
            return
        info: dict[str, object] = {
            "backend": self.server.name,
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        status = 200
        if self.server.upstream:
            status, info["upstream"] = self._call_upstream()
        self._reply(status, json.dumps(info).encode())

    def _call_upstream(self) -> tuple[int, object]:
        """(our status, what the upstream said): 502 when it failed."""
        conn = getattr(self.server.local, "conn", None)
        if conn is None:
            host, port = str(self.server.upstream).rsplit(":", 1)
            conn = self.server.local.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {h: v for h in PROPAGATED if (v := self.headers.get(h))}
        try:
            conn.request("GET", self.path, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self.server.local.conn = None
            return 502, {"error": str(e)}
        try:
            answer: object = json.loads(raw)
        except ValueError:
            answer = raw.decode("utf-8", "replace")
        return (200 if resp.status < 400 else 502), answer

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle


#: Headers an app in a mesh passes from its request to the calls it makes.
PROPAGATED = ("x-request-id", "x-canary", "traceparent")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default backlog of 5 drops SYNs when a proxy opens connections in a burst

    def __init__(self, name: str, host: str, port: int, delay_ms: int, upstream: str | None):
        super().__init__((host, port), _Handler)
        self.name = name
        self.delay_ms = delay_ms
        self.upstream = upstream
        self.local = threading.local()  # one keep-alive upstream connection per handler thread
        self.requests = 0
        self.lock = threading.Lock()


class DemoBackend:
    """An HTTP/1.1 server on its own thread; ``address`` is ``host:port``."""

    def __init__(
        self, name: str, host: str = "127.0.0.1", port: int = 0, delay_ms: int = 0, upstream: str | None = None
    ):
        self._server = _Server(name, host, port, delay_ms, upstream)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"backend-{name}", daemon=True)

    @property
    def name(self) -> str:
        return self._server.name

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def requests(self) -> int:
        return self._server.requests

    def start(self) -> DemoBackend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# === as a program ===


def upstream_address(value: str) -> str:
    """`--upstream` as host:port: given so, as a URL, or as a service name read from the environment."""
    if ":" not in value:
        variable = "MESHCTL_UPSTREAM_" + re.sub(r"[^A-Za-z0-9]", "_", value).upper()
        if variable not in os.environ:
            raise SystemExit(f"--upstream {value}: ${variable} is not set (run me under `meshctl run --upstream`)")
        value = os.environ[variable]
    return urlsplit(value).netloc if "//" in value else value


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m meshctl.demo.backends", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="What it answers as (the X-Backend header and `backend`).")
    p.add_argument("--port", type=int, required=True, help="Port to listen on.")
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
    p.add_argument("--delay-ms", type=int, default=0, help="Wait this long before each answer.")
    p.add_argument("--upstream", help="Call this first (host:port, URL, or a service name: see above).")
    args = p.parse_args(argv)
    upstream = upstream_address(args.upstream) if args.upstream else None
    server = DemoBackend(args.name, args.host, args.port, args.delay_ms, upstream).start()
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(f"{args.name} on {server.address}" + (f", calling {upstream}" if upstream else ""), flush=True)
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
