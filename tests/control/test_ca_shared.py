"""The CA shared by control-plane replicas on one PostgreSQL database: one root
and one issuer whichever replica signs, a rotation step on one seen by the
others at once, keys sealed under a key-encryption key file the database never
holds (a missing or wrong one refuses to start), an earlier release's file CA
imported once, and simultaneous first starts making one CA. Real processes,
a real PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from cryptography import x509

import pg
from cadb import key_lines, open_ca, rows, scalar
from helpers import unused_port, wait_until
from meshctl.control.ca import CaError, CertificateAuthority, RotationRefused
from meshctl.control.db import make_engine, migrate
from meshctl.trust import ca_pin
from meshproc import ControlPlane, service
from test_ca import ME, csr, key_pem, make_ca, pem, place, roots_of, verifies


def svid_chain(cp: ControlPlane) -> list[x509.Certificate]:
    r = httpx.post(
        f"{cp.url}/api/v1/identity/svid",
        json={"csr": csr(), "ttl_seconds": 60},
        headers={"Authorization": f"Bearer {cp.join_token('pricing')}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return x509.load_pem_x509_certificates(r.json()["certificate_chain"].encode())


def bundle(cp: ControlPlane) -> list[x509.Certificate]:
    return roots_of(cp.ok("GET", "/api/v1/identity/bundle"))


def phase(cp: ControlPlane) -> str:
    return str(cp.ok("GET", "/api/v1/identity/rotation")["phase"])


def within(seconds: float, condition: object, what: str) -> float:
    """How long `condition` took to hold, asserting it did within `seconds`."""
    start = time.monotonic()
    wait_until(condition, timeout=seconds, what=what)  # type: ignore[arg-type]
    return time.monotonic() - start


def join(first: Path, data_dir: Path) -> Path:
    """A second replica's data dir: a copy of the first's KEK (as a secret would be given) and of
    the API tokens the first made (the database keeps their hashes; tests read the files)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for f in [first / "ca-kek", *first.glob("*.token")]:
        shutil.copy(f, data_dir / f.name)
    return data_dir


def new_kek(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    return path


def start_refused(data_dir: Path, url: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "meshctl", "control-plane", "--data-dir", str(data_dir), "--port", str(unused_port()),
         "--database-url", url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" not in text and "PRIVATE KEY" not in text, text
    return text


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[ControlPlane]]:
    """Three replicas on one database: the first makes the CA and its KEK, the others get copies."""
    url = pg.database("cashared")
    first = ControlPlane(tmp_path / "a", database_url=url)
    (tmp_path / "a").mkdir()
    first.start()
    planes = [first]
    try:
        for name in ("b", "c"):
            planes.append(ControlPlane(join(tmp_path / "a", tmp_path / name), database_url=url).start())
        first.apply(service("pricing"))
        yield planes
    finally:
        for p in planes:
            p.stop()


def test_every_replica_issues_from_one_ca_and_sees_a_rotation_at_once(replicas: list[ControlPlane]) -> None:
    a, b, c = replicas
    (root,) = bundle(a)
    assert bundle(b) == bundle(c) == [root]
    chains = [svid_chain(p) for p in replicas]
    assert all(verifies(chain, [root]) for chain in chains)
    assert chains[0][1] == chains[1][1] == chains[2][1]  # one issuer

    # A sidecar watching B gets the new bundle with the generation A's step raised.
    token = a.join_token("pricing")
    body = {"service": "pricing", "address": "127.0.0.1", "inbound_port": unused_port(), "app_port": 1}
    auth = {"Authorization": f"Bearer {token}"}
    sidecar = httpx.put(f"{b.url}/api/v1/sidecars", json={**body, "ttl_seconds": 300}, headers=auth, timeout=10)
    assert sidecar.status_code == 200, sidecar.text
    watch = f"{b.url}/api/v1/sidecars/{sidecar.json()['id']}/snapshot"
    version = httpx.get(watch, headers=auth, timeout=10).json()["version"]

    started = a.call("POST", "/api/v1/identity/rotation")
    assert started.status_code == 200, started.text
    took = within(1.0, lambda: phase(b) == "bundled" and len(bundle(c)) == 2, "B and C to see the rotation")
    assert took < 1.0
    assert bundle(b) == bundle(a) == bundle(c) and bundle(b)[0] == root
    generation = started.json()["bundle_generation"]
    snap = httpx.get(watch, params={"version": version, "wait": 10}, headers=auth, timeout=15).json()
    assert snap["version"] >= generation
    assert snap["config"]["identity"]["roots"].count("BEGIN CERTIFICATE") == 2

    # Activated on B (no live sidecar left behind: forced, the sidecar above never ACKs): C signs
    # from the new issuer at once, whatever it had in memory.
    assert b.call("POST", "/api/v1/identity/rotation/activate", params={"force": "true"}).status_code == 200
    new = bundle(c)[1]
    after = svid_chain(c)
    assert verifies(after, [new]) and not verifies(after, [root])
    assert verifies(svid_chain(a), [new])

    # The old issuer signed SVIDs (recorded by whichever replica signed): finishing waits, on every replica.
    refused = c.call("POST", "/api/v1/identity/rotation/finish")
    assert refused.status_code == 409 and "may be valid until" in refused.json()["detail"], refused.text
    assert c.call("POST", "/api/v1/identity/rotation/finish", params={"force": "true"}).status_code == 200
    within(1.0, lambda: bundle(a) == [new] and phase(a) == "idle", "A to see the rotation finished")


def test_a_step_on_another_replica_never_straddles_signing(tmp_path: Path) -> None:
    """Two replicas in process: A's view is stale when B activates, yet A signs from the new issuer
    (its record of the expiry fails its compare-and-set, it reloads and signs again); what A signed
    before is recorded, so B's finish waits for it."""
    url = pg.database("castep")
    a, b = open_ca(tmp_path, url=url), open_ca(tmp_path, url=url)
    old = a.issue(csr(), expected=ME, ttl=dt.timedelta(seconds=60))[0]
    b.start_rotation()
    b.activate_rotation()
    assert a.phase == "idle"  # no announcement reached it (none is listened for here)
    chain = x509.load_pem_x509_certificates(a.issue(csr(), expected=ME, ttl=dt.timedelta(seconds=60))[0].encode())
    assert chain[1] == b.signing.issuer != x509.load_pem_x509_certificates(old.encode())[1]
    assert a.phase == "activated"
    with pytest.raises(RotationRefused, match="may be valid until"):
        b.finish_rotation()


def test_one_pin_trusts_every_replicas_serving_certificate(tmp_path: Path) -> None:
    url = pg.database("capin")
    a = ControlPlane(tmp_path / "a", database_url=url, args=("--tls",), scheme="https")
    (tmp_path / "a").mkdir()
    a.start()
    try:
        b = ControlPlane(join(tmp_path / "a", tmp_path / "b"), database_url=url, args=("--tls",), scheme="https")
        b.verify = str(tmp_path / "a" / "tls" / "ca.pem")  # A's CA file trusts B
        b.start()
        try:
            docs = [httpx.get(f"{p.url}/api/v1/ca/serving", verify=p._verify, timeout=10).json() for p in (a, b)]
            assert docs[0]["ca_hash"] == docs[1]["ca_hash"] == ca_pin((tmp_path / "a" / "tls" / "ca.pem").read_text())
            leaves = [
                x509.load_pem_x509_certificates((p.data_dir / "tls" / "serving.pem").read_bytes()) for p in (a, b)
            ]
            assert leaves[0][0] != leaves[1][0] and leaves[0][1:] == leaves[1][1:]  # own leaves, one issuer
        finally:
            b.stop()
    finally:
        a.stop()


def test_a_missing_or_wrong_kek_refuses_to_start(tmp_path: Path) -> None:
    url = pg.database("cakek")
    open_ca(tmp_path / "first", url=url)
    kek = (tmp_path / "first" / "ca-kek").read_text().strip()

    missing = start_refused(tmp_path / "second", url)
    assert f"the CA key-encryption key {tmp_path / 'second' / 'ca-kek'} is missing" in missing, missing
    assert "copy the file from the replica that made the CA" in missing
    assert not (tmp_path / "second" / "ca-kek").exists()  # not made: there is a CA already

    other = new_kek(tmp_path / "third" / "ca-kek")
    wrong = start_refused(tmp_path / "third", url)
    assert f"the CA key-encryption key in {other} is not the one the CA in the database was sealed with" in wrong
    assert kek not in wrong and other.read_text().strip() not in wrong

    loose = tmp_path / "fourth" / "ca-kek"
    loose.parent.mkdir()
    shutil.copy(tmp_path / "first" / "ca-kek", loose)
    loose.chmod(0o644)
    assert "may be read by group or others: chmod 600 it" in start_refused(tmp_path / "fourth", url)


def test_keys_are_sealed_and_bound_to_their_role(tmp_path: Path) -> None:
    url = pg.database("caseal")
    ca = open_ca(tmp_path, url=url)
    ca.start_rotation()
    secrets = key_lines(url, tmp_path / "ca-kek")
    assert len(secrets) == 4  # root and issuer, current and next
    dump = pg.server().psql("SELECT * FROM caauthority", url.rsplit("/", 1)[1])
    assert "PRIVATE KEY" not in dump and not any(s in dump for s in secrets)
    for row in rows(url):
        assert row.issuer_key is not None and row.issuer_key.startswith("v1:")
        assert row.root_key is not None and row.root_key.startswith("v1:")
    # The next issuer's ciphertext moved into the current row: it does not open there.
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE caauthority SET issuer_key = (SELECT issuer_key FROM caauthority WHERE slot = 'next') "
                "WHERE slot = 'current'"
            )
        )
    engine.dispose()
    with pytest.raises(CaError, match="the current CA's issuer key in the database does not open under") as e:
        open_ca(tmp_path, url=url)
    assert "PRIVATE" not in str(e.value)


def test_a_file_ca_is_imported_once_and_shared(tmp_path: Path) -> None:
    url = pg.database("caimport")
    root, root_key = make_ca("Earlier Root", path_length=1)
    issuer, issuer_key = make_ca("Earlier Issuer", (root, root_key), path_length=0)
    ca_dir = place(
        tmp_path / "a" / "ca",
        root_pem=pem(root),
        root_key=key_pem(root_key),
        issuer_pem=pem(issuer),
        issuer_key=key_pem(issuer_key),
    )
    (ca_dir / "state.json").write_text('{"phase": "idle", "issued": {}}')
    a = ControlPlane(tmp_path / "a", database_url=url).start()
    try:
        a.apply(service("pricing"))
        assert bundle(a) == [root]
        chain = svid_chain(a)
        assert chain[1] == issuer and verifies(chain, [root])
        assert not list(ca_dir.rglob("*.key")) and not (ca_dir / "state.json").exists()
        (kept,) = (ca_dir / "imported").iterdir()
        assert sorted(p.name for p in kept.iterdir()) == ["issuer.pem", "root.pem", "state.json"]
        assert "imported the CA files" in a.log.read_text()
        b = ControlPlane(join(tmp_path / "a", tmp_path / "b"), database_url=url).start()
        try:
            assert bundle(b) == [root] and svid_chain(b)[1] == issuer
        finally:
            b.stop()
        a.stop()
        a.start()  # the files are gone; the database has it
        assert bundle(a) == [root]
    finally:
        a.stop()
    assert scalar(url, "SELECT count(*) FROM caauthority") == 1


def test_replicas_starting_at_once_make_one_ca(tmp_path: Path) -> None:
    url = pg.database("carace")
    migrate(url)  # the race under test is the CA's, not the migrations'
    kek = new_kek(tmp_path / "kek")
    planes = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        shutil.copy(kek, tmp_path / name / "ca-kek")
        planes.append(ControlPlane(tmp_path / name, database_url=url))
    errors: list[BaseException] = []

    def start(p: ControlPlane) -> None:
        try:
            try:
                p.start()
            except AssertionError:  # three starting at once on a busy machine: give them longer
                wait_until(p.healthy, timeout=90, what=f"{p.data_dir.name} to serve")
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(p,)) for p in planes]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert scalar(url, "SELECT count(*) FROM castate") == 1
        assert scalar(url, "SELECT count(*) FROM caauthority") == 1
        reader = next(p for p in planes if (p.data_dir / "reader.token").exists()).reader  # made by one of them
        roots = [
            httpx.get(f"{p.url}/api/v1/identity/bundle", headers=reader, timeout=10).json()["roots"] for p in planes
        ]
        assert roots[0] == roots[1] == roots[2]
        made = [p for p in planes if "made the CA in the database" in p.log.read_text()]
        assert len(made) == 1
    finally:
        for p in planes:
            p.stop()


def test_concurrent_first_opens_in_process_make_one_ca(tmp_path: Path) -> None:
    url = pg.database("caopen")
    migrate(url)
    kek = new_kek(tmp_path / "ca-kek")
    opened: list[str] = []

    def one() -> None:  # (migrated above: alembic's context is not for threads)
        ca = CertificateAuthority.open(make_engine(url), "cluster.local", kek_file=kek, import_dir=tmp_path / "ca")
        opened.append(ca.bundle()[0])

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(opened) == 6 and len(set(opened)) == 1
    assert kek.exists() and scalar(url, "SELECT count(*) FROM caauthority") == 1
