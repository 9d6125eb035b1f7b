"""``ApiClient`` with several control-plane URLs (issue 16): real sockets,
one port that refuses, servers that answer as each test says. It sticks to
the URL that answered, moves on when one does not answer or answers 503,
never on a 4xx nor on a certificate it does not trust, and sends a POST to
the next URL only when it surely never left."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers import unused_port
from meshctl.client import ApiClient, ApiError, TrustError, Unreachable, split_urls
from meshctl.trust import SERVING_CA_PATH, Trust, ca_pin


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Replica

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.hits.append(f"{self.command} {self.path}")
        if self.server.hang:  # took the request, never answers (a replica dying mid-request)
            self.connection.close()
            return
        if self.server.breaks:  # a stream's first line, then the replica dies
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nline\n\r\n")
            self.wfile.flush()
            self.connection.close()
            return
        body = b'{"detail": "no"}' if self.server.status >= 400 else b'{"by": "%s"}' % self.server.name.encode()
        if self.path == SERVING_CA_PATH and self.server.ca_pem:  # what a pin is checked against
            body = json.dumps({"ca_pem": self.server.ca_pem}).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class Replica(ThreadingHTTPServer):
    """A server standing in for one replica: answers `status` (its name in a JSON body), or closes
    the connection without answering when `hang`, or after a stream's first line when `breaks`."""

    daemon_threads = True

    def __init__(self, name: str, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name, self.status, self.hang, self.breaks = name, 200, False, False
        self.ca_pem = ""
        self.hits: list[str] = []
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def servers() -> Iterator[list[Replica]]:
    made = [Replica("a"), Replica("b")]
    yield made
    for s in made:
        s.shutdown()
        s.server_close()


def refusing() -> str:
    return f"http://127.0.0.1:{unused_port()}"


def test_split_urls_takes_commas_and_repeats_and_names_a_bad_one() -> None:
    assert split_urls(["http://a:1/,http://b:2", "http://a:1", " https://c:3 "]) == [
        "http://a:1",
        "http://b:2",
        "https://c:3",
    ]
    with pytest.raises(ValueError, match="'b:2' is not"):
        split_urls("http://a:1,b:2")
    with pytest.raises(ValueError, match="no control-plane URL"):
        split_urls([])


def test_a_refused_url_is_skipped_and_the_one_that_answered_is_sticky(servers: list[Replica]) -> None:
    a, b = servers
    api = ApiClient([refusing(), a.url, b.url], None)
    assert api.get("/x") == {"by": "a"}
    assert api.url == a.url
    assert api.get("/y") == {"by": "a"}  # sticky: no new attempt on the refusing one
    assert a.hits == ["GET /x", "GET /y"] and b.hits == []
    # a goes away: the next request goes to b (round-robin), which becomes the sticky one.
    a.shutdown()
    a.server_close()
    assert api.get("/z") == {"by": "b"}
    assert api.url == b.url
    assert api.get("/w") == {"by": "b"}


def test_a_4xx_is_an_answer_and_a_503_moves_on(servers: list[Replica]) -> None:
    a, b = servers
    api = ApiClient(f"{a.url},{b.url}", None)
    a.status = 404
    with pytest.raises(ApiError) as e:
        api.get("/missing")
    assert e.value.status == 404 and b.hits == []  # never a failover
    a.status = 503  # a replica shutting down
    assert api.get("/x") == {"by": "b"}
    assert api.url == b.url
    b.status = 503
    with pytest.raises(ApiError) as e:  # every one unavailable: the 503s, not "unreachable"
        api.get("/x")
    assert e.value.status == 503


def test_nothing_answers_names_every_url() -> None:
    one, two = refusing(), refusing()
    with pytest.raises(Unreachable) as e:
        ApiClient([one, two], None).get("/x")
    assert one in str(e.value) and two in str(e.value)


def test_a_post_moves_on_only_when_it_never_left(servers: list[Replica]) -> None:
    a, b = servers
    api = ApiClient([refusing(), a.url, b.url], None)
    assert api.post("/apply", {"x": 1}) == {"by": "a"}  # refused: never sent, so sent to the next
    a.hang = True  # a took it and died before answering: it may be done, not sent again
    with pytest.raises(Unreachable):
        api.post("/apply", {"x": 2})
    assert b.hits == []
    assert api.get("/read") == {"by": "b"}  # a GET is sent again whatever became of it


def test_a_stream_fails_over_when_opened_and_moves_on_when_it_breaks(servers: list[Replica]) -> None:
    a, b = servers
    api = ApiClient([refusing(), a.url, b.url], None)
    assert list(api.lines("/watch", timeout=5)) == [b'{"by": "a"}']
    assert api.url == a.url
    a.breaks = True  # the stream's replica is killed: the next request starts past it
    got = []
    with pytest.raises(Unreachable):
        for line in api.lines("/watch", timeout=5):
            got.append(line)
    assert got == [b"line\n"] and b.hits == []
    assert api.url == b.url
    a.hang = True  # opening a stream fails over as any GET does
    assert list(api.lines("/watch", timeout=5)) == [b'{"by": "b"}']


# === trust: one CA for every replica; a certificate not trusted is no failover ===


def _ca_and_server_context(tmp: Path, name: str) -> tuple[Path, ssl.SSLContext]:
    """A CA (its PEM file) and a server context with a certificate for 127.0.0.1 it signed."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = tmp / f"{name}-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain, key_file = tmp / f"{name}.pem", tmp / f"{name}.key"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain, key_file)
    return ca_file, ctx


def test_one_ca_file_trusts_every_replica_and_a_stranger_is_no_failover(tmp_path: Path) -> None:
    ca_file, ctx = _ca_and_server_context(tmp_path, "mesh")
    _, stranger_ctx = _ca_and_server_context(tmp_path, "stranger")
    a, b, stranger = Replica("a", ctx), Replica("b", ctx), Replica("stranger", stranger_ctx)
    try:
        api = ApiClient([refusing(), a.url, b.url], "secret", trust=Trust(a.url, ca_file=ca_file))
        assert api.get("/x") == {"by": "a"}
        a.shutdown()
        a.server_close()
        assert api.get("/x") == {"by": "b"}  # the same trust verifies the other replica
        api = ApiClient([stranger.url, b.url], "secret", trust=Trust(stranger.url, ca_file=ca_file))
        with pytest.raises(TrustError):
            api.get("/x")
        assert b.hits == ["GET /x"] and stranger.hits == []  # (b's hit is the earlier client's)
    finally:
        for s in (b, stranger):
            s.shutdown()
            s.server_close()


def test_a_replica_that_resets_the_tls_handshake_is_skipped(servers: list[Replica], tmp_path: Path) -> None:
    """A TLS failure that is not about trust (the peer is not speaking TLS) is a failover."""
    ca_file, ctx = _ca_and_server_context(tmp_path, "mesh")
    plain = servers[0]
    good = Replica("good", ctx)
    try:
        not_tls = plain.url.replace("http:", "https:")
        api = ApiClient([not_tls, good.url], None, trust=Trust(good.url, ca_file=ca_file))
        assert api.get("/x") == {"by": "good"}
    finally:
        good.shutdown()
        good.server_close()


def test_one_pin_is_checked_against_the_first_replica_that_answers(tmp_path: Path) -> None:
    """A pin's CA is asked of the URL the first request goes to; a dead one moves on to the next."""
    ca_file, ctx = _ca_and_server_context(tmp_path, "mesh")
    a, b = Replica("a", ctx), Replica("b", ctx)
    for r in (a, b):
        r.ca_pem = ca_file.read_text()
    try:
        pin = ca_pin(ca_file.read_text())
        dead = f"https://127.0.0.1:{unused_port()}"
        api = ApiClient([dead, a.url, b.url], "secret", trust=Trust(dead, pin=pin))
        assert api.get("/x") == {"by": "a"}
        assert a.hits == [f"GET {SERVING_CA_PATH}", "GET /x"]
        a.shutdown()
        a.server_close()
        assert api.get("/x") == {"by": "b"} and b.hits == ["GET /x"]  # the CA learnt from a trusts b
    finally:
        b.shutdown()
        b.server_close()
