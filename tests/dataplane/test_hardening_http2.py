"""HTTP/2 limits and abuse defences (issue 14), with a small raw-frame client written here
(RFC 9113 framing, HPACK literals only) and h2load: the settings a listener advertises,
refused streams past the concurrency limit, oversized header lists, rapid reset
(CVE-2023-44487) and a CONTINUATION flood each end in GOAWAY or a refused stream, counted, and
the proxy serves the next client as before."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from helpers import HttpBackend, cluster, http_listener, route, wait_until
from meshctl import DataPlane

MakeProxy = Callable[..., DataPlane]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
CANCEL, REFUSED_STREAM, ENHANCE_YOUR_CALM = 0x8, 0x7, 0xB
MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE = 0x3, 0x6


@dataclass
class Frame:
    type: int
    flags: int
    stream: int
    payload: bytes


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name_index: int, value: bytes) -> bytes:
    """An HPACK literal without indexing, name from the static table, value not Huffman-coded."""
    assert name_index < 15
    out = bytes([name_index])
    n = len(value)
    if n < 127:
        return out + bytes([n]) + value
    n -= 127
    length = bytearray([127])
    while n >= 128:
        length.append((n & 0x7F) | 0x80)
        n >>= 7
    length.append(n)
    return out + bytes(length) + value


def get_block(path: bytes = b"/", extra: bytes = b"") -> bytes:
    # :method GET, :scheme http (static indices 2 and 6), :path and :authority as literals.
    return b"\x82\x86" + literal(4, path) + literal(1, b"web") + extra


class H2Client:
    """A raw HTTP/2 connection: write frames, read frames, nothing checked on our side."""

    def __init__(self, addr: str) -> None:
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buf = b""
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        self.settings: dict[int, int] = {}
        first = self.read()
        assert first is not None and first.type == SETTINGS
        for i in range(0, len(first.payload), 6):
            key, value = struct.unpack(">HI", first.payload[i : i + 6])
            self.settings[key] = value
        self.sock.sendall(frame(SETTINGS, ACK, 0))

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False  # the server closed on us: what the abuse tests expect

    def read(self, timeout: float = 10.0) -> Frame | None:
        """The next frame; None when the connection closed."""
        self.sock.settimeout(timeout)
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return None
            if not chunk:
                return None
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        kind, flags = self.buf[3], self.buf[4]
        stream = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
        f = Frame(kind, flags, stream, self.buf[9 : 9 + n])
        self.buf = self.buf[9 + n :]
        return f

    def frames_until(self, done: Callable[[Frame], bool], timeout: float = 15.0) -> tuple[list[Frame], bool]:
        """Frames until `done` says so (True) or the connection closes (False)."""
        seen: list[Frame] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            f = self.read(timeout=max(0.1, deadline - time.monotonic()))
            if f is None:
                return seen, False
            seen.append(f)
            if f.type == PING and not f.flags & ACK:
                self.send(frame(PING, ACK, 0, f.payload))
            if done(f):
                return seen, True
        raise AssertionError(f"neither done nor closed within {timeout}s: {[(x.type, x.stream) for x in seen[-5:]]}")

    def close(self) -> None:
        self.sock.close()


def goaway_code(f: Frame) -> int:
    return int(struct.unpack(">I", f.payload[4:8])[0])


@pytest.fixture
def slow(http_backend: Callable[..., HttpBackend]) -> HttpBackend:
    """An upstream that takes a while, so that streams are in flight when the client acts."""
    return http_backend(delay=0.3)


def start(proxy: MakeProxy, upstream: str, **limits: int) -> tuple[DataPlane, str]:
    web = http_listener("web", [route("up")])
    if limits:
        web["limits"] = limits
    dp = proxy({"listeners": [web], "clusters": [cluster("up", [upstream])]})
    return dp, dp.addresses()["web"]


def refusals(dp: DataPlane) -> dict[str, int]:
    return dict(dp.stats()["listeners"]["web"]["refusals"])


def still_serves(addr: str) -> None:
    c = H2Client(addr)
    try:
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, get_block()))
        frames, _ = c.frames_until(lambda f: f.type == HEADERS and f.stream == 1)
        assert frames[-1].type == HEADERS
    finally:
        c.close()


def test_settings_and_concurrent_streams(proxy: MakeProxy, slow: HttpBackend) -> None:
    _, addr = start(proxy, slow.address, h2_max_concurrent_streams=5, h2_max_header_list_bytes=8192)
    c = H2Client(addr)
    try:
        assert c.settings[MAX_CONCURRENT_STREAMS] == 5
        assert c.settings[MAX_HEADER_LIST_SIZE] == 8192
        # Ten streams at once, past the advertised five: the extra ones are refused, not queued.
        c.send(b"".join(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, get_block()) for i in range(10)))
        answered: set[int] = set()
        refused: set[int] = set()

        def settled(f: Frame) -> bool:
            if f.type == HEADERS:
                answered.add(f.stream)
            elif f.type == RST_STREAM and struct.unpack(">I", f.payload)[0] == REFUSED_STREAM:
                refused.add(f.stream)
            return len(answered) + len(refused) == 10

        _, done = c.frames_until(settled)
        assert done
        assert len(answered) == 5 and len(refused) == 5, (answered, refused)
    finally:
        c.close()


def test_oversized_header_list_is_not_forwarded(proxy: MakeProxy, http_backend: Callable[..., HttpBackend]) -> None:
    b = http_backend()
    _, addr = start(proxy, b.address, h2_max_header_list_bytes=8192)
    c = H2Client(addr)
    try:
        big = get_block(extra=literal(14, b"x" * 12000))  # 14: accept-charset, any name will do
        c.send(frame(HEADERS, END_STREAM, 1, big[:8000]) + frame(CONTINUATION, END_HEADERS, 1, big[8000:]))
        frames, _ = c.frames_until(lambda f: (f.stream == 1 and f.type in (HEADERS, RST_STREAM)) or f.type == GOAWAY)
        last = frames[-1]
        if last.type == HEADERS:  # answered by the proxy itself: 431 (HPACK static index 0x08 is :status 200)
            assert last.payload[:1] != b"\x88"
    finally:
        c.close()
    assert b.seen == []
    still_serves(addr)


def test_rapid_reset_gets_goaway_and_is_counted(proxy: MakeProxy, slow: HttpBackend) -> None:
    dp, addr = start(proxy, slow.address, h2_max_resets=50, h2_max_concurrent_streams=100)
    c = H2Client(addr)
    try:
        # Open a stream and cancel it at once, over and over: each is work for the server (the
        # request starts upstream) and nothing for the client.
        sent = 0
        for batch in range(20):
            burst = b"".join(
                frame(HEADERS, END_HEADERS | END_STREAM, s, get_block())
                + frame(RST_STREAM, 0, s, struct.pack(">I", CANCEL))
                for s in range(2 * 25 * batch + 1, 2 * 25 * (batch + 1) + 1, 2)
            )
            if not c.send(burst):
                break
            sent += 25
        frames, done = c.frames_until(lambda f: f.type == GOAWAY, timeout=20)
        assert done, "no GOAWAY: the connection was dropped without one"
        assert goaway_code(frames[-1]) in (0, ENHANCE_YOUR_CALM)
    finally:
        c.close()
    wait_until(lambda: refusals(dp)["h2_abuse"] >= 1, what="rapid reset counted")
    # Far fewer requests reached the upstream than the client started.
    assert len(slow.seen) < sent
    still_serves(addr)


def test_continuation_flood_is_cut(proxy: MakeProxy, http_backend: Callable[..., HttpBackend]) -> None:
    b = http_backend()
    _, addr = start(proxy, b.address)
    c = H2Client(addr)
    try:
        # A header block that never ends: CONTINUATION frames without END_HEADERS.
        block = get_block(extra=literal(14, b"y" * 200_000))
        c.send(frame(HEADERS, END_STREAM, 1, block[:100]))
        started = time.monotonic()
        for i in range(100, len(block), 10):
            if not c.send(frame(CONTINUATION, 0, 1, block[i : i + 10])):
                break
            if time.monotonic() - started > 20:
                pytest.fail("the server kept reading the flood for 20 s")
        # GOAWAY, or at least the connection closed (frames_until fails if neither comes).
        c.frames_until(lambda f: f.type == GOAWAY, timeout=10)
    finally:
        c.close()
    assert b.seen == []
    still_serves(addr)


@pytest.mark.skipif(shutil.which("h2load") is None, reason="needs h2load (nghttp2-client)")
def test_h2load_within_the_limits(proxy: MakeProxy, http_backend: Callable[..., HttpBackend]) -> None:
    """Legitimate load is untouched by the defences: every request succeeds."""
    b = http_backend()
    dp, addr = start(proxy, b.address)
    out = subprocess.run(
        ["h2load", "-n", "2000", "-c", "4", "-m", "20", f"http://{addr}/"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "2000 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout[-1500:]
    assert not any(refusals(dp).values())


def test_an_idle_connection_gets_goaway(proxy: MakeProxy, http_backend: Callable[..., HttpBackend]) -> None:
    """No stream open for idle_timeout: GOAWAY, counted; frames that are not streams (PINGs)
    do not keep the connection open."""
    b = http_backend()
    dp, addr = start(proxy, b.address, idle_timeout_ms=600)
    c = H2Client(addr)
    try:
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, get_block()))
        c.frames_until(lambda f: f.type == HEADERS and f.stream == 1)
        answered = time.monotonic()
        for _ in range(4):  # PINGs every 0.2 s: traffic, but no stream
            time.sleep(0.2)
            c.send(frame(PING, 0, 0, b"12345678"))
        frames, done = c.frames_until(lambda f: f.type == GOAWAY, timeout=10)
        assert done
        assert 0.55 < time.monotonic() - answered < 5
        assert goaway_code(frames[-1]) == 0
    finally:
        c.close()
    wait_until(lambda: refusals(dp)["idle_timeout"] == 1, what="idle close counted")
