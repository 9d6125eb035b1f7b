"""Request dependencies as ``Annotated`` aliases: a database session, and
the caller's role from its bearer token."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from meshctl.control.security import token_of

bearer = HTTPBearer(auto_error=False)


#: Requests holding a session at once; below the connection pool's size (see db.make_engine).
SESSION_SLOTS = 16


async def get_session(request: Request) -> AsyncIterator[Session]:
    # A request keeps its connection until its response is serialized, which for sync handlers
    # needs a worker thread. Unbounded, requests waiting for a thread could hold every pooled
    # connection while every thread waits for one: a deadlock. So requests queue for a slot on
    # the event loop (no thread held) and there are fewer slots than connections.
    async with request.app.state.session_slots:
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


#: How long a token check is remembered: thousands of long-polls need not each read the database.
#: A revoked token stops working within this time.
TOKEN_CACHE_SECONDS = 5.0


def _lookup(request: Request, token: str) -> Caller | None:
    with Session(request.app.state.engine) as session:  # its own: long-polls must not hold one
        row = token_of(session, token)
    return Caller(row.role, row.scope) if row else None


async def authenticate(request: Request, creds: Credentials) -> Caller:
    """Who is calling (401 when nobody we know)."""
    caller = None
    if creds:
        cache: dict[str, tuple[Caller | None, float]] = request.app.state.token_cache
        now = time.monotonic()
        hit = cache.get(creds.credentials)
        if hit is not None and hit[1] > now:
            caller = hit[0]
        else:
            caller = await run_in_threadpool(_lookup, request, creds.credentials)
            if len(cache) > 10_000:
                cache.clear()
            cache[creds.credentials] = (caller, now + TOKEN_CACHE_SECONDS)
    if caller is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller


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
