"""The control plane's HTTPS serving certificate, and the CA clients pin to
trust it (``meshctl.trust`` is the clients' side).

Files in ``<data-dir>/tls`` (0700):

``serving.pem`` + ``serving.key`` (0600)
    Made here: a server certificate from the mesh CA's current issuer (leaf, then the
    issuer chain; EC P-256, 90 days), for the names ``names`` finds. Made again on start
    when missing, within 30 days of expiry, for other names, or when it no longer chains
    to the current root (after a root rotation finished). An operator's own pair
    (``--tls-cert``/``--tls-key``) is served from where it is instead, never copied.
``ca.pem``
    The CA certificate clients trust the serving certificate by: the mesh root, or for an
    operator's pair the last certificate of its chain file when that is a CA (absent
    otherwise: clients then use their system trust store or ``--ca-file``). Its pin
    (``serving_ca_hash``) is what ``--ca-hash`` takes, and ``GET /api/v1/ca/serving``
    shows both without a token. Absent while the control plane serves plain HTTP.

The pin is ``sha256:`` and the hex SHA-256 of the CA certificate's DER-encoded
SubjectPublicKeyInfo, as kubeadm's ``--discovery-token-ca-cert-hash``.

Replicas: the mesh CA is the database's, shared by every replica on it, so each
replica's own leaf (for its own names, its key in its own ``tls/``) chains to the
one root; one ``--ca-hash`` pin, or one ``ca.pem`` as ``--ca-file``, trusts them
all. After a root rotation finishes, each replica makes its leaf again on its next
start (it no longer chains to the current root), and the pin is the new root's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import os
import re
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509 import verification

from meshctl.control.ca.authority import CertificateAuthority
from meshctl.control.ca.certs import CLOCK_SKEW, Authority, new_key, now, pem, when
from meshctl.control.ca.errors import CaError
from meshctl.control.ca.files import read_certs, write_key
from meshctl.trust import ca_pin, is_loopback

log = logging.getLogger("meshctl.control.ca")

SERVING_DAYS = 90
#: Made again on start when it expires sooner than this.
RENEW_BEFORE = dt.timedelta(days=30)
_DNS = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def tls_dir(data_dir: Path) -> Path:
    return data_dir / "tls"


def serving_ca_pem(data_dir: Path) -> str | None:
    """The CA (PEM) clients trust this control plane's serving certificate by; None when it
    serves plain HTTP, or an operator's certificate whose chain file names no CA."""
    try:
        return (tls_dir(data_dir) / "ca.pem").read_text()
    except FileNotFoundError:
        return None


def serving_ca_hash(data_dir: Path) -> str | None:
    """The pin of the serving CA (``sha256:<hex of its DER SubjectPublicKeyInfo>``) for the join
    command (``meshctl proxy --ca-hash``); None when there is none (see ``serving_ca_pem``)."""
    ca = serving_ca_pem(data_dir)
    return ca_pin(ca) if ca else None


# === names ===


def san(name: str) -> x509.GeneralName:
    """An IP address SAN for an address, a DNS one for a name; ValueError for neither."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    if not _DNS.match(name.lower()) or len(name) > 253:
        raise ValueError(f"{name!r} is neither an IP address nor a DNS name")
    return x509.DNSName(name.lower())


def names(host: str, extra: list[str]) -> list[str]:
    """The names the serving certificate is for: the bind address (for 0.0.0.0 or ::, this host's
    names and addresses), loopback (for the CLI on this host), and `extra` (``--tls-san``)."""
    out = ["localhost", "127.0.0.1", "::1"]
    if host in ("0.0.0.0", "::", ""):
        hostname = socket.gethostname()
        out += [hostname, socket.getfqdn()]
        with contextlib.suppress(OSError):
            out += [str(info[4][0]) for info in socket.getaddrinfo(hostname, None)]
    else:
        out.append(host)
    out += extra
    seen: dict[str, None] = {}
    for n in out:
        n = n.strip("[]").lower()
        try:
            san(n)
        except ValueError:
            continue  # a host name that is no DNS name (e.g. with "_"): clients cannot ask for it anyway
        seen.setdefault(n, None)
    return sorted(seen)


def _names_of(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return sorted([*ext.get_values_for_type(x509.DNSName), *(str(a) for a in ext.get_values_for_type(x509.IPAddress))])


# === the files ===


@dataclass(frozen=True)
class ServingFiles:
    """What uvicorn serves: a chain file (leaf first) and its key."""

    cert_file: Path
    key_file: Path


def _current(cert_path: Path, key_path: Path, root: x509.Certificate, wanted: list[str]) -> str | None:
    """Why the serving certificate must be made again, or None when it is good."""
    if not cert_path.exists() or not key_path.exists():
        return "none yet"
    try:
        chain = read_certs(cert_path)
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_path, key_path)
    except (CaError, ssl.SSLError, OSError) as e:
        return f"unusable ({e})"
    leaf = chain[0]
    if _names_of(leaf) != wanted:
        return f"its names were {', '.join(_names_of(leaf))}"
    if leaf.not_valid_after_utc - now() < RENEW_BEFORE:
        return f"it expires on {when(leaf.not_valid_after_utc)}"
    try:
        _verify(leaf, chain[1:], root)
    except CaError:
        return "it does not chain to the current root"
    return None


def _verify(leaf: x509.Certificate, chain: list[x509.Certificate], root: x509.Certificate) -> None:
    """CaError unless `leaf` verifies up to `root` as a server certificate for its first name (an
    operator's intermediate may have name constraints that refuse it)."""
    subject = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value[0]
    assert isinstance(subject, x509.DNSName | x509.IPAddress)  # what `san` makes
    verifier = verification.PolicyBuilder().store(verification.Store([root])).time(now()).build_server_verifier(subject)
    try:
        verifier.verify(leaf, chain)
    except verification.VerificationError as e:
        raise CaError(
            f"a serving certificate from the CA's issuer would not verify: {e}; give your own with --tls-cert/--tls-key"
        ) from None


def _issue(authority: Authority, wanted: list[str], cert_path: Path, key_path: Path) -> None:
    key = new_key()
    at = now()
    not_after = min(at + dt.timedelta(days=SERVING_DAYS), authority.not_after)
    leaf = authority.sign_server(key.public_key(), [san(n) for n in wanted], at - CLOCK_SKEW, not_after)
    _verify(leaf, list(authority.chain), authority.root)
    write_key(key_path, key)
    tmp = cert_path.with_name(cert_path.name + ".tmp")
    tmp.write_text(pem(leaf) + authority.chain_pem())
    os.replace(tmp, cert_path)


def ensure_serving_cert(data_dir: Path, ca: CertificateAuthority, wanted: list[str]) -> ServingFiles:
    """Our serving certificate for `wanted` (see ``names``), made or made again as needed (see the
    module doc), and ``ca.pem``. CaError when the CA cannot issue one that verifies."""
    directory = tls_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = directory / "serving.pem", directory / "serving.key"
    authority = ca.current  # its root is in every sidecar's bundle until a rotation finishes
    why = _current(cert_path, key_path, authority.root, wanted)
    if why is not None:
        _issue(authority, wanted, cert_path, key_path)
        log.info("made the serving certificate for %s (%s) in %s", ", ".join(wanted), why, cert_path)
    if key_path.stat().st_mode & 0o077:
        os.chmod(key_path, 0o600)
    (directory / "ca.pem").write_text(pem(authority.root))
    return ServingFiles(cert_path, key_path)


def operator_files(data_dir: Path, cert_file: Path, key_file: Path) -> ServingFiles:
    """An operator's pair, checked (they load and belong together); ``ca.pem`` is the chain's last
    certificate when that is a CA, else removed. CaError naming the problem."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as e:
        raise CaError(f"--tls-cert {cert_file} with --tls-key {key_file} cannot be served: {e}") from None
    chain = read_certs(cert_file)
    directory = tls_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    top = chain[-1]
    try:
        is_ca = top.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if len(chain) > 1 and is_ca:
        (directory / "ca.pem").write_text(pem(top))
    else:
        (directory / "ca.pem").unlink(missing_ok=True)
    if key_file.stat().st_mode & 0o077:
        log.warning("the serving key %s may be read by group or others: chmod 600 it", key_file)
    return ServingFiles(cert_file, key_file)


def plain_http(data_dir: Path, host: str, *, insecure: bool) -> None:
    """Serving plain HTTP: no serving CA to announce; a warning off loopback (`insecure` must be
    set there: ValueError otherwise)."""
    (tls_dir(data_dir) / "ca.pem").unlink(missing_ok=True)
    if not is_loopback(host):
        if not insecure:
            raise ValueError(f"plain HTTP on {host} needs --insecure-http")
        log.warning(
            "serving plain HTTP on %s (--insecure-http): join tokens, API tokens and CSRs travel in clear", host
        )
