"""The CA with an operator's intermediate, and root rotation without downtime,
against a real control plane: chains checked with `cryptography`'s path
verification and with `openssl verify`; keys never served or logged."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from cadb import database_of, key_lines, open_ca, rows, url_for
from helpers import unused_port, wait_until
from meshctl.control.ca import CaError, RotationRefused, fingerprint
from meshproc import ControlPlane, service

ME = "spiffe://cluster.local/ns/default/sa/pricing"

# === an operator's PKI, made here ===

Pair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def make_ca(
    cn: str,
    signer: Pair | None = None,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    ca: bool = True,
    key_cert_sign: bool = True,
    path_length: int | None = None,
    not_after: dt.datetime | None = None,
    constraints: x509.NameConstraints | None = None,
) -> Pair:
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )
    signer_cert, signer_key = signer if signer else (None, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer_cert.subject if signer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if signer_cert:
        ski = signer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    if constraints:
        b = b.add_extension(constraints, critical=True)
    return b.sign(signer_key, hashes.SHA256()), key


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def place(ca_dir: Path, **files: str) -> Path:
    """Files in the CA directory as an operator puts them there (next_root_pem -> next-root.pem)."""
    ca_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        stem, ext = name.rsplit("_", 1)
        (ca_dir / f"{stem.replace('_', '-')}.{ext}").write_text(text)
    return ca_dir


# === SVIDs and their verification ===


def csr(uri: str = ME) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


def svid(cp: ControlPlane, token: str) -> list[x509.Certificate]:
    r = httpx.post(
        f"{cp.url}/api/v1/identity/svid",
        json={"csr": csr(), "ttl_seconds": 60},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert "PRIVATE KEY" not in r.text
    return x509.load_pem_x509_certificates(r.json()["certificate_chain"].encode())


def verifies(chain: list[x509.Certificate], roots: list[x509.Certificate]) -> bool:
    """Full path verification of an SVID (leaf + intermediates) against trust anchors."""
    store = verification.Store(roots)
    verifier = verification.PolicyBuilder().store(store).build_client_verifier()
    try:
        verified = verifier.verify(chain[0], chain[1:])
    except verification.VerificationError:
        return False
    return [str(g.value) for g in verified.subjects or []] == [ME]


def roots_of(bundle: dict[str, Any]) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(p.encode()) for p in bundle["roots"]]


def openssl_verify(tmp: Path, chain: list[x509.Certificate], roots: list[x509.Certificate]) -> str:
    (tmp / "roots.pem").write_text(pem(*roots))
    (tmp / "untrusted.pem").write_text(pem(*chain[1:]))
    (tmp / "leaf.pem").write_text(pem(chain[0]))
    out = subprocess.run(
        ["openssl", "verify", "-CAfile", tmp / "roots.pem", "-untrusted", tmp / "untrusted.pem", tmp / "leaf.pem"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout + out.stderr


def get(cp: ControlPlane, path: str, role: str = "reader") -> Any:
    r = cp.call("GET", path, role=role)
    assert r.status_code == 200, r.text
    assert "PRIVATE KEY" not in r.text
    return r.json()


def secrets_in(ca_dir: Path) -> list[str]:
    """A line from the middle of every key file under the CA directory."""
    return [p.read_text().splitlines()[1] for p in ca_dir.rglob("*.key")]


def secrets_of(cp: ControlPlane) -> list[str]:
    """A line from the middle of every key the control plane's database holds (opened with its KEK)."""
    return key_lines(database_of(cp), cp.data_dir / "ca-kek")


def assert_never_shown(cp: ControlPlane, secrets: list[str], *texts: str) -> None:
    log = cp.log.read_text()
    assert "PRIVATE KEY" not in log
    for s in secrets:
        assert s not in log and not any(s in t for t in texts)


# === an operator's intermediate ===


def openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


def openssl_pki(d: Path) -> None:
    """root (RSA) -> mid (pathlen 1) -> issuer (EC, pathlen 0), the way an operator makes them."""
    d.mkdir()
    (d / "ext.cnf").write_text(
        "[mid]\nbasicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
        "[issuer]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
    )
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "root.key", "-out", "root.pem", "-days", "30",
            "-subj", "/O=Example/CN=Example Root", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    for name, parent in (("mid", "root"), ("issuer", "mid")):
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                f"{name}.key", "-out", f"{name}.csr", "-subj", f"/O=Example/CN=Example {name}", cwd=d)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{parent}.pem", "-CAkey", f"{parent}.key",
                "-CAcreateserial", "-days", "20", "-extfile", "ext.cnf", "-extensions", name, "-out", f"{name}.pem",
                cwd=d)  # fmt: skip


def test_an_operators_intermediate_signs_svids_that_verify_up_to_their_root(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    openssl_pki(pki)
    ca_dir = tmp_path / "cp" / "ca"
    place(
        ca_dir,
        root_pem=(pki / "root.pem").read_text(),  # no root.key: it stays with the operator
        issuer_pem=(pki / "issuer.pem").read_text() + (pki / "mid.pem").read_text(),
        issuer_key=(pki / "issuer.key").read_text(),
    )
    secrets = secrets_in(ca_dir)
    cp = ControlPlane(tmp_path / "cp").start()
    try:
        cp.apply(service("pricing"))
        bundle = get(cp, "/api/v1/identity/bundle")
        root = x509.load_pem_x509_certificate((pki / "root.pem").read_bytes())
        assert roots_of(bundle) == [root]
        chain = svid(cp, cp.join_token("pricing"))
        mid = x509.load_pem_x509_certificate((pki / "mid.pem").read_bytes())
        issuer = x509.load_pem_x509_certificate((pki / "issuer.pem").read_bytes())
        assert chain[1:] == [issuer, mid]  # leaf + issuer chain, never the root
        assert verifies(chain, [root])
        assert openssl_verify(tmp_path, chain, [root]).strip().endswith("leaf.pem: OK")
        # Taken into the database: the keys' files removed, the certificates kept as a record.
        assert not list(ca_dir.rglob("*.key"))
        (kept,) = (ca_dir / "imported").iterdir()
        assert sorted(p.name for p in kept.iterdir()) == ["issuer.pem", "root.pem"]
        assert secrets_of(cp) == secrets  # the issuer's key, sealed; no root key
        assert_never_shown(cp, secrets, json.dumps(bundle))
    finally:
        cp.stop()


def start_refused(data_dir: Path) -> str:
    """Start a control plane that must refuse: its exit status is 1, its message returned."""
    out = subprocess.run(
        [sys.executable, "-m", "meshctl", "control-plane", "--data-dir", str(data_dir), "--port", str(unused_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" not in text and "PRIVATE KEY" not in text, text
    return text


ROOT, ROOT_KEY = make_ca("Root", path_length=1)


def _bad_imports() -> Iterator[tuple[str, dict[str, str], str]]:
    """(case, files beside the root, what the message says)."""
    signer = (ROOT, ROOT_KEY)
    good, _ = make_ca("Issuer", signer, path_length=0)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    other_key = ec.generate_private_key(ec.SECP256R1())
    yield (
        "key mismatch",
        {"issuer_pem": pem(good), "issuer_key": key_pem(other_key)},
        ("issuer.key does not belong to issuer.pem"),
    )
    leafish, k = make_ca("Not a CA", signer, ca=False)
    yield "not a CA", {"issuer_pem": pem(leafish), "issuer_key": key_pem(k)}, "issuer.pem is not a CA certificate"
    no_sign, k = make_ca("No keyCertSign", signer, key_cert_sign=False)
    yield "no keyCertSign", {"issuer_pem": pem(no_sign), "issuer_key": key_pem(k)}, "keyUsage lacks keyCertSign"
    expired, k = make_ca("Expired", signer, not_after=past)
    yield "expired", {"issuer_pem": pem(expired), "issuer_key": key_pem(k)}, "issuer.pem expired on"
    foreign, k = make_ca("Foreign", make_ca("Another Root"))
    yield "another root's", {"issuer_pem": pem(foreign), "issuer_key": key_pem(k)}, "is not signed by root.pem"
    mid, mid_key = make_ca("Mid", signer, path_length=0)
    deep, k = make_ca("Deep", (mid, mid_key), path_length=0)
    yield (
        "path length",
        {"issuer_pem": pem(deep, mid), "issuer_key": key_pem(k)},
        ("path length: issuer.pem (certificate 2, CN=Mid,O=Example) has pathLenConstraint=0"),
    )
    other_domain = x509.NameConstraints([x509.UniformResourceIdentifier("shop.example")], None)
    fenced, k = make_ca("Fenced", signer, constraints=other_domain)
    yield (
        "name constraints",
        {"issuer_pem": pem(fenced), "issuer_key": key_pem(k)},
        ("name constraints: issuer.pem permits URIs only under shop.example"),
    )
    yield "root without a key or an issuer", {}, "root.pem has no root.key beside it"
    yield "issuer without its key", {"issuer_pem": pem(good)}, "issuer.pem without issuer.key"
    yield "a chain as root.pem", {"root_pem": pem(ROOT, good)}, "root.pem holds 2 certificates"


BAD = list(_bad_imports())


@pytest.mark.parametrize(("files", "message"), [(f, m) for _, f, m in BAD], ids=[n for n, _, _ in BAD])
def test_an_unusable_import_refuses_to_start_with_a_clear_message(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    place(tmp_path / "ca", **{"root_pem": pem(ROOT), **files})
    text = start_refused(tmp_path)
    assert "error: the CA cannot be used" in text and message in text, text
    assert not (tmp_path / "mesh.db").exists()  # refused before anything else was touched


def test_an_expired_issuer_refuses_to_start(tmp_path: Path) -> None:
    gone, gone_key = make_ca("Gone", (ROOT, ROOT_KEY), not_after=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    place(
        tmp_path / "ca",
        root_pem=pem(ROOT),
        root_key=key_pem(ROOT_KEY),
        issuer_pem=pem(gone),
        issuer_key=key_pem(gone_key),
    )
    assert "remove it and issuer.key to have a new one made from root.key" in start_refused(tmp_path)


# === root rotation against a real control plane ===


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[ControlPlane]:
    (tmp_path / "cp").mkdir()
    plane = ControlPlane(tmp_path / "cp").start()
    plane.apply(service("pricing"))
    yield plane
    plane.stop()


def rotation(cp: ControlPlane, step: str = "", role: str = "admin", **params: str) -> httpx.Response:
    r = cp.call("POST", "/api/v1/identity/rotation" + step, role=role, params=params)
    assert "PRIVATE KEY" not in r.text
    return r


def register_sidecar(cp: ControlPlane, token: str) -> int:
    body = {
        "service": "pricing",
        "address": "127.0.0.1",
        "inbound_port": unused_port(),
        "app_port": 1,
        "ttl_seconds": 300,
    }
    r = httpx.put(f"{cp.url}/api/v1/sidecars", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    return int(r.json()["id"])


def test_a_root_rotation_in_three_steps_never_leaves_a_valid_svid_untrusted(cp: ControlPlane, tmp_path: Path) -> None:
    token = cp.join_token("pricing")
    (old_root,) = roots_of(get(cp, "/api/v1/identity/bundle"))
    before = svid(cp, token)
    sidecar = register_sidecar(cp, token)
    watch = f"{cp.url}/api/v1/sidecars/{sidecar}/snapshot"
    generation = get(cp, "/api/v1/mesh")["generation"]

    # Readers see the rotation; only the admin token moves it.
    assert get(cp, "/api/v1/identity/rotation")["phase"] == "idle"
    as_sidecar = {"Authorization": f"Bearer {token}"}
    for step in ("", "/activate", "/finish"):
        assert rotation(cp, step, role="reader").status_code == 403
        assert httpx.post(f"{cp.url}/api/v1/identity/rotation{step}", headers=as_sidecar).status_code == 403
    assert httpx.get(f"{cp.url}/api/v1/identity/rotation", headers=as_sidecar).status_code == 403
    assert rotation(cp, "/activate").status_code == 409 and rotation(cp, "/finish").status_code == 409

    # 1. Both roots in the bundle, pushed at once; SVIDs still from the old issuer.
    started = rotation(cp)
    assert started.status_code == 200, started.text
    status = started.json()
    assert status["phase"] == "bundled" and [r["role"] for r in status["roots"]] == ["current", "next"]
    bundle = get(cp, "/api/v1/identity/bundle")
    assert len(bundle["roots"]) == 2 and bundle["digest"] == status["bundle_digest"]
    old, new = roots_of(bundle)
    assert old == old_root and fingerprint(new) == status["roots"][1]["fingerprint"]
    assert status["bundle_generation"] > generation
    snap = httpx.get(watch, params={"version": generation, "wait": 10}, headers=as_sidecar, timeout=15)
    assert snap.status_code == 200 and snap.json()["version"] >= status["bundle_generation"]
    during = svid(cp, token)
    assert verifies(during, [old]) and not verifies(during, [new])

    # 2. Activation waits for every live sidecar to ACK the generation that carried the new root.
    assert status["sidecars_pending"] == 1
    refused = rotation(cp, "/activate")
    assert refused.status_code == 409 and "have not ACKed" in refused.json()["detail"]
    ack = httpx.post(
        f"{watch.rsplit('/', 1)[0]}/status",
        json={"version": status["bundle_generation"]},
        headers=as_sidecar,
    )
    assert ack.status_code == 204
    wait_until(lambda: get(cp, "/api/v1/identity/rotation")["sidecars_pending"] == 0, what="the ACK to be recorded")
    activated = rotation(cp, "/activate")
    assert activated.status_code == 200, activated.text
    assert activated.json()["issuer"]["root_fingerprint"] == fingerprint(new)
    after = svid(cp, token)
    both = roots_of(get(cp, "/api/v1/identity/bundle"))
    assert verifies(after, [new]) and not verifies(after, [old])
    assert verifies(before, both) and verifies(during, both) and verifies(after, both)  # nobody cut off
    assert openssl_verify(tmp_path, after, both).strip().endswith("leaf.pem: OK")

    # 3. Not while an SVID from the old issuer is valid...
    refused = rotation(cp, "/finish")
    assert refused.status_code == 409 and "force" in refused.json()["detail"], refused.text
    safe = dt.datetime.fromisoformat(get(cp, "/api/v1/identity/rotation")["finish_safe_after"])
    latest = max(before[0].not_valid_after_utc, during[0].not_valid_after_utc)
    assert latest <= safe <= latest + dt.timedelta(seconds=60)

    # ...and a restart midway keeps the phase, the roots and the issuer.
    shown = get(cp, "/api/v1/identity/rotation")
    secrets = secrets_of(cp)
    assert len(secrets) == 4  # root, issuer, next-root, next-issuer
    cp.stop()
    cp.start()
    assert get(cp, "/api/v1/identity/rotation") == shown
    assert verifies(svid(cp, token), [new])

    finished = rotation(cp, "/finish", force="true")
    assert finished.status_code == 200, finished.text
    assert finished.json()["phase"] == "idle"
    bundle = get(cp, "/api/v1/identity/bundle")
    assert roots_of(bundle) == [new] and bundle["digest"] != status["bundle_digest"]
    assert verifies(after, [new]) and not verifies(before, [new])
    slots = {r.slot.split(":")[0]: r for r in rows(database_of(cp))}
    assert sorted(slots) == ["current", "retired"]  # the next slot became the current one
    assert slots["retired"].root_fingerprint == fingerprint(old_root)
    assert slots["retired"].root_key is None and slots["retired"].issuer_key is None  # certificates, no keys
    assert_never_shown(cp, secrets, json.dumps(shown), finished.text, json.dumps(bundle))


def test_the_operators_next_root_is_used(cp: ControlPlane) -> None:
    ca_dir = cp.data_dir / "ca"
    place(ca_dir, next_root_pem=pem(make_ca("Next Root")[0]))
    refused = rotation(cp)
    assert refused.status_code == 409, refused.text
    assert "next-root.pem has no next-root.key beside it" in refused.json()["detail"]
    assert get(cp, "/api/v1/identity/rotation")["phase"] == "idle"

    theirs, their_key = make_ca("Next Root", path_length=1)
    place(ca_dir, next_root_pem=pem(theirs), next_root_key=key_pem(their_key))
    started = rotation(cp)
    assert started.status_code == 200, started.text
    assert started.json()["roots"][1]["fingerprint"] == fingerprint(theirs)
    assert rotation(cp).status_code == 409  # one rotation at a time
    assert rotation(cp, "/activate").status_code == 200
    chain = svid(cp, cp.join_token("pricing"))
    assert verifies(chain, [theirs])
    # Nothing was issued by the old issuer yet: finishing is safe at once.
    assert rotation(cp, "/finish").status_code == 200
    assert roots_of(get(cp, "/api/v1/identity/bundle")) == [theirs]
    assert not list(ca_dir.glob("next-*"))  # taken into the database: certificates kept, keys removed
    assert key_pem(their_key).splitlines()[1] in secrets_of(cp)


def test_meshctl_ca_status_and_rotate(cp: ControlPlane, tmp_path: Path) -> None:
    def meshctl(*args: str, token: str = "admin") -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
        environ.update({"COLUMNS": "200", "MESHCTL_SERVER": cp.url, "MESHCTL_DATA_DIR": str(tmp_path)})
        environ["MESHCTL_TOKEN"] = cp.token(token)
        out = subprocess.run(
            [sys.executable, "-m", "meshctl", *args], capture_output=True, text=True, env=environ, timeout=60
        )
        assert "Traceback" not in out.stderr and "PRIVATE KEY" not in out.stdout + out.stderr, out.stderr
        return out

    out = meshctl("ca", "status", token="reader")
    assert out.returncode == 0 and "rotation idle" in out.stdout and "current" in out.stdout, out.stdout
    refused = meshctl("ca", "rotate", "start", token="reader")
    assert refused.returncode == 1 and "403" in refused.stderr
    out = meshctl("ca", "rotate", "start")
    assert out.returncode == 0 and "rotation started" in out.stdout and "meshctl ca rotate activate" in out.stdout
    status = json.loads(meshctl("ca", "status", "-o", "json").stdout)
    assert status["phase"] == "bundled" and len(status["roots"]) == 2
    out = meshctl("ca", "rotate", "finish")
    assert out.returncode == 1 and "error: 409" in out.stderr and "activate first" in out.stderr
    assert meshctl("ca", "rotate", "activate").returncode == 0
    svid(cp, cp.join_token("pricing"))  # the old issuer signed nothing; the new one signs this
    out = meshctl("ca", "status")
    assert "rotation activated" in out.stdout and "meshctl ca rotate finish" in out.stdout
    out = meshctl("ca", "rotate", "finish", "--force")
    assert out.returncode == 0 and "alone" in out.stdout, out.stderr
    assert json.loads(meshctl("ca", "status", "-o", "json").stdout)["phase"] == "idle"


# === the CA's state, in process ===


def test_finishing_is_allowed_once_the_old_svids_have_expired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from meshctl.control.ca import authority

    ca = open_ca(tmp_path)
    _, expires = ca.issue(csr(), expected=ME, ttl=dt.timedelta(seconds=60))
    ca.start_rotation()
    ca.activate_rotation()
    with pytest.raises(RotationRefused, match="may be valid until"):
        ca.finish_rotation()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=125)  # past the expiry rounded up to the minute
    assert later > expires
    monkeypatch.setattr(authority, "now", lambda: later)
    ca.finish_rotation()
    assert ca.phase == "idle" and len(ca.bundle()) == 1


def legacy_files(ca_dir: Path, *, state: dict[str, Any] | None) -> tuple[x509.Certificate, x509.Certificate]:
    """A CA directory as an earlier release left it (root, issuer, their keys, state.json when
    `state`, and with a rotation the next-* files): its (root, issuer)."""
    root, root_key = make_ca("Old Root", path_length=1)
    issuer, issuer_key = make_ca("Old Issuer", (root, root_key), path_length=0)
    place(
        ca_dir, root_pem=pem(root), root_key=key_pem(root_key), issuer_pem=pem(issuer), issuer_key=key_pem(issuer_key)
    )
    if state is not None:
        if state["phase"] != "idle":
            new, new_key = make_ca("New Root", path_length=1)
            new_issuer, new_issuer_key = make_ca("New Issuer", (new, new_key), path_length=0)
            place(ca_dir, next_root_pem=pem(new), next_root_key=key_pem(new_key), next_issuer_pem=pem(new_issuer),
                  next_issuer_key=key_pem(new_issuer_key))  # fmt: skip
        (ca_dir / "state.json").write_text(json.dumps(state))
    return root, issuer


def test_an_earlier_releases_rotation_is_imported_with_its_phase(tmp_path: Path) -> None:
    issued = {"sha256:" + "ab" * 32: "2030-01-01T00:00:00+00:00"}
    state = {"phase": "activated", "started_at": "2026-01-01T00:00:00+00:00", "activated_at": None,
             "bundle_generation": 7, "next_root_key": None, "issued": issued}  # fmt: skip
    root, issuer = legacy_files(tmp_path / "ca", state=state)
    ca = open_ca(tmp_path)
    assert ca.phase == "activated" and ca.root == root and ca.issuer == issuer and ca.next is not None
    assert ca.signing is ca.next and ca.state.issued == issued and ca.state.bundle_generation == 7
    assert not list((tmp_path / "ca").rglob("*.key")) and not (tmp_path / "ca" / "state.json").exists()
    (kept,) = (tmp_path / "ca" / "imported").iterdir()
    assert "state.json" in {p.name for p in kept.iterdir()}
    again = open_ca(tmp_path)  # imported once: the database's from now on
    assert (again.view.version, again.state, again.bundle()) == (ca.view.version, ca.state, ca.bundle())


def test_a_rotation_state_that_lost_its_new_root_refuses_to_start(tmp_path: Path) -> None:
    ca = open_ca(tmp_path)
    ca.start_rotation()
    engine = ca.engine
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM caauthority WHERE slot = 'next'"))
    with pytest.raises(CaError, match="a root rotation is bundled but its new root is missing from the database"):
        open_ca(tmp_path)


def test_svids_from_before_tracking_are_assumed_as_long_as_allowed(tmp_path: Path) -> None:
    legacy_files(tmp_path / "ca", state=None)  # an earlier release's, from before state.json
    ca = open_ca(tmp_path)
    ca.start_rotation()
    safe = ca.finish_safe_after()
    assert safe is not None and safe > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)


def test_recorded_expiries_are_written_at_most_once_a_minute(tmp_path: Path) -> None:
    ca = open_ca(tmp_path)
    version = ca.view.version
    _, first = ca.issue(csr(), expected=ME, ttl=dt.timedelta(seconds=60))
    ca.issue(csr(), expected=ME, ttl=dt.timedelta(seconds=59))  # ends before the recorded minute
    assert ca.view.version == version + 1  # one write
    ca.reload()
    recorded = dt.datetime.fromisoformat(ca.state.issued[fingerprint(ca.issuer)])
    assert first <= recorded < first + dt.timedelta(seconds=60) and recorded.second == 0


def test_a_refused_next_root_leaves_nothing_made_under_it(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    ca = open_ca(tmp_path)
    tight, tight_key = make_ca("Tight Root", path_length=0)
    place(ca_dir, next_root_pem=pem(tight), next_root_key=key_pem(tight_key))
    with pytest.raises(RotationRefused, match=r"path length: next-root\.pem has pathLenConstraint=0"):
        ca.start_rotation()
    assert ca.phase == "idle" and len(ca.bundle()) == 1
    assert {r.slot for r in rows(url_for(tmp_path))} == {"current"}
    assert not (ca_dir / "next-issuer.pem").exists() and not (ca_dir / "next-issuer.key").exists()
    fixed, fixed_key = make_ca("Roomier Root", path_length=1)
    place(ca_dir, next_root_pem=pem(fixed), next_root_key=key_pem(fixed_key))
    ca.start_rotation()
    assert ca.next is not None and ca.next.root == fixed and ca.next.issuer.issuer == fixed.subject
    assert not (ca_dir / "next-root.key").exists()  # taken into the database
