"""The API tokens' lifecycle: create (with a name and an expiry), list, revoke.

An expired admin or reader token is refused (``deps.authenticate``). A join
token's expiry limits joining, as kubeadm's does: once expired it joins no new
sidecar, but the sidecars that registered with it keep using it (heartbeats,
config, SVID renewal, restarts of the same instance) until it is revoked. A
revoked token's row is deleted: nothing accepts it any more. Rotation is creating the successor, switching to it,
then revoking the old one. Revoking the last live admin token is refused, so
that nobody locks themselves out of the API. The hashing and the tokens made
on first start are in ``security``."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, exists
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, or_, select

from meshctl.control import crud, notify
from meshctl.control.errors import Conflict, Invalid
from meshctl.control.kinds.common import now
from meshctl.control.kinds.service import Service
from meshctl.control.models import ApiToken, TokenCreate, TokenInfo
from meshctl.control.security import issue_token

#: A join token's life when none is asked for: long enough to start a fleet's sidecars, short
#: enough that a leaked one soon joins nothing. The sidecars that joined with it keep working
#: after it expires; revoking it is what stops them.
JOIN_DEFAULT = timedelta(hours=24)


class LastAdmin(Conflict):
    """Revoking this token would leave no live admin token (a 409)."""


def live(row: ApiToken, at: datetime | None = None) -> bool:
    return row.expires_at is None or row.expires_at > (at or now())


def expiry(role: str, expires_in_seconds: int | None) -> datetime | None:
    """When a new token of `role` expires: None (the role's default) is 24 h for a join token and
    never for the others; 0 is never."""
    if expires_in_seconds is None:
        return now() + JOIN_DEFAULT if role == "join" else None
    return now() + timedelta(seconds=expires_in_seconds) if expires_in_seconds else None


def create(session: Session, *, data: TokenCreate) -> tuple[ApiToken, str]:
    """A new token (the row, the token shown this once). A join token names an existing service;
    the others name none (422 naming `body.service` otherwise)."""
    if data.role == "join":
        if data.service is None:
            raise Invalid([{"loc": ["body", "service"], "msg": "a join token needs a service", "type": "missing"}])
        namespace, name = data.service.split("/", 1)
        if crud.get(session, Service, namespace=namespace, name=name) is None:
            msg = f"service {data.service} does not exist"
            raise Invalid([{"loc": ["body", "service"], "msg": msg, "type": "reference"}])
    elif data.service is not None:
        msg = f"only a join token has a service, not a {data.role} token"
        raise Invalid([{"loc": ["body", "service"], "msg": msg, "type": "value_error"}])
    return issue_token(
        session,
        role=data.role,
        scope=data.service,
        name=data.name,
        expires_at=expiry(data.role, data.expires_in_seconds),
    )


def info(row: ApiToken, at: datetime | None = None) -> TokenInfo:
    assert row.id is not None
    return TokenInfo(
        id=row.id,
        name=row.name,
        role=row.role,
        service=row.scope,
        created_at=row.created_at,
        expires_at=row.expires_at,
        expired=not live(row, at),
    )


def list_tokens(session: Session, *, role: str | None = None, service: str | None = None) -> list[ApiToken]:
    query = select(ApiToken).order_by(col(ApiToken.id))
    if role is not None:
        query = query.where(ApiToken.role == role)
    if service is not None:
        query = query.where(ApiToken.scope == service)
    return list(session.exec(query).all())


def existing(session: Session, ids: set[int]) -> dict[int, ApiToken]:
    """The tokens of these ids that still exist (the others were revoked), by id: one query."""
    if not ids:
        return {}
    rows = session.exec(select(ApiToken).where(col(ApiToken.id).in_(ids))).all()
    return {row.id: row for row in rows if row.id is not None}


def states(session: Session, ids: set[int]) -> dict[int, bool]:
    """Which of these tokens still exist (the others were revoked), each with whether it has expired."""
    at = now()
    return {token_id: not live(row, at) for token_id, row in existing(session, ids).items()}


def revoke(session: Session, *, token_id: int, role: str | None = None, service: str | None = None) -> bool:
    """Delete the token (False: no such token, or not of this `role` and `service` when given).
    Raises LastAdmin rather than delete the last live admin token: one statement checks and
    deletes, so two admins revoking each other's token at once cannot both succeed."""
    other = aliased(ApiToken)
    another_admin = exists().where(
        col(other.role) == "admin",
        col(other.id) != token_id,
        or_(col(other.expires_at).is_(None), col(other.expires_at) > now()),
    )
    stmt = delete(ApiToken).where(
        col(ApiToken.id) == token_id,
        or_(col(ApiToken.role) != "admin", another_admin),
    )
    if role is not None:
        stmt = stmt.where(col(ApiToken.role) == role)
    if service is not None:
        stmt = stmt.where(col(ApiToken.scope) == service)
    deleted = session.exec(stmt).rowcount
    if deleted:
        notify.announce(session, "tokens")  # every replica forgets its token checks
    session.commit()
    if deleted:
        return True
    row = session.get(ApiToken, token_id)
    if row is None or (role is not None and row.role != role) or (service is not None and row.scope != service):
        return False
    raise LastAdmin(f"token {token_id} is the last live admin token; create another admin token before revoking it")
