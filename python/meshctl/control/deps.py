"""Request dependencies as ``Annotated`` aliases: a database session, the
caller's role from its bearer token, and the objects the app's lifespan made
(settings, CA, watch hub, engine, token cache, tap sessions). This module is the only
reader of ``app.state``: routers take these aliases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Session

from meshctl.control import instances
from meshctl.control.ca import CertificateAuthority
from meshctl.control.crud import Authorship
from meshctl.control.kinds.common import now
from meshctl.control.metrics import Metrics
from meshctl.control.push import Hub
from meshctl.control.security import token_of
from meshctl.control.settings import Settings
from meshctl.control.stats.store import StatsStore
from meshctl.control.tap import Taps

bearer = HTTPBearer(auto_error=False)


# === the database session ===

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


# === the caller ===


@dataclass(frozen=True)
class Caller:
    role: str  # admin | reader | join
    #: For join tokens, the service ("namespace/name") they may act as.
    scope: str | None = None
    #: Who this is in the revision log: the token's name (`ApiToken.name`); without one, the
    #: role ("admin", "reader": the bootstrap tokens) or "join:<service>".
    name: str = ""
    #: The token's row (`ApiToken.id`): a sidecar records the one it registered with.
    id: int | None = None
    #: When its join token expired (None: it has not). As kubeadm's, a join token's expiry limits
    #: joining: the sidecars that registered with it (`Sidecar.token_id`) keep acting with it
    #: (heartbeats, config, SVIDs, restarts of the same instance) until it is revoked (deleted);
    #: nothing else does. Expired admin and reader tokens are refused outright.
    expired_at: datetime | None = None

    @property
    def joined_only(self) -> bool:
        """An expired join token: it serves only the sidecars that joined with it."""
        return self.expired_at is not None

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"join:{self.scope}" if self.role == "join" else self.role)

    def may_act_as(self, service: str) -> bool:
        """May join (or act for any sidecar of) `service`: never with an expired join token."""
        return not self.joined_only and (self.role == "admin" or (self.role == "join" and self.scope == service))

    def may_act_for(self, service: str, token_id: int | None) -> bool:
        """May act for a sidecar of `service` that registered with the token `token_id`."""
        if self.joined_only:
            return self.id is not None and self.id == token_id and self.scope == service
        return self.may_act_as(service)

    def expired(self) -> HTTPException:
        """The 401 for an expired join token asked for more than its sidecars may do."""
        at = f"{self.expired_at:%Y-%m-%d %H:%M:%S} UTC" if self.expired_at else "some time"
        return HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"join token expired at {at}: make a new one with meshctl token create "
            "(an expired join token serves only the sidecars that joined with it)",
            headers={"WWW-Authenticate": "Bearer"},
        )


class TokenCache(dict[str, tuple[Caller | None, float]]):
    """Token checks remembered: token -> (the caller, or None for an unknown token; until when,
    monotonic). Cleared when a token is revoked or made, here or (announced) on another replica;
    `epoch` counts the clears, so that a check read before one is not remembered after it."""

    epoch = 0

    def __init__(self) -> None:
        super().__init__()
        #: token -> its lookup in flight: when a check expires under a fleet's burst of requests
        #: (every sidecar ACKing a change), they all wait for one lookup, not one each.
        self.pending: dict[str, asyncio.Future[Caller | None]] = {}

    def clear(self) -> None:
        self.epoch += 1
        self.pending.clear()
        super().clear()

    async def caller(self, engine: Engine, token: str) -> Caller | None:
        """Who `token` is (see `_lookup`): remembered, or read from the database."""
        hit = self.get(token)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        pending = self.pending.get(token)
        if pending is None:
            pending = self.pending[token] = asyncio.ensure_future(self._look_up(engine, token))
        return await asyncio.shield(pending)

    async def _look_up(self, engine: Engine, token: str) -> Caller | None:
        epoch = self.epoch
        try:
            caller, valid_for = await run_in_threadpool(_lookup, engine, token)
        finally:
            if self.epoch == epoch:  # (after a clear, a newer lookup may be pending: leave it)
                self.pending.pop(token, None)
        if self.epoch == epoch:  # (a revocation meanwhile: this answer may be from before it)
            if len(self) > 10_000:
                super().clear()
            self[token] = (caller, time.monotonic() + valid_for)
        return caller


#: How long a token check is remembered: thousands of long-polls need not each read the database.
#: Replicas on PostgreSQL forget it when a token is revoked anywhere (announced: control/notify.py);
#: otherwise a token revoked through another server stops working within this time. An expiring
#: one is remembered only until it expires.
TOKEN_CACHE_SECONDS = 5.0


def _lookup(engine: Engine, token: str) -> tuple[Caller | None, float]:
    """Who the token is (None: unknown, or an expired admin or reader token; an expired join token
    is a `Caller.joined_only`), and for how many seconds that holds: a live token's check never
    outlives its expiry, so the check after it says expired."""
    with Session(engine) as session:  # its own: long-polls must not hold one
        row = token_of(session, token)
    if row is None:
        return None, TOKEN_CACHE_SECONDS
    caller = Caller(row.role, row.scope, name=row.name or "", id=row.id)
    left = TOKEN_CACHE_SECONDS
    if row.expires_at is not None:
        left = min(left, (row.expires_at - now()).total_seconds())
        if left <= 0:
            if row.role != "join":
                return None, TOKEN_CACHE_SECONDS
            caller = replace(caller, expired_at=row.expires_at)
            left = TOKEN_CACHE_SECONDS
    return caller, left


async def authenticate(request: Request, creds: Credentials) -> Caller:
    """Who is calling (401 when nobody we know)."""
    caller = None
    if creds:
        cache: TokenCache = request.app.state.token_cache
        caller = await cache.caller(request.app.state.engine, creds.credentials)
    if caller is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller


AnyCaller = Annotated[Caller, Depends(authenticate)]


def _has_joined(engine: Engine, token_id: int | None) -> bool:
    with Session(engine) as session:
        return token_id is not None and instances.joined_with(session, token_id=token_id)


async def require_member(request: Request, caller: AnyCaller) -> Caller:
    """Any valid caller; an expired join token only while a sidecar that joined with it is still
    recorded (an instance restarting asks for its bundle and SVID, and sends spans)."""
    if caller.joined_only and not await run_in_threadpool(_has_joined, request.app.state.engine, caller.id):
        raise caller.expired()
    return caller


#: For what a sidecar needs besides its own row (the trust bundle, its SVID, spans): see `require_member`.
MemberCaller = Annotated[Caller, Depends(require_member)]


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


def require_writer(
    caller: AnyCaller,
    message: Annotated[
        str | None, Query(max_length=500, description="Why: kept with the revision this write records.")
    ] = None,
) -> Authorship:
    """An admin's write, with who makes it and why for the revision log (see `crud.Authorship`)."""
    require_admin(caller)
    return Authorship(author=caller.name, message=message or None)


#: For the writes that record a revision: the caller must be an admin; takes `?message=`.
Writer = Annotated[Authorship, Depends(require_writer)]


# === what the app's lifespan made (see app.create_app) ===
# Async, so that FastAPI calls them on the event loop rather than in a worker thread.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_ca(request: Request) -> CertificateAuthority:
    ca: CertificateAuthority = request.app.state.ca
    return ca


async def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_stats(request: Request) -> StatsStore:
    stats: StatsStore = request.app.state.stats
    return stats


async def get_taps(request: Request) -> Taps:
    taps: Taps = request.app.state.taps
    return taps


async def get_token_cache(request: Request) -> TokenCache:
    cache: TokenCache = request.app.state.token_cache
    return cache


SettingsDep = Annotated[Settings, Depends(get_settings)]
CaDep = Annotated[CertificateAuthority, Depends(get_ca)]
HubDep = Annotated[Hub, Depends(get_hub)]
#: For work in a thread that needs its own short session (long-polls must not hold a request's).
EngineDep = Annotated[Engine, Depends(get_engine)]
TokenCacheDep = Annotated[TokenCache, Depends(get_token_cache)]
TapsDep = Annotated[Taps, Depends(get_taps)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
StatsDep = Annotated[StatsStore, Depends(get_stats)]
