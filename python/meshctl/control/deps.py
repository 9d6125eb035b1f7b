"""Request dependencies as ``Annotated`` aliases: a database session, and
the caller's role from its bearer token."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from meshctl.control.security import role_of

bearer = HTTPBearer(auto_error=False)


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _role(session: Session, creds: HTTPAuthorizationCredentials | None) -> str:
    role = role_of(session, creds.credentials) if creds else None
    if role is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return role


def require_reader(session: SessionDep, creds: Credentials) -> str:
    return _role(session, creds)


def require_admin(session: SessionDep, creds: Credentials) -> str:
    role = _role(session, creds)
    if role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"a {role} token cannot write")
    return role


Reader = Annotated[str, Depends(require_reader)]
Admin = Annotated[str, Depends(require_admin)]
