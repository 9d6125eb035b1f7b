"""The control plane as CA: keys in 0600 files and never served, SVIDs only
for the join token's own SPIFFE ID, chains that verify up to the bundle."""

from __future__ import annotations

import datetime as dt
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cadb import database_of, key_lines, open_ca, rows
from meshproc import ControlPlane, service


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("cp"))
    plane.start()
    plane.apply(service("pricing"), service("frontend"))
    yield plane
    plane.stop()


def csr(*uris: str, dns: str | None = None) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    if dns:
        names.append(x509.DNSName(dns))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def ask(cp: ControlPlane, token: str, body: dict) -> httpx.Response:
    return httpx.post(f"{cp.url}/api/v1/identity/svid", json=body, headers={"Authorization": f"Bearer {token}"})


ME = "spiffe://cluster.local/ns/default/sa/pricing"


def test_an_svid_for_the_tokens_own_identity_verifies_up_to_the_bundle(cp: ControlPlane) -> None:
    token = cp.join_token("pricing")
    r = ask(cp, token, {"csr": csr(ME), "ttl_seconds": 60})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["spiffe_id"] == ME
    leaf, issuer = x509.load_pem_x509_certificates(body["certificate_chain"].encode())
    bundle = httpx.get(f"{cp.url}/api/v1/identity/bundle", headers={"Authorization": f"Bearer {token}"}).json()
    (root,) = [x509.load_pem_x509_certificate(p.encode()) for p in bundle["roots"]]
    leaf.verify_directly_issued_by(issuer)
    issuer.verify_directly_issued_by(root)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and [str(g.value) for g in san.value] == [ME]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=50) < lifetime <= dt.timedelta(seconds=61)  # one minute, as asked


def test_a_csr_for_another_identity_or_a_second_name_is_refused(cp: ControlPlane) -> None:
    token = cp.join_token("pricing")
    other = ask(cp, token, {"csr": csr("spiffe://cluster.local/ns/default/sa/frontend")})
    assert other.status_code == 403 and "may only have " + ME in other.json()["detail"]
    assert ask(cp, token, {"csr": csr(ME, dns="evil.example")}).status_code == 403
    assert ask(cp, token, {"csr": csr(ME, ME + "x")}).status_code == 403
    assert ask(cp, token, {"csr": csr()}).status_code == 422
    assert ask(cp, token, {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nnope\n"}).status_code == 422
    assert ask(cp, token, {"csr": csr(ME), "ttl_seconds": 59}).status_code == 422
    # Admin and reader tokens are not sidecars.
    assert ask(cp, cp.token("admin"), {"csr": csr(ME)}).status_code == 403
    assert httpx.post(f"{cp.url}/api/v1/identity/svid", json={"csr": csr(ME)}).status_code == 401


def test_ca_keys_are_sealed_in_the_database_and_never_served_or_logged(cp: ControlPlane) -> None:
    url = database_of(cp)
    sealed = [(r.root_key, r.issuer_key) for r in rows(url)]
    assert sealed and all(k is not None and k.startswith("v1:") and "PRIVATE" not in k for k in sealed[0])
    assert stat.S_IMODE((cp.data_dir / "ca-kek").stat().st_mode) == 0o600
    assert not list(cp.data_dir.rglob("*.key"))  # no key file (the serving key is under tls/ only with TLS)
    bundle = httpx.get(f"{cp.url}/api/v1/identity/bundle", headers=cp.reader).text
    assert "PRIVATE KEY" not in bundle and "PRIVATE KEY" not in cp.log.read_text()
    secrets = key_lines(url, cp.data_dir / "ca-kek")
    assert len(secrets) == 2  # the root's and the issuer's
    assert not any(s in bundle or s in cp.log.read_text() for s in secrets)


def test_the_ca_survives_a_restart(cp: ControlPlane) -> None:
    before = httpx.get(f"{cp.url}/api/v1/identity/bundle", headers=cp.reader).json()["roots"]
    cp.stop()
    cp.start()
    assert httpx.get(f"{cp.url}/api/v1/identity/bundle", headers=cp.reader).json()["roots"] == before
    assert ask(cp, cp.join_token("pricing"), {"csr": csr(ME)}).status_code == 200


def test_keys_made_once(tmp_path: Path) -> None:
    first = open_ca(tmp_path, "example.org")
    again = open_ca(tmp_path, "example.org")
    assert first.root == again.root and first.issuer == again.issuer
    assert first.issuer.issuer == first.root.subject


def test_the_trust_domain_is_the_operators(tmp_path: Path) -> None:
    plane = ControlPlane(tmp_path, args=("--trust-domain", "shop.example")).start()
    try:
        plane.apply(service("cart"))
        bundle = httpx.get(f"{plane.url}/api/v1/identity/bundle", headers=plane.reader).json()
        assert bundle["trust_domain"] == "shop.example"
        me = "spiffe://shop.example/ns/default/sa/cart"
        r = ask(plane, plane.join_token("cart"), {"csr": csr(me)})
        assert r.status_code == 200 and r.json()["spiffe_id"] == me
    finally:
        plane.stop()
