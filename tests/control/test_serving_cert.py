"""The control plane's serving certificate (made from the mesh CA, kept, made
again when it nears expiry or its names change) and the clients' trust rules
(pins, loopback, plain HTTP)."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cadb import open_ca
from meshctl.control.ca import CertificateAuthority, serving
from meshctl.control.ca.certs import new_key, now, pem
from meshctl.trust import Trust, ca_pin, is_loopback, parse_pin, plain_http


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return open_ca(tmp_path)


def _leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def test_serving_certificate_is_made_kept_and_pinned(tmp_path: Path, ca: CertificateAuthority) -> None:
    names = serving.names("10.0.0.5", ["cp.example.org"])
    assert names == ["10.0.0.5", "127.0.0.1", "::1", "cp.example.org", "localhost"]
    files = serving.ensure_serving_cert(tmp_path, ca, names)
    leaf = _leaf(files.cert_file)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.5") in san.get_values_for_type(x509.IPAddress)
    assert "cp.example.org" in san.get_values_for_type(x509.DNSName)
    assert files.key_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    # The pin: SHA-256 of the mesh root's DER SubjectPublicKeyInfo (not of the certificate).
    spki = ca.root.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert serving.serving_ca_hash(tmp_path) == "sha256:" + hashlib.sha256(spki).hexdigest()
    assert serving.serving_ca_pem(tmp_path) == pem(ca.root)
    # Same names, far from expiry: kept.
    again = serving.ensure_serving_cert(tmp_path, ca, names)
    assert _leaf(again.cert_file).serial_number == leaf.serial_number
    # Another name: made again.
    more = serving.ensure_serving_cert(tmp_path, ca, serving.names("10.0.0.5", ["cp2.example.org"]))
    assert _leaf(more.cert_file).serial_number != leaf.serial_number


def test_serving_certificate_near_expiry_is_renewed(tmp_path: Path, ca: CertificateAuthority) -> None:
    names = serving.names("127.0.0.1", [])
    files = serving.ensure_serving_cert(tmp_path, ca, names)
    # What an older start left: a certificate 10 days from expiry.
    key = new_key()
    soon = ca.current.sign_server(
        key.public_key(), [serving.san(n) for n in names], now() - dt.timedelta(days=80), now() + dt.timedelta(days=10)
    )
    files.cert_file.write_text(pem(soon) + ca.current.chain_pem())
    files.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    renewed = _leaf(serving.ensure_serving_cert(tmp_path, ca, names).cert_file)
    assert renewed.serial_number != soon.serial_number
    assert renewed.not_valid_after_utc - now() > dt.timedelta(days=80)


def test_unspecified_bind_names_this_host(tmp_path: Path) -> None:
    import socket

    assert socket.gethostname().lower() in serving.names("0.0.0.0", []) or "_" in socket.gethostname()
    with pytest.raises(ValueError, match="neither an IP address nor a DNS name"):
        serving.san("not a name!")


def test_plain_http_served_elsewhere_than_loopback_needs_the_flag(tmp_path: Path) -> None:
    serving.plain_http(tmp_path, "127.0.0.1", insecure=False)
    with pytest.raises(ValueError, match="--insecure-http"):
        serving.plain_http(tmp_path, "0.0.0.0", insecure=False)
    serving.plain_http(tmp_path, "0.0.0.0", insecure=True)


def test_client_rules_for_pins_and_plain_http() -> None:
    assert parse_pin(" SHA256:" + "AB" * 32) == "sha256:" + "ab" * 32
    for bad in ("ab" * 32, "sha256:abc", "sha1:" + "ab" * 20):
        with pytest.raises(ValueError, match="sha256:<64 hex digits>"):
            parse_pin(bad)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "10.0.0.5", "cp.example.org", "localhost.example.org"):
        assert not is_loopback(host), host
    assert plain_http("http://127.0.0.1:15010", insecure=False) is None
    assert plain_http("https://10.0.0.5:15010", insecure=False) is None
    with pytest.raises(ValueError, match="in clear"):
        plain_http("http://10.0.0.5:15010", insecure=False)
    assert "in clear" in (plain_http("http://10.0.0.5:15010", insecure=True) or "")


def test_trust_learns_the_bundle_roots_after_a_pin(tmp_path: Path, ca: CertificateAuthority) -> None:
    """A sidecar bootstrapped from a pin keeps the CA in its store, and adds the roots the control
    plane hands out (a root rotation's new root) so that a restart still trusts it."""
    store = tmp_path / "control-plane-ca.pem"
    root = pem(ca.root)
    store.write_text(root)
    trust = Trust("https://127.0.0.1:1", pin=ca_pin(root), store=store)
    trust.context()  # the pinned CA is in the store: no discovery (nothing listens there)
    other = open_ca(tmp_path / "other")
    trust.learn([root, pem(other.root)])
    assert store.read_text().count("BEGIN CERTIFICATE") == 2
    # Trust made from the store alone (a restart without --ca-hash) has both.
    assert "the CAs trusted at bootstrap" in Trust("https://127.0.0.1:1", store=store).source
