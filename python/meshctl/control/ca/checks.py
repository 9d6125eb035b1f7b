"""Whether a root and issuer can sign SVIDs the data plane will accept: key
types it verifies, CA flags, each link of the chain, validity, path length and
name constraints, then a probe SVID through a full path verification. Each
refusal is a ``CaError`` naming the file and what to do."""

from __future__ import annotations

import itertools
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import verification

from meshctl.control.ca.certs import CLOCK_SKEW, Authority, describe, new_key, now, spki, when
from meshctl.control.ca.errors import CaError
from meshctl.spiffe import spiffe_id

SUPPORTED_KEYS = "the data plane verifies ECDSA P-256 or P-384, RSA of 2048 bits or more, and Ed25519"


def check_key_type(public: Any, where: str) -> None:
    if isinstance(public, ec.EllipticCurvePublicKey):
        if not isinstance(public.curve, ec.SECP256R1 | ec.SECP384R1):
            raise CaError(f"{where} has an ECDSA key on {public.curve.name}: {SUPPORTED_KEYS}")
    elif isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise CaError(f"{where} has a {public.key_size}-bit RSA key: {SUPPORTED_KEYS}")
    elif not isinstance(public, ed25519.Ed25519PublicKey):
        raise CaError(f"{where} has a {type(public).__name__}: {SUPPORTED_KEYS}")


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


def validate(authority: Authority, trust_domain: str, prefix: str = "") -> None:
    """Raise CaError unless the issuer can sign SVIDs for `trust_domain` that verify up to the root:
    its key, CA flags and key usage, each link's signature, validity, path length and name
    constraints, then a probe certificate through a full path verification."""
    root, chain, key = authority.root, authority.chain, authority.key
    issuer_file, root_file = f"{prefix}issuer.pem", f"{prefix}root.pem"
    if spki(key.public_key()) != spki(chain[0].public_key()):
        raise CaError(
            f"{prefix}issuer.key does not belong to {issuer_file} ({describe(chain[0])}): their public keys differ"
        )
    if root.issuer != root.subject or not _signed_by(root, root):
        raise CaError(
            f"{root_file} ({describe(root)}) is not self-signed (its issuer is {root.issuer.rfc4514_string()}): "
            f"give the root CA's certificate there; intermediates go in {issuer_file}, after the issuer"
        )
    named = [(issuer_file, chain[0])]
    named += [(f"{issuer_file} (certificate {i + 1}, {describe(c)})", c) for i, c in enumerate(chain[1:], 1)]
    named.append((root_file, root))
    at = now()
    for where, cert in named:
        check_key_type(cert.public_key(), where)
        basic = _ext(cert, x509.BasicConstraints)
        if basic is None or not basic.ca:
            raise CaError(
                f"{where} is not a CA certificate (basicConstraints has no cA=TRUE): it cannot sign certificates"
            )
        usage = _ext(cert, x509.KeyUsage)
        if usage is None or not usage.key_cert_sign:
            raise CaError(f"{where} may not sign certificates: its keyUsage lacks keyCertSign")
        if at < cert.not_valid_before_utc:
            raise CaError(f"{where} is not valid before {when(cert.not_valid_before_utc)} (is this clock right?)")
        if at >= cert.not_valid_after_utc:
            hint = (
                f" (remove it and {prefix}issuer.key to have a new one made from {prefix}root.key)"
                if cert is chain[0]
                else ""
            )
            raise CaError(f"{where} expired on {when(cert.not_valid_after_utc)}{hint}")
    for (where, cert), (above, parent) in itertools.pairwise(named):
        if cert.issuer != parent.subject or not _signed_by(cert, parent):
            hint = (
                f"the chain does not reach {root_file}: is it the root that issued it?"
                if parent is root
                else f"{issuer_file} must list the issuer first, then each certificate above it in order"
            )
            raise CaError(f"{where} is not signed by {above} ({describe(parent)}): {hint}")
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
    probe_key = new_key()
    probe = authority.sign_leaf(
        probe_key.public_key(), spiffe_id(trust_domain, "probe", "probe"), at - CLOCK_SKEW, at + CLOCK_SKEW
    )
    verifier = verification.PolicyBuilder().store(verification.Store([root])).time(at).build_client_verifier()
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
