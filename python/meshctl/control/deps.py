"""Request dependencies as ``Annotated`` aliases: a database session, and
the caller's role from its bearer token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from meshctl.control.security import token_of

bearer = HTTPBearer(auto_error=False)


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session
        # A committed write bumped the generation: wake the sidecars watching.
        if (generation := session.info.get("generation")) is not None:
            request.app.state.hub.publish(generation)


SessionDep = Annotated[Session, Depends(get_session)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


@dataclass(frozen=True)
class Caller:
    role: str  # admin | reader | join
    #: For join tokens, the service ("namespace/name") they may act as.
    scope: str | None = None

    def may_act_as(self, service: str) -> bool:
        return self.role == "admin" or (self.role == "join" and self.scope == service)


def authenticate(request: Request, creds: Credentials) -> Caller:
    """Who is calling, from a session of its own: long-polls must not hold one while they wait."""
    with Session(request.app.state.engine) as session:
        token = token_of(session, creds.credentials) if creds else None
    if token is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Caller(token.role, token.scope)


AnyCaller = Annotated[Caller, Depends(authenticate)]


def require_reader(caller: AnyCaller) -> str:
    if caller.role not in ("admin", "reader"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"a {caller.role} token cannot read the mesh")
    return caller.role


def require_admin(caller: AnyCaller) -> str:
    if caller.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"a {caller.role} token cannot write")
    return caller.role


Reader = Annotated[str, Depends(require_reader)]
Admin = Annotated[str, Depends(require_admin)]
