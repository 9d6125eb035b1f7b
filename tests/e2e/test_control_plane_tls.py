"""HTTPS on the control-plane API (issue 13, item 14): a real control plane
serving TLS from the mesh CA or an operator's certificate, real sidecars
joining with a CA pin (and refusing a wrong one before any token leaves), the
CLI trusting the data dir's CA, and plain HTTP refused off loopback."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import HttpBackend, unused_port, wait_until
from meshproc import ControlPlane, Sidecar, service
from pki import TestPki

#: A sampled W3C trace context: the first hop keeps the caller's decision.
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("cp"), args=("--tls",), scheme="https").start()
    plane.apply(service("api"))
    yield plane
    plane.stop()


def _pin(cp: ControlPlane) -> str:
    return str(httpx.get(f"{cp.url}/api/v1/ca/serving", verify=False, timeout=5).json()["ca_hash"])


def _meshctl(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
    return subprocess.run(
        [sys.executable, "-m", "meshctl", *args],
        capture_output=True,
        text=True,
        env=clean | {"COLUMNS": "200"} | env,
        timeout=timeout,
    )


def _proxy(url: str, token: str, workdir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`meshctl proxy --control-plane url` for api that is expected to exit (a refusal)."""
    token_file = workdir / "api.join-token"
    token_file.write_text(token)
    args = ["proxy", "--control-plane", url, "--service", "api", "--app-port", str(unused_port())]
    args += ["--token-file", str(token_file), "--cache-dir", str(workdir / "cache"), "--admin-port", str(unused_port())]
    return _meshctl(*args, *flags, env={})


def test_serving_ca_is_public_and_pinned_by_its_public_key(cp: ControlPlane) -> None:
    from meshctl.control.ca.serving import serving_ca_hash
    from meshctl.trust import ca_pin

    r = httpx.get(f"{cp.url}/api/v1/ca/serving", timeout=5, verify=cp._verify)  # no token
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["tls"] is True
    assert doc["ca_pem"] == cp.call("GET", "/api/v1/identity/bundle").json()["roots"][0]  # the mesh root
    assert doc["ca_hash"] == ca_pin(doc["ca_pem"]) == serving_ca_hash(cp.data_dir)
    assert (cp.data_dir / "tls" / "serving.key").stat().st_mode & 0o777 == 0o600
    # Plain HTTP to this port is no API.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{cp.port}/healthz", timeout=5)


def test_sidecar_joins_with_the_pin_and_restarts_from_its_store(cp: ControlPlane, tmp_path: Path) -> None:
    pin = _pin(cp)
    sidecar = Sidecar(cp, "api", unused_port(), tmp_path, cp.join_token("api"), args=("--ca-hash", pin)).start()
    try:
        wait_until(lambda: [s for s in cp.sidecars() if s["service"] == "api"], timeout=30, what="api to register")
        stores = list((tmp_path / "cache").glob("*/control-plane-ca.pem"))
        assert len(stores) == 1 and stores[0].stat().st_mode & 0o777 == 0o600
        assert cp.call("GET", "/api/v1/identity/bundle").json()["roots"][0].strip() in stores[0].read_text()
    finally:
        sidecar.stop()
    # Restarted without --ca-hash: the CA it trusted at bootstrap is enough.
    again = Sidecar(
        cp,
        "api",
        sidecar.app_port,
        tmp_path,
        sidecar.token,
        inbound_port=sidecar.inbound_port,
        admin_port=sidecar.admin_port,
    ).start()
    again.stop()


def test_a_wrong_pin_is_refused_with_a_clear_error(cp: ControlPlane, tmp_path: Path) -> None:
    before = len(cp.sidecars())
    out = _proxy(cp.url, cp.join_token("api"), tmp_path, "--ca-hash", "sha256:" + "0" * 64)
    assert out.returncode == 2, out.stderr
    assert f"presents the CA {_pin(cp)}, not the pinned sha256:{'0' * 64}" in out.stderr
    assert "no token was sent" in out.stderr
    assert len(cp.sidecars()) == before


class _Impostor(ThreadingHTTPServer):
    """An HTTPS server that is not the control plane: it answers the serving-CA question with
    `ca_pem` and records every request it gets, headers included."""

    def __init__(self, cert: Any, ca_pem: str):
        super().__init__(("127.0.0.1", 0), _Recorder)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert.chain, cert.key)
        self.socket = ctx.wrap_socket(self.socket, server_side=True)
        self.ca_pem, self.seen = ca_pem, list[tuple[str, str, dict[str, str]]]()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.server_address[1]}"


class _Recorder(BaseHTTPRequestHandler):
    server: _Impostor

    def _answer(self) -> None:
        self.server.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        body = json.dumps({"tls": True, "ca_pem": self.server.ca_pem, "ca_hash": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("answer", ["its own CA", "the real CA"])
def test_an_impostor_never_sees_the_token(cp: ControlPlane, tmp_path: Path, answer: str) -> None:
    """Someone else at the address, with its own CA (the pin differs) or claiming the real one (the
    pin matches, but its certificate does not verify): the sidecar sends it no token."""
    pki = TestPki(tmp_path / "pki", "impostor")
    ca_pem = pki.roots.read_text() if answer == "its own CA" else (cp.data_dir / "tls" / "ca.pem").read_text()
    impostor = _Impostor(pki.server("localhost"), ca_pem)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    try:
        token = cp.join_token("api")
        out = _proxy(impostor.url, token, tmp_path, "--ca-hash", _pin(cp))
    finally:
        impostor.shutdown()
    assert out.returncode == 2, out.stderr
    assert ("not the pinned" if answer == "its own CA" else "does not verify against the CA pinned") in out.stderr
    assert [(m, p) for m, p, _ in impostor.seen] == [("GET", "/api/v1/ca/serving")]
    assert all("authorization" not in h and token not in json.dumps(h) for _, _, h in impostor.seen)


def test_cli_trusts_the_data_dir_ca_or_a_pin_or_a_file(cp: ControlPlane, tmp_path: Path) -> None:
    token = cp.token("admin")
    env = {"MESHCTL_SERVER": cp.url, "MESHCTL_TOKEN": token}
    # On the control-plane host: the data dir's tls/ca.pem, found by itself.
    out = _meshctl("status", env=env | {"MESHCTL_DATA_DIR": str(cp.data_dir)})
    assert out.returncode == 0, out.stderr
    # Elsewhere, nothing to trust it by: refused, and said why.
    elsewhere = env | {"MESHCTL_DATA_DIR": str(tmp_path)}
    out = _meshctl("status", env=elsewhere)
    assert out.returncode == 1 and "does not verify against the system's trust store" in out.stderr
    for flags in (("--ca-hash", _pin(cp)), ("--ca-file", str(cp.data_dir / "tls" / "ca.pem"))):
        out = _meshctl(*flags, "status", env=elsewhere)
        assert out.returncode == 0, (flags, out.stderr)
    out = _meshctl("--ca-hash", "sha256:" + "1" * 64, "status", env=elsewhere)
    assert out.returncode == 1 and "not the pinned" in out.stderr


def test_operator_certificate(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki", "operator root")
    leaf = pki.server("localhost")
    (tmp_path / "cp").mkdir()
    cp = ControlPlane(
        tmp_path / "cp",
        args=("--tls-cert", str(leaf.chain), "--tls-key", str(leaf.key)),
        scheme="https",
        host="localhost",
        verify=str(pki.roots),
    ).start()
    try:
        # Its chain file names no CA: nothing to pin, clients use --ca-file (or their system store).
        assert cp.ok("GET", "/api/v1/ca/serving") == {"tls": True, "ca_pem": None, "ca_hash": None}
        env = {"MESHCTL_SERVER": cp.url, "MESHCTL_TOKEN": cp.token("admin"), "MESHCTL_DATA_DIR": str(cp.data_dir)}
        out = _meshctl("--ca-file", str(pki.roots), "status", env=env)
        assert out.returncode == 0, out.stderr
        out = _meshctl("status", env=env)  # the mesh CA did not sign it
        assert out.returncode == 1 and "does not verify" in out.stderr
        cp.apply(service("api"))
        sidecar = Sidecar(cp, "api", unused_port(), tmp_path, cp.join_token("api"), args=("--ca-file", str(pki.roots)))
        sidecar.start().stop()
    finally:
        cp.stop()


def _host_address() -> str | None:
    """An address of this host other than loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_plain_http_off_loopback_only_when_asked(tmp_path: Path) -> None:
    # Clients: refused before any connection, with the reason.
    out = _meshctl("status", "--server", "http://192.0.2.1:15010", env={"MESHCTL_TOKEN": "x"})
    assert out.returncode == 2 and "plain HTTP to a host other than this one" in out.stderr
    out = _proxy("http://192.0.2.1:15010", "x", tmp_path)
    assert out.returncode == 2 and "--insecure" in out.stderr
    # The server bound to every interface serves HTTPS by default ...
    for d in ("https", "plain"):
        (tmp_path / d).mkdir()
    https = ControlPlane(tmp_path / "https", args=("--host", "0.0.0.0"), scheme="https").start()
    https.stop()
    # ... and plain HTTP only with --insecure-http, saying so.
    plain = ControlPlane(tmp_path / "plain", args=("--host", "0.0.0.0", "--insecure-http")).start()
    try:
        assert "(--insecure-http): join tokens, API tokens and CSRs travel in clear" in plain.log.read_text()
        assert plain.ok("GET", "/api/v1/ca/serving") == {"tls": False, "ca_pem": None, "ca_hash": None}
        address = _host_address()
        if address is None:
            pytest.skip("this host has no address but loopback")
        url = f"http://{address}:{plain.port}"
        env = {"MESHCTL_SERVER": url, "MESHCTL_TOKEN": plain.token("admin"), "MESHCTL_DATA_DIR": str(tmp_path)}
        out = _meshctl("status", env=env)
        assert out.returncode == 2 and "--insecure" in out.stderr
        out = _meshctl("--insecure", "status", env=env)
        assert out.returncode == 0, out.stderr
        assert "warning: talking plain HTTP" in out.stderr
    finally:
        plain.stop()


def test_spans_reach_an_https_control_plane(cp: ControlPlane, tmp_path: Path) -> None:
    # The data plane's exporter verifies the control plane against the CAs the sidecar trusted.
    traced = {**service("traced"), "spec": {**service("traced")["spec"], "mtls": "PERMISSIVE"}}
    cp.apply(traced)
    app = HttpBackend("traced")
    sidecar = Sidecar(
        cp,
        "traced",
        int(app.address.rsplit(":", 1)[1]),
        tmp_path,
        cp.join_token("traced"),
        args=("--ca-hash", _pin(cp)),
    ).start()
    try:
        url = f"http://127.0.0.1:{sidecar.inbound_port}/priced"
        wait_until(lambda: httpx.get(url, timeout=5).status_code == 200, timeout=30, what="traced's sidecar to serve")
        r = httpx.get(url, headers={"x-meshctl-trace": "1", "traceparent": TRACEPARENT}, timeout=10)
        assert r.status_code == 200

        def stored() -> bool:
            got = cp.call("GET", f"/api/v1/traces/{TRACEPARENT.split('-')[1]}", role="reader")
            return got.status_code == 200 and len(got.json()["spans"]) >= 1

        wait_until(stored, timeout=60, what="the sidecar's span in the trace store over https")
    finally:
        sidecar.stop()
        app.stop()
