"""HTTP/1.1 strictness and the listener's limits and clocks (issue 14), over raw sockets.

Every malformed or smuggling request of the table is sent to each kind of listener (plain, edge
TLS, mesh mTLS): each is answered with the status it deserves and the connection closes, the
refusal is counted under its reason, and the upstream - a raw socket that records every byte it
is sent - gets nothing at all. Then the limits: per-route body size (413), header and body
timeouts (slowloris), keep-alive idle, max connections, a TCP listener's idle timeout."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import HttpBackend, ScriptedUpstream, cluster, header_values, http_listener, route, wait_until
from meshctl import DataPlane
from pki import TestPki

MakeProxy = Callable[..., DataPlane]


class RawUpstream(ScriptedUpstream):
    """A TCP server that records every byte each connection sends it and answers nothing."""

    def __init__(self) -> None:
        self.received = bytearray()
        super().__init__(self._read)

    def _read(self, conn: socket.socket, _: int) -> None:
        while data := conn.recv(65536):
            with self.lock:
                self.received += data


@pytest.fixture
def upstream() -> Iterator[RawUpstream]:
    u = RawUpstream()
    yield u
    u.close()


def big_head() -> bytes:
    return b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * (80 * 1024) + b"\r\n\r\n"


def many_headers() -> bytes:
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
    return b"GET / HTTP/1.1\r\nHost: a\r\n" + lines + b"\r\n"


#: (case, request bytes, status, counted reason)
MALFORMED: list[tuple[str, bytes, int, str]] = [
    (
        "cl-then-te",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "te-then-cl",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request"),
    ("no-host", b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400, "bad_request"),
    ("head-80k", big_head(), 431, "header_too_large"),
    ("101-headers", many_headers(), 431, "header_too_large"),
    (
        "bad-chunk-size",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    ("bad-content-length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400, "bad_request"),
    (
        "two-lengths",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
        "bad_request",
    ),
    (
        "te-not-chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
        "bad_request",
    ),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400, "bad_request"),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400, "bad_request"),
]


class Listener:
    """A running data plane with one HTTP listener of a kind, and how to open a client socket to it."""

    def __init__(self, dp: DataPlane, addr: str, wrap: Callable[[socket.socket], socket.socket]):
        self.dp, self.addr, self.wrap = dp, addr, wrap

    def connect(self) -> socket.socket:
        host, port = self.addr.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=10)
        return self.wrap(s)

    def refusals(self) -> dict[str, int]:
        return dict(self.dp.stats()["listeners"]["web"]["refusals"])


def start_listener(kind: str, proxy: MakeProxy, tmp_path: Path, upstream: str, **listener: Any) -> Listener:
    web = http_listener("web", [route("up")])
    web.update(listener)
    config: dict[str, Any] = {"listeners": [web], "clusters": [cluster("up", [upstream])]}
    wrap: Callable[[socket.socket], socket.socket] = lambda s: s  # noqa: E731
    if kind != "plain":
        pki = TestPki(tmp_path / "pki")
        ctx = ssl.create_default_context(cafile=str(pki.roots))
        if kind == "edge-tls":
            cert = pki.server("web.test")
            web["tls"] = {
                "mode": "simple",
                "certificates": [{"cert_chain_file": str(cert.chain), "private_key_file": str(cert.key)}],
            }
            ctx.check_hostname = True
        else:
            server = pki.svid("spiffe://cluster.local/ns/shop/sa/catalog")
            client = pki.svid("spiffe://cluster.local/ns/shop/sa/frontend")
            config["identity"] = server.identity(pki.roots)
            web["tls"] = {"mode": "strict"}
            ctx.check_hostname = False  # SPIFFE IDs are URIs: the data plane checks them, not ssl
            ctx.load_cert_chain(str(client.chain), str(client.key))
        ctx.set_alpn_protocols(["http/1.1"])
        wrap = lambda s: ctx.wrap_socket(s, server_hostname="web.test")  # noqa: E731
    dp = proxy(config)
    return Listener(dp, dp.addresses()["web"], wrap)


@pytest.fixture(params=["plain", "edge-tls", "mesh-mtls"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def exchange(s: socket.socket, data: bytes, timeout: float = 10.0) -> bytes:
    """Sends `data` and reads until the server closes (the refusals all close)."""
    s.settimeout(timeout)
    with contextlib.suppress(OSError):  # the server may refuse before it has read everything
        s.sendall(data)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        out += chunk
    else:
        raise AssertionError(f"the connection stayed open; got {bytes(out[:200])!r}")
    return bytes(out)


def read_response(s: socket.socket) -> bytes:
    """One whole response with a Content-Length body, and not a byte more."""
    s.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed before a whole head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(v) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")) if k.lower() == b"content-length"
    )
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "closed before the whole body"
        body += chunk
    assert len(body) == length, "more than one response"
    return head + b"\r\n\r\n" + body


def status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    return int(reply.split(b" ", 2)[1])


def test_malformed_requests_are_refused_closed_counted_and_never_forwarded(
    kind: str, proxy: MakeProxy, tmp_path: Path, upstream: RawUpstream
) -> None:
    web = start_listener(kind, proxy, tmp_path, upstream.address)
    want: dict[str, int] = {}
    for case, data, status, reason in MALFORMED:
        with web.connect() as s:
            reply = exchange(s, data)
        assert status_of(reply) == status, f"{kind}/{case}: {reply[:300]!r}"
        assert b"connection: close" in reply.lower(), f"{kind}/{case}"
        want[reason] = want.get(reason, 0) + 1
    # Counted where refused (the last one may still be on its way into the counters).
    wait_until(lambda: all(web.refusals()[r] >= n for r, n in want.items()), what=f"refusals {want}")
    assert web.refusals()["bad_request"] == want["bad_request"]
    assert web.refusals()["header_too_large"] == want["header_too_large"]
    # The upstream never saw a byte: nothing was forwarded, not even a head.
    assert upstream.received == b"" and upstream.connections == 0


def test_valid_requests_still_pass_on_every_listener(
    kind: str, proxy: MakeProxy, tmp_path: Path, http_backend: Callable[..., HttpBackend]
) -> None:
    """The checks refuse only what they should: keep-alive, pipelining behind a body, chunked
    uploads, a head just under the limit and HTTP/1.0 without Host all go through."""
    b = http_backend()
    web = start_listener(kind, proxy, tmp_path, b.address)
    near_limit = b"X-Fill: " + b"f" * (60 * 1024 - 200) + b"\r\n"
    pipelined = (
        b"POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /two HTTP/1.1\r\nHost: a\r\n" + near_limit + b"\r\n"
        b"POST /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nworld\r\n0\r\n\r\n"
        b"GET /four HTTP/1.0\r\n\r\n"
    )
    with web.connect() as s:
        reply = exchange(s, pipelined)
    assert reply.count(b"HTTP/1.1 200") == 1 + 1 + 1 + 0 and reply.count(b" 200 OK") == 4, reply[:500]
    paths = [seen["path"] for seen in b.seen]
    assert paths == ["/one", "/two", "/three", "/four"]
    # (The recording backend reads Content-Length bodies only; the chunked one went on chunked.)
    assert b.bodies[0] == b"hello"
    assert header_values(b.seen[2], "transfer-encoding") == ["chunked"]
    assert not any(web.refusals().values())


def test_h2c_upgrade_is_never_forwarded(
    proxy: MakeProxy, tmp_path: Path, http_backend: Callable[..., HttpBackend]
) -> None:
    b = http_backend()
    web = start_listener("plain", proxy, tmp_path, b.address)
    request = (
        b"GET /smuggle HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    with web.connect() as s:
        s.sendall(request)
        reply = read_response(s)
    # Answered as HTTP/1.1 (no 101), and the upstream got a plain request.
    assert status_of(reply) == 200
    seen = b.seen[0]
    assert seen["path"] == "/smuggle"
    assert header_values(seen, "upgrade") == [] and header_values(seen, "http2-settings") == []
    assert web.refusals()["h2c_upgrade"] == 1


def test_route_body_limit(
    proxy: MakeProxy, tmp_path: Path, upstream: RawUpstream, http_backend: Callable[..., HttpBackend]
) -> None:
    b = http_backend()
    limited = {**route("small"), "max_request_bytes": 10}
    config = {
        "listeners": [http_listener("web", [{**limited, "match": {"path_prefix": "/small"}}, route("ok")])],
        "clusters": [cluster("small", [upstream.address]), cluster("ok", [b.address])],
    }
    dp = proxy(config)
    web = Listener(dp, dp.addresses()["web"], lambda s: s)
    # By Content-Length: refused before anything is forwarded.
    with web.connect() as s:
        reply = exchange(s, b"POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world")
    assert status_of(reply) == 413
    assert upstream.connections == 0
    # Chunked: cut while it streams.
    with web.connect() as s:
        chunks = b"POST /small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunks += b"6\r\nhello \r\n" + b"6\r\nworld!\r\n0\r\n\r\n"
        reply = exchange(s, chunks)
    assert status_of(reply) == 413
    # Within the limit, and on a route without one, bodies pass.
    with web.connect() as s:
        s.sendall(b"POST /other HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world")
        assert status_of(read_response(s)) == 200
    assert web.refusals()["body_too_large"] == 2


def test_slowloris_head_is_cut_at_the_header_timeout(proxy: MakeProxy, tmp_path: Path, upstream: RawUpstream) -> None:
    web = start_listener("plain", proxy, tmp_path, upstream.address, limits={"header_timeout_ms": 400})
    with web.connect() as s:
        started = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        # Trickle a header byte by byte: activity does not extend the head's deadline.
        for byte in b"X-Slow: " + b"a" * 100:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break  # cut off, as it should be
            time.sleep(0.05)
        reply = exchange(s, b"", timeout=5)
        took = time.monotonic() - started
    assert status_of(reply) == 408
    assert 0.35 < took < 3, took
    assert web.refusals()["header_timeout"] == 1
    assert upstream.connections == 0


def test_idle_keep_alive_and_stalled_bodies_are_closed(
    proxy: MakeProxy, tmp_path: Path, http_backend: Callable[..., HttpBackend]
) -> None:
    b = http_backend()
    limits = {"idle_timeout_ms": 500, "body_timeout_ms": 400, "header_timeout_ms": 5000}
    web = start_listener("plain", proxy, tmp_path, b.address, limits=limits)
    # An idle keep-alive connection closes after idle_timeout, not before.
    with web.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status_of(read_response(s)) == 200
        done = time.monotonic()
        s.settimeout(5)
        assert s.recv(1) == b""
        idle = time.monotonic() - done
    assert 0.45 < idle < 3, idle
    wait_until(lambda: web.refusals()["idle_timeout"] == 1, what="idle close counted")
    # A new connection that sends nothing at all is idle too.
    with web.connect() as s:
        s.settimeout(5)
        assert s.recv(1) == b""
    # A body that stops half-way: 408, never a 502, and the endpoint is not blamed.
    with web.connect() as s:
        reply = exchange(s, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhalf", timeout=5)
    assert status_of(reply) == 408
    assert web.refusals()["body_timeout"] == 1
    assert web.dp.stats()["clusters"]["up"]["upstream_errors"] == 0


def test_max_connections(proxy: MakeProxy, tmp_path: Path, http_backend: Callable[..., HttpBackend]) -> None:
    b = http_backend()
    web = start_listener("plain", proxy, tmp_path, b.address, limits={"max_connections": 2})
    held = [web.connect() for _ in range(2)]
    try:
        for s in held:  # both served, and kept open
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert status_of(read_response(s)) == 200
        with web.connect() as third:
            third.settimeout(5)
            try:
                third.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                assert third.recv(1) == b""
            except ConnectionResetError:
                pass
        assert web.refusals()["max_connections"] == 1
    finally:
        for s in held:
            s.close()
    # Below the limit again, connections are served.
    wait_until(lambda: web.dp.stats()["listeners"]["web"]["active_connections"] == 0, what="connections closed")
    with web.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status_of(read_response(s)) == 200


def test_tcp_listener_idle_timeout(proxy: MakeProxy) -> None:
    echo = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = echo.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    addr = f"127.0.0.1:{echo.getsockname()[1]}"
    listener = {"name": "db", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "db"}
    listener["limits"] = {"idle_timeout_ms": 500}
    dp = proxy({"listeners": [listener], "clusters": [cluster("db", [addr])]})
    host, port = dp.addresses()["db"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        # Traffic keeps it open past the timeout...
        for _ in range(4):
            time.sleep(0.25)
            s.sendall(b"ping")
            assert s.recv(4) == b"ping"
        quiet = time.monotonic()
        # ...silence closes it.
        assert s.recv(1) == b""
        assert 0.45 < time.monotonic() - quiet < 3
    assert dp.stats()["listeners"]["db"]["refusals"]["idle_timeout"] == 1
    echo.close()
