"""Egress end to end: a real control plane (each test with its --outbound-policy), real
sidecars with an HTTP proxy port, and curl through it (`curl -x`): REGISTRY_ONLY refuses a
host nobody declared with a 403, ALLOW_ANY lets a call to a local server through, an
ExternalService with TLS origination reaches a local HTTPS server signed by its own CA (the
app speaks plain HTTP to secure.test; the sidecar verifies the server's name and CA), and a
service outside the ExternalService's allowedServices gets a 403."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import unused_port, wait_until
from meshctl import ConfigError, validate_config
from meshproc import ControlPlane, Sidecar, service
from pki import TestPki


def _data_plane_knows_egress() -> bool:
    listener = {"name": "p", "address": "127.0.0.1:0", "routes": [], "egress": {"policy": "registry_only"}}
    try:
        validate_config({"listeners": [listener], "clusters": []})
    except ConfigError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _data_plane_knows_egress(), reason="the installed data plane predates egress (issue 15's Rust side)"
)


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.server.server_name} {self.path} host={self.headers['host']}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(name: str, context: ssl.SSLContext | None = None) -> tuple[http.server.ThreadingHTTPServer, int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.server_name = name
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def curl(proxy: int, url: str) -> tuple[int, str]:
    """(status, body) of `curl -x` through the sidecar's HTTP proxy port (0: no answer)."""
    out = subprocess.run(
        ["curl", "-s", "-m", "5", "-x", f"http://127.0.0.1:{proxy}", "-w", "\n%{http_code}", url],
        capture_output=True,
        text=True,
    )
    body, _, code = out.stdout.rpartition("\n")
    return int(code or 0), body


def start_cp(tmp: Path, policy: str) -> ControlPlane:
    cp = ControlPlane(tmp / "cp", args=("--outbound-policy", policy))
    cp.data_dir.mkdir()
    return cp.start()


def sidecar(cp: ControlPlane, name: str, tmp: Path) -> Sidecar:
    return Sidecar(cp, name, unused_port(), tmp, cp.join_token(name), http_proxy_port=unused_port()).start()


@pytest.fixture
def stack() -> Iterator[list[object]]:
    """Everything a test starts, stopped at its end (servers and processes)."""
    started: list[object] = []
    yield started
    for thing in reversed(started):
        if isinstance(thing, http.server.HTTPServer):
            thing.shutdown()
        else:
            thing.stop()  # type: ignore[attr-defined]


def test_registry_only_refuses_unknown_hosts_and_tls_origination_reaches_an_external_service(
    tmp_path: Path, stack: list[object]
) -> None:
    pki = TestPki(tmp_path / "pki")
    issued = pki.server("secure.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.chain, issued.key)
    https, https_port = serve("secure", context)
    plain, plain_port = serve("plain")
    stack += [https, plain]

    cp = start_cp(tmp_path, "REGISTRY_ONLY")
    stack.append(cp)
    cp.apply(service("frontend"), service("catalog"))
    secure = {
        "hosts": ["secure.test"],
        "ports": [{"port": 80, "protocol": "HTTP"}],
        "tls": {"caCertificates": pki.roots.read_text()},
        "endpoints": [{"address": "127.0.0.1", "port": https_port}],
        "allowedServices": ["frontend"],
    }
    cp.apply({"kind": "ExternalService", "metadata": {"name": "secure"}, "spec": secure})
    front, catalog = sidecar(cp, "frontend", tmp_path), sidecar(cp, "catalog", tmp_path)
    stack += [front, catalog]
    assert front.http_proxy_port and catalog.http_proxy_port

    # The app speaks plain HTTP to secure.test; its sidecar originates TLS checked against the CA.
    body = wait_until(
        lambda: (r := curl(front.http_proxy_port or 0, "http://secure.test/pay"))[0] == 200 and r[1],
        timeout=30,
        what="secure.test through the frontend's proxy",
    )
    assert body == "hello from secure /pay host=secure.test"

    # A host nobody declared: refused, counted.
    assert curl(front.http_proxy_port, f"http://unlisted.test:{plain_port}/")[0] == 403
    assert curl(front.http_proxy_port, f"http://127.0.0.1:{plain_port}/")[0] == 403
    egress = front.stats()["listeners"]["http-proxy"]["egress"]
    assert egress["denied"] >= 2

    # catalog is not in allowedServices.
    assert curl(catalog.http_proxy_port, "http://secure.test/pay")[0] == 403


def test_allow_any_lets_undeclared_hosts_through(tmp_path: Path, stack: list[object]) -> None:
    plain, plain_port = serve("plain")
    stack.append(plain)
    cp = start_cp(tmp_path, "ALLOW_ANY")
    stack.append(cp)
    cp.apply(service("frontend"))
    front = sidecar(cp, "frontend", tmp_path)
    stack.append(front)
    assert front.http_proxy_port
    status, body = curl(front.http_proxy_port, f"http://127.0.0.1:{plain_port}/open")
    assert (status, body) == (200, f"hello from plain /open host=127.0.0.1:{plain_port}")
    assert front.stats()["listeners"]["http-proxy"]["egress"]["passthrough"] >= 1
