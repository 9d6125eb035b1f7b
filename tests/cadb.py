"""The CA in a database, for tests: an in-process `CertificateAuthority` on a
real database (an SQLite file in the data dir, or a PostgreSQL database of its
own in the suite's PostgreSQL pass), and what a control plane's database holds
(rows, and the keys opened with the data dir's key-encryption key, so that
tests can check they never show)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

import pg
from meshctl.control.ca import CertificateAuthority, store
from meshctl.control.ca.files import private_pem
from meshctl.control.ca.sealing import load_kek
from meshctl.control.db import make_engine, migrate

_urls: dict[Path, str] = {}


def url_for(data_dir: Path) -> str:
    """The database of `data_dir` (the same one each time)."""
    if data_dir not in _urls:
        _urls[data_dir] = pg.database("ca") if pg.on_postgres() else f"sqlite:///{data_dir / 'mesh.db'}"
    return _urls[data_dir]


def open_ca(data_dir: Path, trust_domain: str = "cluster.local", *, url: str | None = None) -> CertificateAuthority:
    """The CA a control plane with this data dir would open (made or imported on first use)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    url = url or url_for(data_dir)
    migrate(url)
    return CertificateAuthority.open(
        make_engine(url), trust_domain, kek_file=data_dir / "ca-kek", import_dir=data_dir / "ca"
    )


def database_of(cp: Any) -> str:
    """A `meshproc.ControlPlane`'s database URL."""
    return str(cp.database_url or f"sqlite:///{cp.data_dir / 'mesh.db'}")


def rows(url: str) -> list[store.CaAuthority]:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            found = list(session.exec(select(store.CaAuthority)).all())
            session.expunge_all()
            return found
    finally:
        engine.dispose()


def scalar(url: str, sql: str) -> Any:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    finally:
        engine.dispose()


def key_lines(url: str, kek_file: Path) -> list[str]:
    """A line from the middle of every private key the database holds (opened with the KEK)."""
    kek = load_kek(kek_file, create=False)
    out = []
    for row in rows(url):
        if row.slot in (store.CURRENT, store.NEXT):
            authority = store.authority_of(row, kek)
            keys = [authority.key] + ([authority.root_key] if authority.root_key is not None else [])
            out += [private_pem(k).splitlines()[1] for k in keys]
    return out
