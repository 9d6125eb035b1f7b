"""The ingress gateway's HTTPS listener as a scanner sees it: sslscan (Debian's package) against a
real `meshctl gateway` serving an operator certificate issued by an intermediate CA. Nothing below
TLS 1.2, AEAD suites with forward secrecy only, no renegotiation, and the whole chain (leaf and
intermediate) served. The scanner's XML report is what is read. A control run against an
`openssl s_server` that offers TLS 1.0, CBC suites and renegotiation shows the same checks fail
there, so a scanner that cannot see would not pass."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from helpers import unused_port
from meshproc import ControlPlane, Gateway, https_listener, service
from pki import Issued, TestPki, openssl_server

pytestmark = pytest.mark.skipif(
    shutil.which("sslscan") is None or shutil.which("openssl") is None, reason="needs sslscan and openssl"
)

HOST = "shop.example"
#: AEAD bulk ciphers, in OpenSSL's and IANA's spellings of suite names.
AEAD = re.compile(r"GCM|CHACHA20[-_]POLY1305|CCM")


@dataclass
class Scan:
    """What sslscan's XML report says about one TLS endpoint."""

    protocols: dict[str, bool]  # "TLSv1.2" -> offered
    ciphers: list[tuple[str, str]]  # (protocol, suite) accepted
    renegotiation: bool
    heartbleed: bool

    def problems(self) -> list[str]:
        """Everything this endpoint offers that the gateway must not."""
        out = [f"{p} offered" for p, on in self.protocols.items() if on and p not in ("TLSv1.2", "TLSv1.3")]
        out += [f"{p} {c}: not AEAD" for p, c in self.ciphers if not AEAD.search(c)]
        # TLS 1.2 suites must agree keys by authenticated ephemeral ECDH (TLS 1.3 suites always do).
        out += [f"{p} {c}: not ECDHE" for p, c in self.ciphers if p == "TLSv1.2" and "ECDHE" not in c]
        if self.renegotiation:
            out.append("renegotiation supported")
        if self.heartbleed:
            out.append("heartbleed")
        return out


def sslscan(port: int, sni: str) -> Scan:
    out = subprocess.run(
        ["sslscan", "--no-colour", "--xml=-", f"--sni-name={sni}", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    # With --xml=- the report follows the text one on stdout.
    doc = ET.fromstring(out.stdout[out.stdout.index("<?xml") :].encode())
    test = doc.find("ssltest")
    assert test is not None, out.stdout
    protocols = {
        f"{'SSLv' if p.get('type') == 'ssl' else 'TLSv'}{p.get('version')}": p.get("enabled") == "1"
        for p in test.iter("protocol")
    }
    assert {"TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"} <= protocols.keys(), protocols
    reneg = test.find("renegotiation")
    assert reneg is not None, out.stdout
    return Scan(
        protocols=protocols,
        ciphers=[(c.get("sslversion", ""), c.get("cipher", "")) for c in test.iter("cipher")],
        renegotiation=reneg.get("supported") == "1",
        heartbleed=any(h.get("vulnerable") == "1" for h in test.iter("heartbleed")),
    )


def served_chain(port: int, sni: str, roots: Path) -> list[x509.Certificate]:
    """The certificates the server sends, in order; the handshake must verify against `roots` alone."""
    verify = ["-CAfile", str(roots), "-verify_return_error", "-verify_hostname", sni]
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni, "-showcerts", *verify],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr.decode()
    pems = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", out.stdout, re.S)
    return [x509.load_pem_x509_certificate(p) for p in pems]


def install(issued: Issued, cert_dir: Path, name: str) -> None:
    """The operator's files for certificateRef `name`: <name>.pem (leaf + intermediate), <name>.key."""
    cert_dir.mkdir(exist_ok=True, mode=0o700)
    shutil.copyfile(issued.chain, cert_dir / f"{name}.pem")
    shutil.copyfile(issued.key, cert_dir / f"{name}.key")
    (cert_dir / f"{name}.key").chmod(0o600)


def test_the_gateway_https_listener_passes_a_tls_scan(cp: ControlPlane, tmp_path: Path) -> None:
    root = TestPki(tmp_path / "pki", name="edge root")
    issuing = root.intermediate("edge issuing")
    leaf = issuing.server(HOST)
    install(leaf, tmp_path / "certs", "shop")
    port = unused_port()
    gateway_doc = {
        "kind": "Gateway",
        "metadata": {"name": "edge"},
        "spec": {"listeners": [https_listener("shop", HOST, port=port, cert="shop")]},
    }
    cp.apply(service("edge"), gateway_doc)
    gateway = Gateway(cp, "edge", tmp_path / "certs", tmp_path, cp.join_token("edge")).start()
    try:
        scan = sslscan(port, HOST)
        assert scan.problems() == [], scan
        assert scan.protocols["TLSv1.2"] and scan.protocols["TLSv1.3"]
        assert {p for p, _ in scan.ciphers} == {"TLSv1.2", "TLSv1.3"}

        # The chain: leaf then intermediate, enough for a client that trusts only the root.
        chain = served_chain(port, HOST, root.roots)
        assert [c.subject.rfc4514_string() for c in chain[1:]] == ["CN=edge issuing"]
        assert chain[0].serial_number == x509.load_pem_x509_certificate(leaf.chain.read_bytes()).serial_number

        # The scanner's refused handshakes are the gateway's counted failures.
        tls = gateway.stats()["listeners"][f"gateway/{port}"]["tls"]
        assert tls["handshake_failures"] > 0 and tls["handshakes"] > 0
    finally:
        gateway.stop()


def weak_server(cert: Issued) -> contextlib.AbstractContextManager[str]:
    """openssl s_server offering TLS 1.0 to 1.2 with every suite OpenSSL still has, CBC included."""
    weak = ("-min_protocol", "TLSv1", "-max_protocol", "TLSv1.2", "-cipher", "ALL:@SECLEVEL=0", "-www")
    return openssl_server(cert, *weak)


def test_the_scan_sees_what_a_weak_server_offers(tmp_path: Path) -> None:
    """The control: the same parsing flags old protocols, CBC suites and renegotiation."""
    pki = TestPki(tmp_path / "pki")
    with weak_server(pki.server(HOST)) as address:
        problems = sslscan(int(address.rsplit(":", 1)[1]), HOST).problems()
    assert "TLSv1.0 offered" in problems
    assert any(p.endswith(": not AEAD") for p in problems), problems
    assert "renegotiation supported" in problems
