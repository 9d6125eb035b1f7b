"""The proxy's own HTTP/1.1 client to upstreams (issue 17), against scripted raw-socket upstreams.

What the upstream answers decides how the proxy frames it: lengths, chunks with trailers,
bodies that run to the close, interim answers, HEAD and 204 without a body. Answers a proxy could
frame two ways (both Content-Length and Transfer-Encoding, two lengths, folded lines, a 101 nobody
asked for) are refused with 502 and the connection dropped. Connections are reused while the
upstream keeps them, never after it closed one or sent bytes nobody asked for, and a request body
keeps streaming while the response does."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers import Script, ScriptedUpstream, cluster, http_listener, route, wait_until
from meshctl import DataPlane

MakeProxy = Callable[..., DataPlane]


def read_head(conn: socket.socket, buf: bytearray) -> bytes:
    """Reads up to and including the blank line; what came after stays in `buf`."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError(bytes(buf))
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    return head


def header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip()
    return None


def read_request(conn: socket.socket, buf: bytearray) -> tuple[bytes, bytes]:
    """One request (head, body) with a Content-Length body or none."""
    head = read_head(conn, buf)
    length = int(header(head, b"content-length") or 0)
    while len(buf) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return head, body


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], ScriptedUpstream]]:
    made: list[ScriptedUpstream] = []

    def make(script: Script) -> ScriptedUpstream:
        u = ScriptedUpstream(script)
        made.append(u)
        return u

    yield make
    for u in made:
        u.close()


def start(proxy: MakeProxy, upstream: ScriptedUpstream, **listener: Any) -> tuple[DataPlane, str]:
    # No retries: each request is one exchange, so connections can be counted.
    web = http_listener("web", [{**route("up"), "retry": {"attempts": 0}}])
    web.update(listener)
    # One worker: every request of the test shares one pool slot.
    dp = proxy({"listeners": [web], "clusters": [cluster("up", [upstream.address])]}, workers=1)
    return dp, dp.addresses()["web"]


def client(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.settimeout(10)
    return s


def response(s: socket.socket, head_request: bool = False) -> tuple[int, bytes, bytes]:
    """(status, head, body) of one response from the proxy: length, chunked or to the close."""
    buf = bytearray()
    head = read_head(s, buf)
    status = int(head.split(b" ", 2)[1])
    if head_request or status in (204, 304):
        return status, head, b""
    if header(head, b"transfer-encoding") == b"chunked":
        while not buf.endswith(b"0\r\n\r\n") and b"\r\n0\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, f"closed mid-body: {bytes(buf)!r}"
            buf += chunk
        body = bytearray()
        rest = bytes(buf)
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                trailers = rest[:-2]  # the blank line ends them
                return status, head, bytes(body) + (b"|" + trailers if trailers else b"")
            body += rest[:size]
            rest = rest[size + 2 :]
    length = header(head, b"content-length")
    if length is None:
        while chunk := s.recv(65536):
            buf += chunk
        return status, head, bytes(buf)
    while len(buf) < int(length):
        chunk = s.recv(65536)
        assert chunk, "closed before the whole body"
        buf += chunk
    return status, head, bytes(buf)


def get(address: str, path: str = "/", method: str = "GET") -> tuple[int, bytes, bytes]:
    with client(address) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        return response(s, head_request=method == "HEAD")


def answers(*replies: bytes) -> Script:
    """Answers each request on a connection with the next reply (then keeps the connection)."""

    def script(conn: socket.socket, _: int) -> None:
        buf = bytearray()
        for reply in replies:
            read_request(conn, buf)
            conn.sendall(reply)
        while conn.recv(65536):
            pass

    return script


def next_chunk(conn: socket.socket, buf: bytearray) -> bytes:
    """The data of the next chunk of a chunked body (no trailers) from `buf` and the socket;
    b"" for the last chunk."""

    def more() -> None:
        data = conn.recv(65536)
        if not data:
            raise EOFError(bytes(buf))
        buf.extend(data)

    while b"\r\n" not in buf:
        more()
    line, _, _ = bytes(buf).partition(b"\r\n")
    size = int(line, 16)
    while len(buf) < len(line) + 2 + size + 2:
        more()
    start = len(line) + 2
    data = bytes(buf[start : start + size])
    del buf[: start + size + 2]
    return data


def read_chunked(conn: socket.socket, buf: bytearray) -> bytes:
    """A whole chunked body (no trailers)."""
    return b"".join(iter(lambda: next_chunk(conn, buf), b""))


AMBIGUOUS = [
    ("length-and-chunked", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("two-lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ("length-list", b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd"),
    ("signed-length", b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc"),
    ("folded-line", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n"),
    ("unasked-101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
    ("not-http", b"SSH-2.0-OpenSSH_9.2\r\n\r\n"),
]


@pytest.mark.parametrize(("case", "reply"), AMBIGUOUS, ids=[c for c, _ in AMBIGUOUS])
def test_answers_framed_two_ways_are_refused_502_and_the_connection_dropped(
    case: str, reply: bytes, proxy: MakeProxy, scripted: Callable[[Script], ScriptedUpstream]
) -> None:
    up = scripted(answers(reply, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    dp, address = start(proxy, up)
    status, _, body = get(address)
    assert status == 502, (case, body)
    # The connection that said it is not used again: the next request gets a new one.
    assert get(address)[0] == 502
    assert up.connections == 2
    assert dp.stats()["clusters"]["up"]["upstream_errors"] >= 2


def test_lengths_chunks_trailers_interim_answers_and_bodiless_answers_pass(
    proxy: MakeProxy, scripted: Callable[[Script], ScriptedUpstream]
) -> None:
    up = scripted(
        answers(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n"
            b"5;ext=1\r\nchunk\r\n3\r\ned!\r\n0\r\nx-sum: 8\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",  # to a HEAD: no body follows
            b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast",
        )
    )
    dp, address = start(proxy, up)
    with client(address) as s:
        got = []
        for method in ["GET", "GET", "POST", "GET", "HEAD", "GET", "GET"]:
            length = "Content-Length: 0\r\n" if method == "POST" else ""
            s.sendall(f"{method} / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n{length}\r\n".encode())
            got.append(response(s, head_request=method == "HEAD"))
    assert [(st, body) for st, _, body in got] == [
        (200, b"hello"),
        (200, b"chunked!|x-sum: 8\r\n"),
        (201, b"ok"),
        (204, b""),
        (200, b""),
        (304, b""),
        (200, b"last"),
    ]
    assert header(got[4][1], b"content-length") == b"9"
    # Every answer kept the connection: one upstream connection served all seven.
    assert up.connections == 1
    assert dp.stats()["clusters"]["up"]["upstream_errors"] == 0


def test_a_body_to_the_close_passes_whole_and_the_connection_is_not_reused(
    proxy: MakeProxy, scripted: Callable[[Script], ScriptedUpstream]
) -> None:
    def script(conn: socket.socket, _: int) -> None:
        read_request(conn, bytearray())
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for _ in range(3):
            conn.sendall(b"x" * 100_000)

    up = scripted(script)
    _, address = start(proxy, up)
    for _ in range(2):
        status, _, body = get(address)
        assert (status, len(body)) == (200, 300_000)
    assert up.connections == 2


def test_a_truncated_body_cuts_the_clients_response(
    proxy: MakeProxy, scripted: Callable[[Script], ScriptedUpstream]
) -> None:
    def script(conn: socket.socket, _: int) -> None:
        read_request(conn, bytearray())
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")

    _, address = start(proxy, scripted(script))
    with client(address) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        reply = bytearray()
        while chunk := s.recv(65536):
            reply += chunk
    # The client sees the close before the whole body (with the head and what came, or with
    # nothing if the end was known before the head went out): never a complete-looking answer.
    head, _, body = bytes(reply).partition(b"\r\n\r\n")
    assert not reply or (b"content-length: 100" in head.lower() and body == b"only-part"), reply


def test_a_connection_the_upstream_closed_while_idle_is_not_used(
    proxy: MakeProxy, scripted: Callable[[Script], ScriptedUpstream]
) -> None:
    """The upstream answers, then closes the connection (as servers close idle keep-alive
    connections): the proxy closes its side within seconds, and the next request goes on a new
    connection, not into a 502."""
    closed = threading.Event()

    def script(conn: socket.socket, index: int) -> None:
        read_request(conn, bytearray())
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(str(index)), index))
        if index == 1:
            conn.shutdown(socket.SHUT_RDWR)
            closed.set()
            return
        while conn.recv(65536):
            pass

    up = scripted(script)
    dp, address = start(proxy, up)
    assert get(address)[::2] == (200, b"1")
    wait_until(closed.is_set, what="the upstream closed its first connection")
    # Closed on the proxy's side too, by the cluster's sweep, with no request to find it.
    wait_until(
        lambda: dp.stats()["clusters"]["up"]["active_connections"] == 0,
        timeout=15,
        what="the half-closed idle connection closed",
    )
    status, _, body = get(address)
    assert (status, body) == (200, b"2")
    assert up.connections == 2
    assert dp.stats()["clusters"]["up"]["upstream_errors"] == 0


def test_stray_bytes_after_an_answer_retire_the_connection(
    proxy: MakeProxy, scripted: Callable[[Script], ScriptedUpstream]
) -> None:
    def script(conn: socket.socket, index: int) -> None:
        buf = bytearray()
        read_request(conn, buf)
        # More than the length said: whatever those bytes are, they answer nothing asked.
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad")
        while conn.recv(65536):
            pass

    up = scripted(script)
    _, address = start(proxy, up)
    assert [get(address)[2] for _ in range(3)] == [b"ok", b"ok", b"ok"]
    assert up.connections == 3


def test_an_early_answer_ends_the_exchange_before_the_whole_body(
    proxy: MakeProxy, scripted: Callable[[Script], ScriptedUpstream]
) -> None:
    """The upstream refuses after the head, reading nothing of a large body, and closes."""

    def script(conn: socket.socket, index: int) -> None:
        read_head(conn, bytearray())
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
        # Closes as servers do: its side first, then reads on until the proxy lets go.
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass

    up = scripted(script)
    _, address = start(proxy, up)
    with client(address) as s:
        size = 8 * 1024 * 1024
        s.sendall(f"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n".encode())
        sender = threading.Thread(target=lambda: _send_quietly(s, b"z" * size), daemon=True)
        sender.start()
        status, _, body = response(s)
    assert (status, body) == (413, b"big")


def _send_quietly(s: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        s.sendall(data)


def test_the_request_body_streams_while_the_response_does(
    proxy: MakeProxy, scripted: Callable[[Script], ScriptedUpstream]
) -> None:
    """A full-duplex exchange: the upstream answers at once and echoes each chunk of the request
    body as it comes; the client sends its next chunk only after it has seen the last echoed."""

    def script(conn: socket.socket, _: int) -> None:
        buf = bytearray()
        head = read_head(conn, buf)
        assert header(head, b"transfer-encoding") == b"chunked"
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for data in iter(lambda: next_chunk(conn, buf), b""):
            conn.sendall(b"%x\r\n%s\r\n" % (len(data), data.upper()))
        conn.sendall(b"0\r\n\r\n")

    _, address = start(proxy, scripted(script))
    with client(address) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        buf = bytearray()
        read_head(s, buf)
        for word in [b"one", b"two", b"three"]:
            s.sendall(b"%x\r\n%s\r\n" % (len(word), word))
            while word.upper() not in buf:
                chunk = s.recv(65536)
                assert chunk, bytes(buf)
                buf += chunk
        s.sendall(b"0\r\n\r\n")
        while not buf.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            assert chunk, bytes(buf)
            buf += chunk
    assert b"ONE" in buf and b"TWO" in buf and b"THREE" in buf


def test_the_head_after_a_chunked_body_in_pieces_is_still_checked(
    proxy: MakeProxy, scripted: Callable[[Script], ScriptedUpstream]
) -> None:
    """A chunked upload whose pieces come one by one, and after it on the same connection a head
    that could smuggle a request (Content-Length with Transfer-Encoding): the upload passes
    whole, the head after it is refused, and the upstream never sees it."""
    heads: list[bytes] = []
    bodies: list[bytes] = []
    first_head = threading.Event()

    def script(conn: socket.socket, _: int) -> None:
        buf = bytearray()
        while True:
            head = read_head(conn, buf)
            heads.append(head)
            first_head.set()
            bodies.append(read_chunked(conn, buf) if header(head, b"transfer-encoding") else b"")
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    up = scripted(script)
    dp, address = start(proxy, up)
    with client(address) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        wait_until(first_head.is_set, what="the upload's head upstream")
        for piece in [b"5\r\nhello\r\n", b"6\r\n world\r\n", b"0\r\n\r\n"]:
            s.sendall(piece)
        assert response(s)[::2] == (200, b"ok")
        s.sendall(b"GET /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n")
        status, _, _ = response(s)
    assert status == 400
    assert bodies == [b"hello world"]
    assert [h.split(b" ")[1] for h in heads] == [b"/up"]
    assert dp.stats()["listeners"]["web"]["refusals"]["bad_request"] == 1
