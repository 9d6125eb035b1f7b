"""The ingress gateway end to end: a real control plane, a `meshctl gateway`
process serving two hostnames on one HTTPS port with the operator's
certificates, real sidecars in STRICT mTLS behind it, and real clients
(openssl s_client, curl) in front."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from helpers import unused_port, wait_until
from meshctl.demo.backends import DemoBackend
from meshproc import ControlPlane, Gateway, Sidecar, get, https_listener, service
from pki import Issued, TestPki

EDGE_ID = "spiffe://cluster.local/ns/default/sa/edge"


def install(issued: Issued, cert_dir: Path, name: str) -> None:
    """The operator's files for certificateRef `name`: <name>.pem and <name>.key (0600)."""
    cert_dir.mkdir(exist_ok=True, mode=0o700)
    shutil.copyfile(issued.chain, cert_dir / f"{name}.pem")
    key = cert_dir / f"{name}.key"
    shutil.copyfile(issued.key, key)
    key.chmod(0o600)


def gateway_doc(*listeners: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Gateway", "metadata": {"name": "edge"}, "spec": {"listeners": list(listeners)}}


def route(name: str, backend: str, *, section: str | None = None, hostnames: list[str] | None = None) -> dict[str, Any]:
    parent: dict[str, Any] = {"kind": "Gateway", "name": "edge"} | ({"sectionName": section} if section else {})
    spec: dict[str, Any] = {"parentRefs": [parent], "rules": [{"backendRefs": [{"name": backend}]}]}
    if hostnames:
        spec["hostnames"] = hostnames
    return {"kind": "HTTPRoute", "metadata": {"name": name}, "spec": spec}


@dataclass
class Client:
    """curl and openssl s_client against the gateway's port, as a browser would reach it."""

    port: int
    roots: Path

    def curl(self, host: str, path: str = "/", *args: str) -> tuple[int, str, dict[str, str], str]:
        """(status, HTTP version, response headers, body) of one request to https://host:port/path."""
        cmd = ["curl", "-sS", "-m", "10", "--resolve", f"{host}:{self.port}:127.0.0.1", "--cacert", str(self.roots)]
        cmd += ["-D", "-", "-w", "\n%{http_code} %{http_version}", *args, f"https://{host}:{self.port}{path}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        if out.returncode != 0:
            return 0, "", {}, out.stderr
        text, _, tail = out.stdout.rpartition("\n")
        head, _, body = text.partition("\n\n")  # (text mode: CRLF read as LF)
        headers = dict(line.split(": ", 1) for line in head.splitlines()[1:] if ": " in line)
        code, version = tail.split()
        return int(code), version, {k.lower(): v for k, v in headers.items()}, body

    def backend(self, host: str, path: str = "/") -> str:
        """Which app answered (x-backend), or !<status>."""
        status, _, headers, _ = self.curl(host, path)
        return headers.get("x-backend", "?") if status == 200 else f"!{status}"

    def s_client(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{self.port}", "-CAfile", str(self.roots)]
        return subprocess.run([*cmd, "-verify_return_error", *args], input=b"", capture_output=True, timeout=20)

    def certificate(self, servername: str | None) -> x509.Certificate:
        """The certificate the gateway presents for `servername` (None: no SNI)."""
        sni = ["-servername", servername] if servername else ["-noservername"]
        out = self.s_client(*sni)
        assert out.returncode == 0, out.stderr.decode()
        pem = re.search(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", out.stdout, re.S)
        assert pem is not None, out.stdout.decode()
        return x509.load_pem_x509_certificate(pem.group())


def dns_names(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_the_gateway_serves_two_hostnames_by_sni_into_a_strict_mesh(cp: ControlPlane, tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki", name="edge root")
    cert_dir = tmp_path / "certs"
    a_cert, b_cert = pki.server("a.example"), pki.server("b.example")
    install(a_cert, cert_dir, "a")
    install(b_cert, cert_dir, "b")
    port = unused_port()
    cp.apply(
        service("alpha"),
        service("beta"),
        service("edge"),
        service("client"),
        gateway_doc(
            https_listener("a", "a.example", port=port, cert="a"), https_listener("b", "b.example", port=port, cert="b")
        ),
        route("alpha", "alpha", section="a"),  # listener a: a.example
        route("beta", "beta", hostnames=["b.example"]),  # the whole gateway, b.example
    )
    apps = {name: DemoBackend(name).start() for name in ("app-alpha", "app-beta")}
    procs: list[Any] = []
    try:
        alpha = Sidecar(cp, "alpha", apps["app-alpha"].port, tmp_path, cp.join_token("alpha")).start()
        beta = Sidecar(cp, "beta", apps["app-beta"].port, tmp_path, cp.join_token("beta")).start()
        client = Sidecar(
            cp, "client", unused_port(), tmp_path, cp.join_token("client"), upstreams={"beta": unused_port()}
        ).start()
        procs += [alpha, beta, client]
        gateway = Gateway(cp, "edge", cert_dir, tmp_path, cp.join_token("edge")).start()
        procs.append(gateway)
        c = Client(port, pki.roots)

        # Each name gets its own certificate; a client without SNI the first listener's.
        assert dns_names(c.certificate("a.example")) == ["a.example"]
        assert dns_names(c.certificate("b.example")) == ["b.example"]
        assert (
            c.certificate("b.example").serial_number
            == x509.load_pem_x509_certificate(b_cert.chain.read_bytes()).serial_number
        )
        assert dns_names(c.certificate(None)) == ["a.example"]

        # Each name reaches its own service, over HTTP/1.1 and HTTP/2 (ALPN).
        wait_until(lambda: c.backend("a.example") == "app-alpha", timeout=20, what="a.example to reach alpha")
        assert c.backend("b.example") == "app-beta"
        status, version, _, _ = c.curl("a.example", "/", "--http2")
        assert (status, version) == (200, "2")
        status, version, _, _ = c.curl("b.example", "/", "--http1.1")
        assert (status, version) == (200, "1.1")

        # Into the mesh over mTLS: the apps learn the gateway's identity; their inbound is STRICT.
        _, _, _, body = c.curl("b.example", "/who")
        seen = json.loads(body)["headers"]
        assert seen["x-forwarded-client-cert"] == f"URI={EDGE_ID}"
        assert seen["x-forwarded-proto"] == "https"
        assert gateway.stats()["identity"]["spiffe_id"] == EDGE_ID
        inbound = alpha.stats()["listeners"]["inbound"]
        assert inbound["tls"]["handshakes"] >= 1 and inbound["tls"]["plaintext_accepted"] == 0
        # The gateway is no endpoint of its service: nobody routes to it.
        assert cp.ok("GET", "/api/v1/services/default/edge/endpoints") == []
        row = next(s for s in cp.sidecars() if s["service"] == "edge")
        assert row["gateway"] is True and row["address"] == "127.0.0.1"

        # TLS 1.2 and 1.3 only, AEAD suites only.
        tls12 = c.s_client("-servername", "a.example", "-brief", "-tls1_2")
        assert tls12.returncode == 0 and b"Protocol version: TLSv1.2" in tls12.stderr
        suite = re.search(rb"Ciphersuite: (\S+)", tls12.stderr)
        assert suite is not None and re.search(rb"GCM|CHACHA20", suite.group(1)), tls12.stderr
        tls13 = c.s_client("-servername", "a.example", "-brief", "-tls1_3")
        assert tls13.returncode == 0 and b"Protocol version: TLSv1.3" in tls13.stderr

        def failures() -> int:
            return int(gateway.stats()["listeners"][f"gateway/{port}"]["tls"]["handshake_failures"])

        # SECLEVEL=0: the client offers what OpenSSL 3 would not, so it is the gateway that refuses.
        for old in ("-tls1_1", "-tls1"):
            before = failures()
            refused = c.s_client("-servername", "a.example", old, "-cipher", "DEFAULT:@SECLEVEL=0")
            assert refused.returncode != 0 and b"alert" in refused.stderr, refused.stderr
            wait_until(lambda b=before: failures() == b + 1, timeout=5, what="the gateway to count the refusal")
        cbc = c.s_client("-servername", "a.example", "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:AES128-SHA")
        assert cbc.returncode != 0

        # A host no listener serves: the data plane's 404 (whatever name the handshake used).
        status, _, headers, _ = c.curl("a.example", "/", "-H", "Host: c.example", "--http1.1")
        assert status == 404 and "x-meshctl-error" in headers
        assert c.curl("c.example", "/", "-k")[0] == 404

        # Only the gateway may call beta: through it 200, from another sidecar 403.
        assert get("127.0.0.1", client.upstreams["beta"], "/")[0] == 200
        policy = {
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "beta-from-edge"},
            "spec": {"targetRef": {"name": "beta"}, "rules": [{"from": [{"source": {"principals": [EDGE_ID]}}]}]},
        }
        cp.apply(policy)
        wait_until(lambda: get("127.0.0.1", client.upstreams["beta"], "/")[0] == 403, timeout=15, what="client denied")
        assert c.backend("b.example") == "app-beta"

        # A route change reaches the running gateway: a.example now goes to beta too.
        assert gateway.proc is not None
        pid = gateway.proc.pid
        cp.apply(route("alpha", "beta", section="a"))
        wait_until(lambda: c.backend("a.example") == "app-beta", timeout=15, what="the new route on the gateway")
        assert gateway.proc.pid == pid and gateway.proc.poll() is None and gateway.starts == 1

        def gateway_in_sync() -> bool:
            row = next(s for s in cp.sidecars() if s["service"] == "edge")
            return bool(row["acked_version"] == row["mesh_generation"] and row["last_error"] is None)

        wait_until(gateway_in_sync, timeout=15, what="the gateway to ACK the mesh generation")

        # Leaving, the gateway deregisters at once.
        gateway.stop()
        assert all(s["service"] != "edge" for s in cp.sidecars())
    finally:
        for p in procs:
            p.stop()
        for app in apps.values():
            app.stop()


def test_the_gateway_refuses_missing_certificate_files_and_rereads_them_on_sighup(
    cp: ControlPlane, tmp_path: Path
) -> None:
    pki = TestPki(tmp_path / "pki")
    cert_dir = tmp_path / "certs"
    install(pki.server("shop.example"), cert_dir, "shop")
    (cert_dir / "shop.key").unlink()
    port = unused_port()
    cp.apply(service("edge"), gateway_doc(https_listener("shop", "shop.example", port=port, cert="shop")))
    gateway = Gateway(cp, "edge", cert_dir, tmp_path, cp.join_token("edge"))
    try:
        with pytest.raises(AssertionError, match="exited 2"):
            gateway.start()
        log = gateway.log.read_text()
        assert f"listener gateway/{port}: cannot read the private key {cert_dir / 'shop.key'}" in log
        assert cp.sidecars() == []  # it left the mesh on its way out

        # Present but readable by others: a warning, and it serves.
        install(pki.server("shop.example"), cert_dir, "shop")
        (cert_dir / "shop.key").chmod(0o644)
        gateway.start()
        assert "may be read by group or others (mode 0644): chmod 600 it" in gateway.log.read_text()
        c = Client(port, pki.roots)
        first = c.certificate("shop.example").serial_number

        # A renewed certificate in place: SIGHUP, and new handshakes get it.
        renewed = pki.server("shop.example")
        install(renewed, cert_dir, "shop")
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGHUP)
        serial = x509.load_pem_x509_certificate(renewed.chain.read_bytes()).serial_number
        assert serial != first
        wait_until(
            lambda: c.certificate("shop.example").serial_number == serial, timeout=15, what="the renewed certificate"
        )
        assert gateway.proc.poll() is None

        # A later snapshot naming a missing file is refused (NACKed) and the running config kept.
        shop = https_listener("shop", "shop.example", port=port, cert="shop")
        cp.apply(gateway_doc(shop, https_listener("new", "new.example", port=port, cert="new")))

        def nacked() -> str | None:
            row = next(s for s in cp.sidecars() if s["service"] == "edge")
            return row["last_error"] if row["nacked_version"] == row["mesh_generation"] else None

        error = wait_until(nacked, timeout=15, what="the gateway to NACK")
        assert f"cannot read the certificate chain {cert_dir / 'new.pem'}" in error
        assert c.certificate("shop.example").serial_number == serial
    finally:
        gateway.stop()
