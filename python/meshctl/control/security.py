"""API tokens: created on first start (admin and read-only), kept in 0600
files in the data dir, stored in the database only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from pathlib import Path

from sqlmodel import Session, select

from meshctl.control import notify
from meshctl.control.models import ApiToken
from meshctl.secretfile import write_secret

ROLES = ("admin", "reader")  # made on first start; join tokens are issued per service


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bootstrap_tokens(session: Session, data_dir: Path) -> dict[str, Path]:
    """On first start, make one token per role; returns the files written (empty afterwards)."""
    if session.exec(select(ApiToken)).first() is not None:
        return {}
    written = {}
    for role in ROLES:
        token = f"mesh-{role}-{secrets.token_urlsafe(32)}"
        session.add(ApiToken(role=role, token_sha256=digest(token)))
        path = data_dir / f"{role}.token"
        write_secret(path, token)
        written[role] = path
    session.commit()
    return written


def token_of(session: Session, token: str) -> ApiToken | None:
    return session.exec(select(ApiToken).where(ApiToken.token_sha256 == digest(token))).first()


def issue_token(
    session: Session,
    *,
    role: str,
    scope: str | None = None,
    name: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """A new token: (its stored row, the token itself, which is not kept). A join token's `scope`
    is the one service ("namespace/name") its sidecars may join as; see `tokens` for the rules."""
    token = f"mesh-{role}-{secrets.token_urlsafe(32)}"
    row = ApiToken(role=role, scope=scope, name=name, expires_at=expires_at, token_sha256=digest(token))
    session.add(row)
    notify.announce(session, "tokens")  # replicas that remembered it as unknown forget that
    session.commit()
    session.refresh(row)
    return row, token


def join_tokens(session: Session, *, service: str) -> list[ApiToken]:
    return list(session.exec(select(ApiToken).where(ApiToken.role == "join", ApiToken.scope == service)).all())
