"""Mesh mTLS in the data plane, with real TLS on both sides: a client-side
proxy (outbound) originates mTLS to a server-side proxy (inbound) that
forwards to an app. Checked with openssl s_client/s_server and curl too."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from helpers import HttpBackend, cluster, header_values, http_listener, route, wait_until
from meshctl import ConfigError, DataPlane
from pki import Issued, TestPki, openssl_server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

MakeProxy = Callable[..., DataPlane]


def sid(service: str, ns: str = "shop", td: str = "cluster.local") -> str:
    return f"spiffe://{td}/ns/{ns}/sa/{service}"


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


@pytest.fixture
def app() -> Iterator[HttpBackend]:
    b = HttpBackend()
    yield b
    b.stop()


def inbound(
    identity: dict[str, str], app: str, *, mode: str = "strict", protocol: str = "http", **extra: Any
) -> dict[str, Any]:
    if protocol == "http":
        listener = http_listener("inbound", [route("app")])
    else:
        listener = {"name": "inbound", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "app"}
    listener["tls"] = {"mode": mode}
    listener.update(extra)
    return {"identity": identity, "listeners": [listener], "clusters": [cluster("app", [app])]}


def outbound(
    identity: dict[str, str], peer: str, expected: list[str], *, protocol: str = "http", h2: bool = True
) -> dict[str, Any]:
    peer_cluster = cluster("peer", [peer], tls={"peer_ids": expected}, connect_timeout_ms=2000)
    if protocol == "http":
        peer_cluster["protocol"] = "http2" if h2 else "http1"
        listener = http_listener("out", [route("peer")])
    else:
        listener = {"name": "out", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "peer"}
    return {"identity": identity, "listeners": [listener], "clusters": [peer_cluster]}


def get(addr: str, path: str = "/", method: str = "GET") -> tuple[int, bytes]:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def s_client(addr: str, *args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """openssl s_client against addr; returncode 0 only when the handshake completed."""
    return subprocess.run(
        ["openssl", "s_client", "-connect", addr, "-brief", "-verify_return_error", "-ign_eof", *args],
        input=data,
        capture_output=True,
        timeout=20,
    )


@pytest.fixture
def pair(pki: TestPki, app: HttpBackend, proxy: MakeProxy) -> dict[str, Any]:
    """frontend's outbound -> mTLS -> catalog's inbound -> app."""
    server_id = pki.svid(sid("catalog"))
    client_id = pki.svid(sid("frontend"))
    server = proxy(inbound(server_id.identity(pki.roots), app.address))
    server_addr = server.addresses()["inbound"]
    client = proxy(outbound(client_id.identity(pki.roots), server_addr, [sid("catalog")]))
    return {"server": server, "client": client, "inbound": server_addr, "out": client.addresses()["out"]}


def test_requests_cross_mtls_and_the_app_learns_the_caller(pair: dict[str, Any], app: HttpBackend) -> None:
    for _ in range(20):
        status, _ = get(pair["out"], "/items")
        assert status == 200
    assert header_values(app.seen[-1], "x-forwarded-client-cert") == [f"URI={sid('frontend')}"]
    inbound_stats = pair["server"].stats()["listeners"]["inbound"]
    # HTTP/2 between the sidecars: a connection per worker at most, not one per request.
    assert 1 <= inbound_stats["tls"]["handshakes"] <= 2
    assert inbound_stats["connections"] <= 2
    assert pair["client"].stats()["identity"]["spiffe_id"] == sid("frontend")


def test_plaintext_to_a_strict_inbound_is_refused(pair: dict[str, Any], app: HttpBackend) -> None:
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        get(pair["inbound"], "/forged")
    curl = subprocess.run(["curl", "-sS", "-m", "5", f"http://{pair['inbound']}/forged"], capture_output=True)
    assert curl.returncode != 0
    assert pair["server"].stats()["listeners"]["inbound"]["tls"]["plaintext_rejected"] >= 2
    assert all(s["path"] != "/forged" for s in app.seen), "nothing plaintext reached the app"


def test_client_certificates_are_required_and_checked(pair: dict[str, Any], pki: TestPki, tmp_path: Path) -> None:
    addr = pair["inbound"]
    request = b"GET /via-openssl HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    # No client certificate.
    assert b"HTTP/1.1 200" not in s_client(addr, "-CAfile", str(pki.roots), data=request).stdout
    # A certificate from another root.
    stranger = TestPki(tmp_path / "other")
    other = stranger.svid(sid("frontend"))
    refused = s_client(addr, "-CAfile", str(pki.roots), "-cert", str(other.chain), "-key", str(other.key), data=request)
    assert b"HTTP/1.1 200" not in refused.stdout
    # Our root, but another trust domain.
    foreign = pki.svid(sid("frontend", td="other.example"))
    refused = s_client(
        addr, "-CAfile", str(pki.roots), "-cert", str(foreign.chain), "-key", str(foreign.key), data=request
    )
    assert b"HTTP/1.1 200" not in refused.stdout
    # Expired and not yet valid.
    for bad in (
        pki.svid(sid("frontend"), valid_from=dt.timedelta(hours=-2), valid_for=dt.timedelta(hours=1)),
        pki.svid(sid("frontend"), valid_from=dt.timedelta(hours=1)),
    ):
        refused = s_client(addr, "-CAfile", str(pki.roots), "-cert", str(bad.chain), "-key", str(bad.key), data=request)
        assert b"HTTP/1.1 200" not in refused.stdout
    # The right certificate: TLS 1.3, and the request gets through.
    good = pki.svid(sid("frontend"))
    ok = s_client(addr, "-CAfile", str(pki.roots), "-cert", str(good.chain), "-key", str(good.key), data=request)
    assert b"HTTP/1.1 200" in ok.stdout, ok.stderr
    assert b"TLSv1.3" in ok.stderr + ok.stdout
    stats = pair["server"].stats()["listeners"]["inbound"]["tls"]
    assert stats["handshake_failures"] >= 4


def test_the_peer_must_present_the_expected_spiffe_id(
    pki: TestPki, app: HttpBackend, proxy: MakeProxy, pair: dict[str, Any]
) -> None:
    impostor = proxy(outbound(pki.svid(sid("frontend")).identity(pki.roots), pair["inbound"], [sid("payments")]))
    status, body = get(impostor.addresses()["out"], "/secret")
    assert status in (502, 503), body
    assert impostor.stats()["clusters"]["peer"]["connect_failures"] >= 1
    assert all(s["path"] != "/secret" for s in app.seen)


def openssl_peer(cert: Issued, roots: Path) -> contextlib.AbstractContextManager[str]:
    """openssl s_server playing a peer sidecar (TLS 1.3, client certificate required)."""
    return openssl_server(cert, "-tls1_3", "-www", "-Verify", "1", "-CAfile", str(roots))


def test_expired_or_wrong_certificates_on_the_server_side_are_refused(
    pki: TestPki, proxy: MakeProxy, tmp_path: Path
) -> None:
    client = pki.svid(sid("frontend")).identity(pki.roots)
    cases = {
        "good": (pki.svid(sid("catalog")), 200),  # the control: the same setup succeeds
        "expired": (
            pki.svid(sid("catalog"), valid_from=dt.timedelta(hours=-2), valid_for=dt.timedelta(hours=1)),
            502,
        ),
        "not-yet-valid": (pki.svid(sid("catalog"), valid_from=dt.timedelta(hours=1)), 502),
        "other-root": (TestPki(tmp_path / "other").svid(sid("catalog")), 502),
        "wrong-id": (pki.svid(sid("payments")), 502),
    }
    for name, (cert, expected) in cases.items():
        with openssl_peer(cert, pki.roots) as peer:
            dp = proxy(outbound(client, peer, [sid("catalog")], h2=False))
            status, _ = get(dp.addresses()["out"])
            assert status == expected, name


def test_permissive_lets_plaintext_in_and_counts_it(pki: TestPki, app: HttpBackend, proxy: MakeProxy) -> None:
    server = proxy(inbound(pki.svid(sid("catalog")).identity(pki.roots), app.address, mode="permissive"))
    addr = server.addresses()["inbound"]
    assert get(addr, "/plain")[0] == 200
    assert header_values(app.seen[-1], "x-forwarded-client-cert") == []
    client = proxy(outbound(pki.svid(sid("frontend")).identity(pki.roots), addr, [sid("catalog")]))
    assert get(client.addresses()["out"], "/tls")[0] == 200
    assert header_values(app.seen[-1], "x-forwarded-client-cert") == [f"URI={sid('frontend')}"]
    tls = server.stats()["listeners"]["inbound"]["tls"]
    assert tls["plaintext_accepted"] == 1 and tls["handshakes"] >= 1


def test_a_forged_client_identity_header_is_replaced(pair: dict[str, Any], app: HttpBackend) -> None:
    host, port = pair["out"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/", headers={"x-forwarded-client-cert": f"URI={sid('admin')}"})
    assert conn.getresponse().status == 200
    conn.close()
    assert header_values(app.seen[-1], "x-forwarded-client-cert") == [f"URI={sid('frontend')}"]


def test_tcp_over_mtls(pki: TestPki, proxy: MakeProxy) -> None:
    app = HttpBackend()
    try:
        server = proxy(inbound(pki.svid(sid("db")).identity(pki.roots), app.address, protocol="tcp"))
        client = proxy(
            outbound(
                pki.svid(sid("frontend")).identity(pki.roots),
                server.addresses()["inbound"],
                [sid("db")],
                protocol="tcp",
            )
        )
        assert get(client.addresses()["out"], "/rows")[0] == 200
        assert app.seen[-1]["path"] == "/rows"
        assert server.stats()["listeners"]["inbound"]["tls"]["handshakes"] == 1
    finally:
        app.stop()


def test_bad_identities_are_refused_with_field_paths(pki: TestPki, app: HttpBackend, tmp_path: Path) -> None:
    def errors(identity: dict[str, str]) -> list[tuple[str, str]]:
        with pytest.raises(ConfigError) as e:
            DataPlane(inbound(identity, app.address))
        return e.value.errors

    expired = pki.svid(sid("catalog"), valid_from=dt.timedelta(hours=-2), valid_for=dt.timedelta(hours=1))
    assert [p for p, _ in errors(expired.identity(pki.roots))] == ["identity.cert_chain"]
    early = pki.svid(sid("catalog"), valid_from=dt.timedelta(hours=1))
    assert [p for p, _ in errors(early.identity(pki.roots))] == ["identity.cert_chain"]
    good, other = pki.svid(sid("catalog")), pki.svid(sid("catalog"))
    mismatched = {**good.identity(pki.roots), "private_key_file": str(other.key)}
    assert [p for p, _ in errors(mismatched)] == ["identity.private_key"]
    stranger = TestPki(tmp_path / "other")
    assert [p for p, _ in errors(good.identity(stranger.roots))] == ["identity.cert_chain"]
    missing = {**good.identity(pki.roots), "roots_file": str(tmp_path / "nope.pem")}
    assert [p for p, _ in errors(missing)] == ["identity.roots_file"]
    no_id = pki.server("catalog.example")
    assert [p for p, _ in errors(no_id.identity(pki.roots))] == ["identity.cert_chain"]
    # Mesh TLS without an identity at all.
    config = inbound(good.identity(pki.roots), app.address)
    del config["identity"]
    with pytest.raises(ConfigError) as e:
        DataPlane(config)
    assert [p for p, _ in e.value.errors] == ["listeners[0].tls"]


def test_the_private_key_never_shows_in_config(pki: TestPki, app: HttpBackend, proxy: MakeProxy) -> None:
    cert = pki.svid(sid("catalog"))
    inline = {"cert_chain": cert.chain.read_text(), "private_key": cert.key.read_text(), "roots": pki.roots.read_text()}
    dp = proxy(inbound(inline, app.address))
    shown = json.dumps(dp.config())
    assert "PRIVATE KEY" not in shown
    assert "<redacted>" in shown


def _renew(dp: DataPlane, config: dict[str, Any], cert: Issued, roots: Path) -> None:
    config["identity"] = cert.identity(roots)
    dp.update(config)


def _served_serial(addr: str, pki: TestPki, client: Issued) -> int:
    """The serial number of the certificate a mesh inbound presents now."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(pki.roots)
    ctx.load_cert_chain(client.chain, client.key)
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_a_renewed_certificate_is_served_without_dropping_connections(
    pki: TestPki, app: HttpBackend, proxy: MakeProxy
) -> None:
    first = pki.svid(sid("catalog"))
    config = inbound(first.identity(pki.roots), app.address)
    server = proxy(config)
    addr = server.addresses()["inbound"]
    caller = pki.svid(sid("frontend"))
    # One worker: one h2 connection, made before the renewal.
    client = proxy(outbound(caller.identity(pki.roots), addr, [sid("catalog")]), workers=1)
    out = client.addresses()["out"]
    assert get(out)[0] == 200
    before = _served_serial(addr, pki, caller)

    second = pki.svid(sid("catalog"))
    _renew(server, config, second, pki.roots)
    after = _served_serial(addr, pki, caller)
    assert after != before, "the next handshake presents the new certificate"

    # The h2 connection made before the renewal still carries requests: 1 handshake, + 2 probes.
    def handshakes() -> int:
        return int(server.stats()["listeners"]["inbound"]["tls"]["handshakes"])

    wait_until(lambda: handshakes() == 3, what="the probes' handshakes counted")
    for _ in range(10):
        assert get(out)[0] == 200
    assert handshakes() == 3
    assert server.stats()["identity"]["not_after"] >= first_not_after(first)


def first_not_after(cert: Issued) -> int:
    return int(x509.load_pem_x509_certificate(cert.chain.read_bytes()).not_valid_after_utc.timestamp())


def test_a_new_trust_bundle_applies_to_the_next_handshake(
    pki: TestPki, app: HttpBackend, proxy: MakeProxy, tmp_path: Path
) -> None:
    """Root rotation at the data plane: trust [old, new], then peers with new-root SVIDs get in."""
    newer = TestPki(tmp_path / "newer")
    both = tmp_path / "both.pem"
    both.write_bytes(pki.roots.read_bytes() + newer.roots.read_bytes())
    config = inbound(pki.svid(sid("catalog")).identity(pki.roots), app.address)
    server = proxy(config)
    addr = server.addresses()["inbound"]
    caller = newer.svid(sid("frontend"))
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    as_caller = ("-CAfile", str(pki.roots), "-cert", str(caller.chain), "-key", str(caller.key))
    assert b"200" not in s_client(addr, *as_caller, data=request).stdout
    config["identity"]["roots_file"] = str(both)
    server.update(config)
    assert b"HTTP/1.1 200" in s_client(addr, *as_caller, data=request).stdout


def test_websocket_upgrades_cross_an_h2_mtls_cluster(pki: TestPki, proxy: MakeProxy) -> None:
    """h2 has no Upgrade: the tunnel goes over an HTTP/1.1 mTLS connection of the same cluster."""

    def echo(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    server = serve(echo, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.socket.getsockname()[:2]
        inner = proxy(inbound(pki.svid(sid("chat")).identity(pki.roots), f"{host}:{port}"))
        caller = pki.svid(sid("frontend")).identity(pki.roots)
        outer = proxy(outbound(caller, inner.addresses()["inbound"], [sid("chat")]))
        with connect(f"ws://{outer.addresses()['out']}/ws", open_timeout=5, close_timeout=5) as ws:
            for i in range(10):
                ws.send(f"hello {i}")
                assert ws.recv(timeout=5) == f"hello {i}"
        assert outer.stats()["clusters"]["peer"]["responses"]["1xx"] == 1
    finally:
        server.shutdown()
        thread.join(5)
