"""The mesh's certificate authority: a root and an issuer (intermediate)
made on first start, or a root the operator gives; keys in 0600 files in
the data dir, never in a response or a log line. Sidecars keep their own
keys and send CSRs; what they get back is an X.509 SVID whose only URI SAN
is their SPIFFE ID."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshctl.secretfile import write_secret

ROOT_DAYS = 3650
ISSUER_DAYS = 365
#: Leaves start this much in the past: peers' clocks are never exactly ours.
CLOCK_SKEW = dt.timedelta(seconds=30)


class CsrRefused(Exception):
    """The CSR is malformed or asks for an identity the caller does not have."""

    def __init__(self, message: str, *, forbidden: bool = False):
        super().__init__(message)
        self.forbidden = forbidden


def spiffe_id(trust_domain: str, namespace: str, service: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ca_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    days: int,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    path_length: int,
) -> x509.Certificate:
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshctl"), x509.NameAttribute(NameOID.COMMON_NAME, subject)]
    )
    signer_cert, signer_key = issuer if issuer else (None, key)
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer_cert.subject if signer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            _key_usage("digital_signature", "key_cert_sign", "crl_sign"),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if signer_cert is not None:
        ski = signer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    return builder.sign(signer_key, hashes.SHA256())


def _key_usage(*allowed: str) -> x509.KeyUsage:
    flags = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{f: f in allowed for f in flags})


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = (
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
        .strip()
    )
    write_secret(path, pem)


@dataclass
class CertificateAuthority:
    trust_domain: str
    root: x509.Certificate
    issuer: x509.Certificate
    issuer_key: ec.EllipticCurvePrivateKey

    @classmethod
    def load_or_create(cls, directory: Path, trust_domain: str) -> CertificateAuthority:
        """The CA in `directory`; made there on first use. An operator's root goes in as
        root.pem + root.key before the first start: only the issuer is made then."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths = {n: directory / n for n in ("root.pem", "root.key", "issuer.pem", "issuer.key")}
        if not paths["root.pem"].exists():
            root_key = _key()
            _write_key(paths["root.key"], root_key)
            paths["root.pem"].write_text(_pem(_ca_cert(f"{trust_domain} root", root_key, ROOT_DAYS, path_length=1)))
        root = x509.load_pem_x509_certificate(paths["root.pem"].read_bytes())
        if not paths["issuer.pem"].exists():
            signer = serialization.load_pem_private_key(paths["root.key"].read_bytes(), password=None)
            assert isinstance(signer, ec.EllipticCurvePrivateKey), "the root key must be an EC key"
            issuer_key = _key()
            issuer = _ca_cert(f"{trust_domain} issuer", issuer_key, ISSUER_DAYS, issuer=(root, signer), path_length=0)
            _write_key(paths["issuer.key"], issuer_key)
            paths["issuer.pem"].write_text(_pem(issuer))
        issuer = x509.load_pem_x509_certificate(paths["issuer.pem"].read_bytes())
        key = serialization.load_pem_private_key(paths["issuer.key"].read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey), "the issuer key must be an EC key"
        return cls(trust_domain, root, issuer, key)

    def bundle(self) -> list[str]:
        """The trust anchors sidecars verify peers against (PEM)."""
        return [_pem(self.root)]

    def issue(self, csr_pem: str, *, expected: str, ttl: dt.timedelta) -> tuple[str, dt.datetime]:
        """(leaf + issuer chain as PEM, expiry) for a CSR whose only identity is `expected`."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as e:
            raise CsrRefused(f"not a PEM certificate request: {e}") from None
        if not csr.is_signature_valid:
            raise CsrRefused("the CSR's signature does not verify")
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise CsrRefused(f"the CSR names no identity: give the URI SAN {expected}") from None
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if len(list(san)) != 1 or uris != [expected]:
            asked = ", ".join(str(g.value) for g in san)
            raise CsrRefused(f"the CSR asks for {asked}; this token may only have {expected}", forbidden=True)
        now = _now()
        not_after = min(now + ttl, self.issuer.not_valid_after_utc)
        ski = self.issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))  # the identity is the URI SAN alone (hence critical)
            .issuer_name(self.issuer.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(expected)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage("digital_signature"),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(self.issuer_key, hashes.SHA256())
        )
        return _pem(leaf) + _pem(self.issuer), not_after
