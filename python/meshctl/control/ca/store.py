"""The CA in the database, shared by every replica: one ``castate`` row (the
rotation phase, the latest expiry of each issuer's SVIDs, a version raised by
every write) and ``caauthority`` rows, one per slot: ``current``, ``next``
during a rotation, and ``retired:<time>:<fingerprint>`` for roots a rotation
finished with (certificates only, their keys dropped).

Keys are sealed (``sealing``) under the key-encryption key from a file that is
never in the database; each is bound to its slot, its kind and its
certificate. The state row's primary key is fixed (``id = 1``): of replicas
creating a CA at once, one insert wins, the others get an IntegrityError and
load the winner's.
"""

from __future__ import annotations

import sqlalchemy as sa
from cryptography import x509
from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, Session, SQLModel, col, select

from meshctl.control.ca.certs import Authority, fingerprint, pem
from meshctl.control.ca.errors import CaError
from meshctl.control.ca.files import PHASES, State, parse_key, private_pem
from meshctl.control.ca.sealing import Kek, aad

#: The slots a CA signs from; any other slot is a retired root's record.
CURRENT, NEXT = "current", "next"


class CaState(SQLModel, table=True):
    """The one row of CA state every replica reads (``id`` is always 1)."""

    id: int = Field(default=1, primary_key=True)
    #: Raised by every write: an SVID's expiry is recorded only if no step came between (compare-and-set).
    version: int = 1
    phase: str = Field(max_length=16)
    started_at: str | None = None
    activated_at: str | None = None
    bundle_generation: int | None = None
    #: Issuer fingerprint -> the latest expiry (ISO, rounded up) of an SVID it signed.
    issued: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: Which key-encryption key sealed the keys (``Kek.key_id``): a wrong file is named as such.
    kek_id: str = Field(max_length=64)


class CaAuthority(SQLModel, table=True):
    """A root and its issuer chain in one slot, with their keys sealed."""

    slot: str = Field(primary_key=True, max_length=96)
    root_fingerprint: str = Field(max_length=80)
    issuer_fingerprint: str = Field(max_length=80)
    root_pem: str = Field(sa_column=Column(Text, nullable=False))
    #: The issuer first, then any intermediates above it; never the root.
    chain_pem: str = Field(sa_column=Column(Text, nullable=False))
    #: Sealed; None when the operator kept the root's key, and for retired roots.
    root_key: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    #: Sealed; None for retired roots.
    issuer_key: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    #: When it took this slot (ISO).
    since: str = Field(max_length=40)


def state_of(row: CaState) -> State:
    return State(
        phase=row.phase,
        started_at=row.started_at,
        activated_at=row.activated_at,
        bundle_generation=row.bundle_generation,
        issued=dict(row.issued or {}),
    )


def read_state(session: Session, *, lock: bool = False) -> CaState | None:
    """The state row; `lock` holds it (FOR UPDATE on PostgreSQL) until the transaction ends, so that
    rotation steps on several replicas queue (SQLite serialises writers anyway)."""
    query = select(CaState).where(col(CaState.id) == 1).execution_options(populate_existing=True)
    row = session.exec(query.with_for_update() if lock else query).first()
    if row is not None and row.phase not in PHASES:
        raise CaError(f"the CA state in the database names an unknown rotation phase {row.phase!r}")
    return row


def write_state(session: Session, row: CaState, state: State) -> None:
    """`state` into the (locked) row, raising its version."""
    row.phase, row.started_at, row.activated_at = state.phase, state.started_at, state.activated_at
    row.bundle_generation, row.issued = state.bundle_generation, dict(state.issued)
    row.version += 1
    session.add(row)
    session.flush()


def version(session: Session) -> int | None:
    return session.exec(select(CaState.version).where(col(CaState.id) == 1)).first()


def record_expiry(session: Session, *, seen: int, issued: dict[str, str]) -> bool:
    """Write `issued` only if the state is still at version `seen` (compare-and-set); False when
    another writer came first."""
    done = session.execute(
        sa.update(CaState)
        .where(col(CaState.id) == 1, col(CaState.version) == seen)
        .values(issued=issued, version=seen + 1)
    )
    return int(done.rowcount) == 1  # type: ignore[attr-defined]


def slots(session: Session) -> dict[str, CaAuthority]:
    rows = session.exec(select(CaAuthority).where(col(CaAuthority.slot).in_((CURRENT, NEXT)))).all()
    return {r.slot: r for r in rows}


def put(session: Session, slot: str, authority: Authority, kek: Kek, *, since: str) -> None:
    """`authority` in `slot`, its keys sealed for that slot (replacing what was there)."""
    root_fp, issuer_fp = fingerprint(authority.root), authority.fingerprint
    row = session.get(CaAuthority, slot) or CaAuthority(
        slot=slot, root_fingerprint=root_fp, issuer_fingerprint=issuer_fp, root_pem="", chain_pem="", since=since
    )
    row.root_fingerprint, row.issuer_fingerprint, row.since = root_fp, issuer_fp, since
    row.root_pem, row.chain_pem = pem(authority.root), authority.chain_pem()
    row.issuer_key = kek.seal(private_pem(authority.key), aad(slot, "issuer", issuer_fp))
    rk = authority.root_key
    row.root_key = kek.seal(private_pem(rk), aad(slot, "root", root_fp)) if rk is not None else None
    session.add(row)
    session.flush()


def retire(session: Session, row: CaAuthority, slot: str) -> None:
    """Keep the certificates of a root a rotation finished with, under `slot`, without keys."""
    session.add(
        CaAuthority(
            slot=slot,
            root_fingerprint=row.root_fingerprint,
            issuer_fingerprint=row.issuer_fingerprint,
            root_pem=row.root_pem,
            chain_pem=row.chain_pem,
            since=row.since,
        )
    )
    session.delete(row)
    session.flush()


def authority_of(row: CaAuthority, kek: Kek) -> Authority:
    """The row's certificates and its keys opened; CaError naming the row when one does not open."""
    what = f"the {row.slot} CA"
    try:
        root = x509.load_pem_x509_certificate(row.root_pem.encode())
        chain = tuple(x509.load_pem_x509_certificates(row.chain_pem.encode()))
    except ValueError:
        raise CaError(f"{what}'s certificates in the database are not PEM") from None
    if row.issuer_key is None or not chain:
        raise CaError(f"{what} in the database has no issuer key")
    if fingerprint(root) != row.root_fingerprint or fingerprint(chain[0]) != row.issuer_fingerprint:
        raise CaError(f"{what}'s certificates in the database do not match their recorded fingerprints")
    opened = kek.open(row.issuer_key, aad(row.slot, "issuer", row.issuer_fingerprint), what=f"{what}'s issuer key")
    key = parse_key(opened.encode(), f"{what}'s issuer key")
    root_key = None
    if row.root_key is not None:
        opened = kek.open(row.root_key, aad(row.slot, "root", row.root_fingerprint), what=f"{what}'s root key")
        root_key = parse_key(opened.encode(), f"{what}'s root key")
    return Authority(root, chain, key, root_key)


def insert(session: Session, state: State, kek: Kek, authorities: dict[str, Authority], *, since: str) -> None:
    """A new CA: the state row first (where replicas made at once collide), then its slots."""
    session.add(
        CaState(
            id=1,
            phase=state.phase,
            started_at=state.started_at,
            activated_at=state.activated_at,
            bundle_generation=state.bundle_generation,
            issued=dict(state.issued),
            kek_id=kek.key_id,
        )
    )
    session.flush()
    for slot, authority in authorities.items():
        put(session, slot, authority, kek, since=since)
