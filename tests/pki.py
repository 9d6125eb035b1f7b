"""A throw-away PKI for TLS tests: roots, intermediate CAs, SVIDs with any
SPIFFE ID and any validity window (expired and not-yet-valid included), and
edge certificates for host names, written as PEM files a data plane or openssl
can read; and `openssl s_server` serving one of them."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helpers import unused_port, wait_until


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Issued:
    """PEM files of one leaf certificate: chain (leaf first) and key."""

    chain: Path
    key: Path

    def identity(self, roots: Path) -> dict[str, str]:
        """The data-plane `identity` section for this certificate."""
        return {"cert_chain_file": str(self.chain), "private_key_file": str(self.key), "roots_file": str(roots)}


class TestPki:
    """A CA in `directory`: a root, or with `issuer` an intermediate signed by that CA. Issued
    chain files hold the leaf, then every intermediate up to (not including) the root; `roots`
    is the root's file either way."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, directory: Path, name: str = "test root", issuer: TestPki | None = None):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject if issuer else subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(days=1))
            .not_valid_after(_now() + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(issuer.key if issuer else self.key, hashes.SHA256())
        )
        #: The CA certificates a leaf's chain file carries after the leaf (none for a root).
        self.intermediates: bytes = _pem(self.cert) + issuer.intermediates if issuer else b""
        if issuer:
            self.roots = issuer.roots
        else:
            self.roots = self.dir / "roots.pem"
            self.roots.write_bytes(_pem(self.cert))
        self._count = 0

    def intermediate(self, name: str = "test intermediate") -> TestPki:
        """An intermediate CA signed by this one, in a subdirectory; its leaves chain to our root."""
        return TestPki(self.dir / name.replace(" ", "-"), name, issuer=self)

    def _leaf(
        self,
        san: list[x509.GeneralName],
        *,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> Issued:
        self._count += 1
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(san), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        out = Issued(self.dir / f"leaf{self._count}.pem", self.dir / f"leaf{self._count}.key")
        out.chain.write_bytes(_pem(cert) + self.intermediates)
        out.key.write_bytes(_key_pem(key))
        out.key.chmod(0o600)
        return out

    def svid(
        self,
        spiffe_id: str,
        *,
        valid_from: dt.timedelta = dt.timedelta(minutes=-5),
        valid_for: dt.timedelta = dt.timedelta(hours=1),
    ) -> Issued:
        """An SVID valid from now+valid_from for valid_for."""
        start = _now() + valid_from
        return self._leaf([x509.UniformResourceIdentifier(spiffe_id)], not_before=start, not_after=start + valid_for)

    def server(self, *hosts: str) -> Issued:
        """An edge certificate for DNS names."""
        return self._leaf(
            [x509.DNSName(h) for h in hosts],
            not_before=_now() - dt.timedelta(minutes=5),
            not_after=_now() + dt.timedelta(days=1),
        )


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def openssl_server(cert: Issued, *args: str) -> Iterator[str]:
    """`openssl s_server` on a free loopback port presenting `cert`, with more s_server flags;
    yields its address."""
    port = unused_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert.chain), "-key", str(cert.key), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: listening(port), what="openssl s_server to listen")
        yield f"127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()
