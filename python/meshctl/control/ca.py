"""The mesh's certificate authority. Sidecars keep their own keys and send
CSRs; what they get back is an X.509 SVID whose only URI SAN is their SPIFFE
ID, chained to a root in the trust bundle. Keys live in 0600 files in the
0700 CA directory and never appear in a response or a log line.

Files in the CA directory (``<data-dir>/ca``):

``root.pem`` (+ ``root.key``)
    The root. Made on first start, or the operator's, placed there before it.
``issuer.pem`` + ``issuer.key``
    What signs SVIDs: the issuer's certificate, then any intermediates above it up
    to (not including) the root. Made from ``root.key`` when absent, or the operator's
    own intermediate, in which case ``root.key`` is not needed.
``next-root.pem``, ``next-root.key``, ``next-issuer.pem``, ``next-issuer.key``
    The same for the root a rotation moves to: made at its start, or the operator's.
``state.json``
    The rotation phase, and the latest expiry of an SVID from each issuer.
``retired/``
    The certificates (never keys) of roots and issuers a rotation finished with.

A root rotation goes in three steps, each safe to hold as long as needed:

1. ``start``: the bundle holds the current and the new root; SVIDs still come from the
   current issuer. Every sidecar learns the new root before anyone presents a
   certificate under it.
2. ``activate``: SVIDs come from the new issuer. Sidecars move to it as they renew, and
   their peers already trust it; certificates from the old issuer still verify.
3. ``finish``: the old root leaves the bundle, once every SVID from the old issuer has
   expired (or when forced).

Every file is validated when loaded; a CA that cannot issue SVIDs peers will accept
raises ``CaError`` and the control plane does not start.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshctl.secretfile import write_secret

log = logging.getLogger("meshctl.control.ca")

ROOT_DAYS = 3650
ISSUER_DAYS = 365
#: Leaves start this much in the past: peers' clocks are never exactly ours.
CLOCK_SKEW = dt.timedelta(seconds=30)
#: The longest SVID a sidecar may ask for (models.SvidRequest).
MAX_SVID_TTL = dt.timedelta(days=30)
#: Recorded expiries are rounded up to this: at most one state write per issuer a minute,
#: and never a "safe" time earlier than the truth.
RECORD_STEP_SECONDS = 60
#: An issuer expiring sooner than this is worth a warning at start.
EXPIRY_WARNING = dt.timedelta(days=30)

IssuerKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
Phase = Literal["idle", "bundled", "activated"]
PHASES: tuple[str, ...] = ("idle", "bundled", "activated", "finishing")


class CaError(Exception):
    """The CA's files cannot be used; the message says which file and why."""


class CsrRefused(Exception):
    """The CSR is malformed or asks for an identity the caller does not have."""

    def __init__(self, message: str, *, forbidden: bool = False):
        super().__init__(message)
        self.forbidden = forbidden


class RotationRefused(Exception):
    """A rotation step that cannot be taken now (a 409)."""


def spiffe_id(trust_domain: str, namespace: str, service: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service}"


def fingerprint(cert: x509.Certificate) -> str:
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


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


def _ca_cert(
    subject: str,
    key: IssuerKey,
    days: int,
    *,
    issuer: tuple[x509.Certificate, IssuerKey] | None = None,
    path_length: int,
) -> x509.Certificate:
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    # The key id tells a new root from the one it replaces, which shares its trust domain.
    cn = f"{subject} {ski.digest.hex()[:8]}"
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshctl"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
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
        .add_extension(ski, critical=False)
    )
    if signer_cert is not None:
        builder = builder.add_extension(_aki(signer_cert), critical=False)
    return builder.sign(signer_key, _hash_for(signer_key))


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


def _write_key(path: Path, key: IssuerKey) -> None:
    pem = (
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
        .strip()
    )
    write_secret(path, pem)


def _spki(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def _describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "an empty subject"


def _when(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


# === loading and validating ===


def _read_certs(path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (ValueError, OSError) as e:
        raise CaError(f"{path.name} holds no PEM certificate ({e})") from None
    if not certs:
        raise CaError(f"{path.name} holds no PEM certificate")
    return certs


def _read_key(path: Path) -> IssuerKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except TypeError:
        raise CaError(f"{path.name} is encrypted: give it unencrypted (the file is kept 0600)") from None
    except (ValueError, OSError, UnsupportedAlgorithm):
        # Never the parser's message: it is about the key's bytes.
        raise CaError(f"{path.name} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise CaError(f"{path.name} is a {type(key).__name__}: {_SUPPORTED}")
    _check_key_type(key.public_key(), path.name)
    return key


_SUPPORTED = "the data plane verifies ECDSA P-256 or P-384, RSA of 2048 bits or more, and Ed25519"


def _check_key_type(public: Any, where: str) -> None:
    if isinstance(public, ec.EllipticCurvePublicKey):
        if not isinstance(public.curve, ec.SECP256R1 | ec.SECP384R1):
            raise CaError(f"{where} has an ECDSA key on {public.curve.name}: {_SUPPORTED}")
    elif isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise CaError(f"{where} has a {public.key_size}-bit RSA key: {_SUPPORTED}")
    elif not isinstance(public, ed25519.Ed25519PublicKey):
        raise CaError(f"{where} has a {type(public).__name__}: {_SUPPORTED}")


def _signed_by(cert: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _ext(cert: x509.Certificate, kind: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _uri_host_permitted(constraint: str, host: str) -> bool:
    """RFC 5280 4.2.1.10 for URIs: a host matches itself; ".example.org" matches hosts below it."""
    constraint, host = constraint.lower(), host.lower()
    return host.endswith(constraint) if constraint.startswith(".") else host == constraint


@dataclass(frozen=True)
class Authority:
    """A root and the issuer chained to it that signs SVIDs."""

    root: x509.Certificate
    #: The issuer first, then any intermediates above it; never the root.
    chain: tuple[x509.Certificate, ...]
    key: IssuerKey

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
        return "".join(_pem(c) for c in self.chain)

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


def validate(authority: Authority, trust_domain: str, prefix: str = "") -> None:
    """Raise CaError unless the issuer can sign SVIDs for `trust_domain` that verify up to the root:
    its key, CA flags and key usage, each link's signature, validity, path length and name
    constraints, then a probe certificate through a full path verification."""
    root, chain, key = authority.root, authority.chain, authority.key
    issuer_file, root_file = f"{prefix}issuer.pem", f"{prefix}root.pem"
    if _spki(key.public_key()) != _spki(chain[0].public_key()):
        raise CaError(
            f"{prefix}issuer.key does not belong to {issuer_file} ({_describe(chain[0])}): their public keys differ"
        )
    if root.issuer != root.subject or not _signed_by(root, root):
        raise CaError(
            f"{root_file} ({_describe(root)}) is not self-signed (its issuer is {root.issuer.rfc4514_string()}): "
            f"give the root CA's certificate there; intermediates go in {issuer_file}, after the issuer"
        )
    named = [(issuer_file, chain[0])]
    named += [(f"{issuer_file} (certificate {i + 1}, {_describe(c)})", c) for i, c in enumerate(chain[1:], 1)]
    named.append((root_file, root))
    now = _now()
    for where, cert in named:
        _check_key_type(cert.public_key(), where)
        basic = _ext(cert, x509.BasicConstraints)
        if basic is None or not basic.ca:
            raise CaError(
                f"{where} is not a CA certificate (basicConstraints has no cA=TRUE): it cannot sign certificates"
            )
        usage = _ext(cert, x509.KeyUsage)
        if usage is None or not usage.key_cert_sign:
            raise CaError(f"{where} may not sign certificates: its keyUsage lacks keyCertSign")
        if now < cert.not_valid_before_utc:
            raise CaError(f"{where} is not valid before {_when(cert.not_valid_before_utc)} (is this clock right?)")
        if now >= cert.not_valid_after_utc:
            hint = (
                f" (remove it and {prefix}issuer.key to have a new one made from {prefix}root.key)"
                if cert is chain[0]
                else ""
            )
            raise CaError(f"{where} expired on {_when(cert.not_valid_after_utc)}{hint}")
    for (where, cert), (above, parent) in itertools.pairwise(named):
        if cert.issuer != parent.subject or not _signed_by(cert, parent):
            hint = (
                f"the chain does not reach {root_file}: is it the root that issued it?"
                if parent is root
                else f"{issuer_file} must list the issuer first, then each certificate above it in order"
            )
            raise CaError(f"{where} is not signed by {above} ({_describe(parent)}): {hint}")
    for below, (where, cert) in enumerate(named):
        limit = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        if limit is not None and below > limit:
            raise CaError(
                f"path length: {where} has pathLenConstraint={limit}, so at most {limit} CA certificate(s) may "
                f"stand between it and the SVIDs, but this chain puts {below} there; re-issue it with a larger "
                f"pathLenConstraint (or none), or shorten {issuer_file}"
            )
    for where, cert in named:
        constraints = _ext(cert, x509.NameConstraints)
        if constraints is not None:
            _check_name_constraints(where, constraints, trust_domain)
    # Everything above gives the clear message; this is the verifier's own word on the whole path.
    probe_key = _key()
    probe = authority.sign_leaf(
        probe_key.public_key(), spiffe_id(trust_domain, "probe", "probe"), now - CLOCK_SKEW, now + CLOCK_SKEW
    )
    verifier = verification.PolicyBuilder().store(verification.Store([root])).time(now).build_client_verifier()
    try:
        verifier.verify(probe, list(chain))
    except verification.VerificationError as e:
        raise CaError(f"an SVID from {issuer_file} would not verify up to {root_file}: {e}") from None


def _check_name_constraints(where: str, constraints: x509.NameConstraints, trust_domain: str) -> None:
    permitted, excluded = constraints.permitted_subtrees or [], constraints.excluded_subtrees or []
    uri_ok = [str(g.value) for g in permitted if isinstance(g, x509.UniformResourceIdentifier)]
    uri_no = [str(g.value) for g in excluded if isinstance(g, x509.UniformResourceIdentifier)]
    if uri_ok and not any(_uri_host_permitted(c, trust_domain) for c in uri_ok):
        raise CaError(
            f"name constraints: {where} permits URIs only under {', '.join(uri_ok)}, and SVIDs are "
            f"spiffe://{trust_domain}/...; re-issue it without URI name constraints"
        )
    if any(_uri_host_permitted(c, trust_domain) for c in uri_no):
        raise CaError(f"name constraints: {where} excludes spiffe://{trust_domain}/... (excluded: {', '.join(uri_no)})")
    if uri_ok or uri_no:
        raise CaError(
            f"name constraints: {where} has URI name constraints ({', '.join(uri_ok + uri_no)}); the data plane's "
            "verifier (rustls-webpki) does not process them and refuses every certificate beneath; re-issue it "
            "without URI constraints (DNS and IP constraints are fine)"
        )
    if any(isinstance(g, x509.DirectoryName) for g in (*permitted, *excluded)):
        raise CaError(
            f"name constraints: {where} has directory-name constraints, which the data plane's verifier "
            "(rustls-webpki) refuses outright; re-issue it without them"
        )


def _load_authority(directory: Path, prefix: str, trust_domain: str, *, create: bool) -> tuple[Authority, bool]:
    """The root and issuer whose files start with `prefix`; what is missing is made when `create`
    (a root, then an issuer from its key). Returns (authority, whether the issuer was made now)."""
    p = {n: directory / f"{prefix}{n}" for n in ("root.pem", "root.key", "issuer.pem", "issuer.key")}
    have = {n: path.exists() for n, path in p.items()}
    name = {n: f"{prefix}{n}" for n in p}
    made: set[str] = set()
    if have["issuer.pem"] != have["issuer.key"]:
        one, other = ("issuer.pem", "issuer.key") if have["issuer.pem"] else ("issuer.key", "issuer.pem")
        raise CaError(
            f"{name[one]} without {name[other]}: give both (or neither, to have them made from {name['root.key']})"
        )
    if not have["root.pem"]:
        if have["issuer.pem"]:
            raise CaError(f"{name['issuer.pem']} without {name['root.pem']}: place the root CA's certificate there")
        if have["root.key"]:
            raise CaError(f"{name['root.key']} without {name['root.pem']}: give both, or neither to have them made")
        if not create:
            raise CaError(f"{name['root.pem']} is missing")
        root_key = _key()
        _write_key(p["root.key"], root_key)
        p["root.pem"].write_text(_pem(_ca_cert(f"{trust_domain} root", root_key, ROOT_DAYS, path_length=1)))
        have["root.key"] = True
        made.update(("root.pem", "root.key"))
    roots = _read_certs(p["root.pem"])
    if len(roots) != 1:
        raise CaError(
            f"{name['root.pem']} holds {len(roots)} certificates: give the root alone "
            f"(intermediates go in {name['issuer.pem']}, after the issuer)"
        )
    root = roots[0]
    if not have["issuer.pem"]:
        if not have["root.key"]:
            raise CaError(
                f"{name['root.pem']} has no {name['root.key']} beside it: place the root's key there to have the "
                f"issuer made from it, or your own intermediate as {name['issuer.pem']} + {name['issuer.key']}"
            )
        if not create:
            raise CaError(f"{name['issuer.pem']} is missing")
        signer = _read_key(p["root.key"])
        if _spki(signer.public_key()) != _spki(root.public_key()):
            raise CaError(f"{name['root.key']} does not belong to {name['root.pem']}: their public keys differ")
        issuer_key = _key()
        issuer = _ca_cert(f"{trust_domain} issuer", issuer_key, ISSUER_DAYS, issuer=(root, signer), path_length=0)
        _write_key(p["issuer.key"], issuer_key)
        p["issuer.pem"].write_text(_pem(issuer))
        made.update(("issuer.pem", "issuer.key"))
    chain = _read_certs(p["issuer.pem"])
    if chain[-1] == root:  # "up to the root" taken inclusively: the root is the bundle's, not the chain's
        chain.pop()
        if not chain:
            raise CaError(f"{name['issuer.pem']} holds only the root: give the issuer's certificate")
    for n in ("root.key", "issuer.key"):
        if p[n].exists() and p[n].stat().st_mode & 0o077:
            os.chmod(p[n], 0o600)
            log.warning("%s was readable by others; made it 0600", p[n])
    try:
        authority = Authority(root, tuple(chain), _read_key(p["issuer.key"]))
        validate(authority, trust_domain, prefix)
    except CaError:
        for n in made:  # made under a root that turned out unusable: a fixed root gets fresh ones
            p[n].unlink(missing_ok=True)
        raise
    return authority, "issuer.pem" in made


# === state ===


@dataclass
class State:
    """state.json: the rotation's phase ("finishing" only between a finish's first and last file
    move), and the latest expiry of each issuer's SVIDs. Written whole (atomically), 0600."""

    phase: str = "idle"
    started_at: str | None = None
    activated_at: str | None = None
    #: The mesh generation that first carried the current bundle (sidecars that ACKed it have it).
    bundle_generation: int | None = None
    #: Finishing: whether the new root came with its key (so root.key is the new one's, or none).
    next_root_key: bool | None = None
    #: Issuer fingerprint -> latest expiry (ISO) of an SVID it signed, rounded up.
    issued: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> State:
        try:
            raw = json.loads(path.read_text())
            state = cls(**raw)
        except (OSError, ValueError, TypeError) as e:
            raise CaError(f"{path.name} is unreadable ({e}); it is the rotation state, restore or remove it") from None
        if state.phase not in PHASES:
            raise CaError(f"{path.name} names an unknown rotation phase {state.phase!r}")
        return state

    def write(self, path: Path) -> None:
        write_secret(path, json.dumps(self.__dict__, indent=2, sort_keys=True))


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat()


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


# === the CA ===

_FILES = ("root.pem", "root.key", "issuer.pem", "issuer.key")


class CertificateAuthority:
    """The current root and issuer, and during a rotation the next ones; thread-safe."""

    def __init__(
        self, directory: Path, trust_domain: str, current: Authority, next_: Authority | None, state: State
    ) -> None:
        self.directory, self.trust_domain = directory, trust_domain
        self.current, self.next, self.state = current, next_, state
        self._lock = threading.Lock()

    @property
    def root(self) -> x509.Certificate:
        return self.current.root

    @property
    def issuer(self) -> x509.Certificate:
        return self.current.issuer

    @property
    def phase(self) -> Phase:
        return self.state.phase  # type: ignore[return-value]

    @property
    def signing(self) -> Authority:
        """What signs SVIDs now: the new issuer once a rotation is activated."""
        return self.next if self.phase == "activated" and self.next else self.current

    @classmethod
    def load_or_create(cls, directory: Path, trust_domain: str) -> CertificateAuthority:
        """The CA in `directory`, made there on first use (see the module's doc for the files).
        Raises CaError, naming the file and the reason, when what is there cannot be used."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if directory.stat().st_mode & 0o077:
            os.chmod(directory, 0o700)
        state_path = directory / "state.json"
        fresh = not state_path.exists()
        legacy = fresh and (directory / "issuer.pem").exists() and (directory / "root.key").exists()
        state = State() if fresh else State.read(state_path)
        if state.phase == "finishing":
            cls._complete_finish(directory, state)
        current, made = _load_authority(directory, "", trust_domain, create=state.phase == "idle")
        next_ = None
        if state.phase in ("bundled", "activated"):
            try:
                next_, _ = _load_authority(directory, "next-", trust_domain, create=False)
            except CaError as e:
                raise CaError(f"a root rotation is {state.phase} but its new root is unusable: {e}") from None
        if legacy and not made and current.fingerprint not in state.issued:
            # Made before SVIDs were tracked: assume the longest one it could have signed, just now.
            bound = min(current.not_after, _now() + MAX_SVID_TTL)
            state.issued[current.fingerprint] = _iso(bound)
            log.info("SVIDs from the issuer before tracking began are assumed valid until %s", _when(bound))
        if fresh or legacy:
            state.write(state_path)
        ca = cls(directory, trust_domain, current, next_, state)
        signing = ca.signing
        log.info(
            "CA: issuing SVIDs for %s from %s (%s), root %s; rotation %s",
            trust_domain,
            _describe(signing.issuer),
            signing.fingerprint,
            fingerprint(signing.root),
            state.phase,
        )
        if signing.not_after - _now() < EXPIRY_WARNING:
            log.warning("the CA chain expires on %s: SVIDs will not outlive it", _when(signing.not_after))
        return ca

    # --- the bundle ---

    def bundle(self) -> list[str]:
        """The trust anchors sidecars verify peers against (PEM): during a rotation the current
        root then the new one."""
        roots = [self.current.root] + ([self.next.root] if self.next else [])
        return [_pem(r) for r in roots]

    def bundle_digest(self) -> str:
        """Changes exactly when the bundle does."""
        return "sha256:" + hashlib.sha256("".join(self.bundle()).encode()).hexdigest()

    # --- SVIDs ---

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
        # Signing and recording under one lock: a rotation never finishes between the two.
        with self._lock:
            authority = self.signing
            now = _now()
            not_after = min(now + ttl, authority.not_after)
            leaf = authority.sign_leaf(csr.public_key(), expected, now - CLOCK_SKEW, not_after)
            self._record(authority, not_after)
        return _pem(leaf) + authority.chain_pem(), not_after

    def _record(self, authority: Authority, not_after: dt.datetime) -> None:
        """Remember the latest expiry of this issuer's SVIDs before the SVID leaves (lock held)."""
        known = _time(self.state.issued.get(authority.fingerprint))
        if known is None or known < not_after:
            step = RECORD_STEP_SECONDS
            rounded = dt.datetime.fromtimestamp(math.ceil(not_after.timestamp() / step) * step, dt.UTC)
            self.state.issued[authority.fingerprint] = _iso(rounded)
            self._save()

    def _save(self) -> None:
        self.state.write(self.directory / "state.json")

    # --- rotation ---

    def finish_safe_after(self) -> dt.datetime | None:
        """During a rotation, the time after which no SVID from the outgoing issuer is valid."""
        if self.phase == "idle":
            return None
        known = _time(self.state.issued.get(self.current.fingerprint))
        started = _time(self.state.started_at) or _now()
        return max(known, started) if known else started

    def start_rotation(self, *, bundle_generation: int | None = None) -> None:
        """Phase 1: the new root joins the bundle; SVIDs still come from the current issuer."""
        with self._lock:
            if self.phase != "idle":
                raise RotationRefused(f"a root rotation is already {self.phase}: see GET /api/v1/identity/rotation")
            try:
                next_, _ = _load_authority(self.directory, "next-", self.trust_domain, create=True)
            except CaError as e:
                raise RotationRefused(f"the new root cannot be used: {e}") from None
            if fingerprint(next_.root) == fingerprint(self.current.root):
                raise RotationRefused("next-root.pem is the current root: a rotation needs a different one")
            self.next = next_
            self.state.phase, self.state.started_at = "bundled", _iso(_now())
            self.state.activated_at, self.state.bundle_generation = None, bundle_generation
            self._save()
        log.info("root rotation started: bundle %s + %s", fingerprint(self.current.root), fingerprint(next_.root))

    def activate_rotation(self) -> None:
        """Phase 2: SVIDs come from the new issuer (peers already trust its root)."""
        with self._lock:
            if self.phase != "bundled":
                raise RotationRefused(self._not_now("activate"))
            self.state.phase, self.state.activated_at = "activated", _iso(_now())
            self._save()
        log.info("root rotation activated: SVIDs now from %s", self.signing.fingerprint)

    def finish_rotation(self, *, force: bool = False, bundle_generation: int | None = None) -> None:
        """Phase 3: the old root leaves the bundle and the new root and issuer become the current
        ones. Refused while an SVID from the old issuer may be valid, unless forced."""
        with self._lock:
            if self.phase != "activated" or self.next is None:
                raise RotationRefused(self._not_now("finish"))
            safe = self.finish_safe_after()
            if safe is not None and safe > _now() and not force:
                raise RotationRefused(
                    f"SVIDs from the outgoing issuer may be valid until {_when(safe)} "
                    f"({math.ceil((safe - _now()).total_seconds())} s from now), and peers would no longer "
                    "trust them; finish after that, or force it"
                )
            old = self.current
            stamp = _now().strftime("%Y%m%dT%H%M%SZ")
            (self.directory / "retired").mkdir(exist_ok=True, mode=0o700)
            retired = self.directory / "retired" / f"{stamp}-{fingerprint(old.root)[7:19]}"
            retired.mkdir(exist_ok=True, mode=0o700)
            for n in ("root.pem", "issuer.pem"):
                shutil.copyfile(self.directory / n, retired / n)
            self.state.phase = "finishing"
            self.state.next_root_key = (self.directory / "next-root.key").exists()
            self._save()
            self._complete_finish(self.directory, self.state)
            self.current, self.next = self.next, None
            self.state.bundle_generation = bundle_generation
            self._save()
        log.info(
            "root rotation finished%s: bundle %s; retired root %s (certificates kept in %s)",
            " (forced)" if force and safe is not None and safe > _now() else "",
            fingerprint(self.current.root),
            fingerprint(old.root),
            retired,
        )

    @staticmethod
    def _complete_finish(directory: Path, state: State) -> None:
        """The new files take the current ones' names; idempotent, so a crash midway is completed
        on the next start."""
        for n in _FILES:
            new, cur = directory / f"next-{n}", directory / n
            if new.exists():
                os.replace(new, cur)
            elif n == "root.key" and not state.next_root_key:
                cur.unlink(missing_ok=True)  # the old root's key; the new root came without one
        missing = [n for n in ("root.pem", "issuer.pem", "issuer.key") if not (directory / n).exists()]
        if missing:
            raise CaError(f"finishing a root rotation: {', '.join(missing)} and next-{missing[0]} are missing")
        issuer = fingerprint(_read_certs(directory / "issuer.pem")[0])
        current = {fp: t for fp, t in state.issued.items() if fp == issuer}
        state.phase, state.started_at, state.activated_at, state.next_root_key = "idle", None, None, None
        state.issued = current
        state.write(directory / "state.json")

    def _not_now(self, step: str) -> str:
        if self.phase == "idle":
            return f"no root rotation is in progress: start one before you {step}"
        if step == "finish":
            return "the rotation is not activated yet: SVIDs still come from the old issuer; activate first"
        return f"the rotation is already {self.phase}"

    def status(self) -> dict[str, Any]:
        """The rotation as the API shows it: fingerprints and subjects, never a key."""
        signing = self.signing

        def root(a: Authority, role: str) -> dict[str, Any]:
            return {
                "fingerprint": fingerprint(a.root),
                "subject": _describe(a.root),
                "not_after": a.root.not_valid_after_utc,
                "role": role,
                "issuing": a is signing,
            }

        roots = [root(self.current, "current")] + ([root(self.next, "next")] if self.next else [])
        return {
            "trust_domain": self.trust_domain,
            "phase": self.phase,
            "roots": roots,
            "issuer": {
                "fingerprint": signing.fingerprint,
                "subject": _describe(signing.issuer),
                "not_after": signing.issuer.not_valid_after_utc,
                "root_fingerprint": fingerprint(signing.root),
            },
            "bundle_digest": self.bundle_digest(),
            "bundle_generation": self.state.bundle_generation,
            "started_at": _time(self.state.started_at),
            "activated_at": _time(self.state.activated_at),
            "finish_safe_after": self.finish_safe_after(),
        }
