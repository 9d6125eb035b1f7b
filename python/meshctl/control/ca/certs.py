"""Keys and certificates: making a root or an issuer, and the ``Authority`` (a
root and the issuer chained to it) that signs SVIDs. No files and no state:
see ``files`` for those."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT_DAYS = 3650
ISSUER_DAYS = 365
#: Leaves start this much in the past: peers' clocks are never exactly ours.
CLOCK_SKEW = dt.timedelta(seconds=30)

IssuerKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def fingerprint(cert: x509.Certificate) -> str:
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def spki(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "an empty subject"


def when(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _hash_for(key: IssuerKey) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


def _aki(signer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = signer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


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


def ca_cert(
    subject: str,
    key: IssuerKey,
    days: int,
    *,
    issuer: tuple[x509.Certificate, IssuerKey] | None = None,
    path_length: int,
) -> x509.Certificate:
    """A CA certificate for `key`: self-signed (a root) unless `issuer` signs it."""
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    # The key id tells a new root from the one it replaces, which shares its trust domain.
    cn = f"{subject} {ski.digest.hex()[:8]}"
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshctl"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )
    signer_cert, signer_key = issuer if issuer else (None, key)
    start = now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer_cert.subject if signer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            _key_usage("digital_signature", "key_cert_sign", "crl_sign"),
            critical=True,
        )
        .add_extension(ski, critical=False)
    )
    if signer_cert is not None:
        builder = builder.add_extension(_aki(signer_cert), critical=False)
    return builder.sign(signer_key, _hash_for(signer_key))


@dataclass(frozen=True)
class Authority:
    """A root and the issuer chained to it that signs SVIDs."""

    root: x509.Certificate
    #: The issuer first, then any intermediates above it; never the root.
    chain: tuple[x509.Certificate, ...]
    key: IssuerKey
    #: The root's key when we have it (we made the root, or the operator gave it); None otherwise.
    root_key: IssuerKey | None = None

    @property
    def issuer(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.issuer)

    @property
    def not_after(self) -> dt.datetime:
        """When the chain stops verifying: no SVID outlives it."""
        return min(c.not_valid_after_utc for c in (*self.chain, self.root))

    def chain_pem(self) -> str:
        return "".join(pem(c) for c in self.chain)

    def sign_leaf(
        self, public_key: Any, identity: str, not_before: dt.datetime, not_after: dt.datetime
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))  # the identity is the URI SAN alone (hence critical)
            .issuer_name(self.issuer.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage("digital_signature"), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(_aki(self.issuer), critical=False)
            .sign(self.key, _hash_for(self.key))
        )

    def sign_server(
        self, public_key: Any, names: list[x509.GeneralName], not_before: dt.datetime, not_after: dt.datetime
    ) -> x509.Certificate:
        """A TLS server certificate for `names` (DNS names and IP addresses): the control plane's
        serving certificate (see ``serving``)."""
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshctl"),
                x509.NameAttribute(NameOID.COMMON_NAME, "meshctl control plane"),
            ]
        )
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(self.issuer.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage("digital_signature"), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_aki(self.issuer), critical=False)
            .sign(self.key, _hash_for(self.key))
        )
