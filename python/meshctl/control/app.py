"""The FastAPI app factory: migrations run and tokens are made before the
first request is served."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlmodel import Session

from meshctl import __version__
from meshctl.control import error_responses, errors
from meshctl.control.ackpath import AckPath
from meshctl.control.ca import CertificateAuthority
from meshctl.control.db import make_engine, migrate
from meshctl.control.deps import SESSION_SLOTS, TokenCache
from meshctl.control.limits import BodyLimit
from meshctl.control.metrics import Metrics, RequestMetrics
from meshctl.control.notify import Listener
from meshctl.control.proxy_config import ConfigDumps
from meshctl.control.push import Hub
from meshctl.control.routers import (
    apply,
    check,
    endpoints,
    health,
    identity,
    prometheus,
    proxy_config,
    revisions,
    services,
    serving_ca,
    sidecars,
    specs,
    stats,
    tap,
    tokens,
    traces,
    ui,
    version,
)
from meshctl.control.security import bootstrap_tokens
from meshctl.control.settings import Settings, get_settings
from meshctl.control.stats.store import StatsStore
from meshctl.control.tap import Taps

log = logging.getLogger("meshctl.control")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate(settings.db_url)
        app.state.engine = make_engine(settings.db_url)
        # Before anything reads state that another replica may change: what it announces from
        # here on is heard (see control/notify.py).
        app.state.listener = Listener(settings.db_url)
        await asyncio.to_thread(app.state.listener.start)
        with Session(app.state.engine) as session:
            for role, path in bootstrap_tokens(session, settings.data_dir).items():
                # The path, never the token: secrets stay out of logs.
                log.info("created the %s API token in %s (mode 0600)", role, path)
        app.state.settings = settings
        app.state.ca = CertificateAuthority.open(
            app.state.engine, settings.trust_domain, kek_file=settings.kek_path, import_dir=settings.data_dir / "ca"
        )
        app.state.listener.on("ca", app.state.ca.on_announcement)  # a rotation step on another replica
        app.state.session_slots = asyncio.Semaphore(SESSION_SLOTS)
        app.state.stats = StatsStore()  # the live views' numbers, fed by heartbeats
        app.state.token_cache = TokenCache()
        # A token revoked through any replica: forget every check (the next ones read the database).
        app.state.listener.on("tokens", lambda _: app.state.token_cache.clear())
        app.state.taps = Taps(app.state.engine, app.state.listener)  # meshctl tap, any replica
        app.state.dumps = ConfigDumps(app.state.engine, app.state.listener)  # meshctl proxy-config, any replica
        app.state.hub = Hub(
            app.state.engine,
            settings.generation_poll_seconds,
            listener=app.state.listener,
            trust_domain=settings.trust_domain,
            authz_default=settings.authz_default,
            outbound_policy=settings.outbound_policy,
            bundle=app.state.ca.synced_bundle,
            metrics=metrics,
        )
        # What startup made lives as long as the process: keep it out of the collector's full
        # passes, which would otherwise stall config pushes now and then.
        gc.collect()
        gc.freeze()
        yield
        app.state.taps.stop()
        app.state.dumps.stop()
        await app.state.hub.close()
        await asyncio.to_thread(app.state.listener.stop)
        app.state.engine.dispose()

    app = FastAPI(title="meshctl control plane", version=__version__, lifespan=lifespan)
    # Made with the app, not in its lifespan: the middleware counts from the first request.
    metrics = app.state.metrics = Metrics()
    # Inside the metrics middleware (added after it), so that refusals are counted too.
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    # Outermost: the ACKs it answers skip the rest (it counts them in the same metrics).
    app.add_middleware(AckPath, metrics=metrics)
    routers = (
        # First: requests are matched against routes in order, and sidecars' watches and ACKs are
        # most of them (every sidecar ACKs every snapshot).
        sidecars.router,
        health.router,
        services.router,
        endpoints.router,
        *specs.routers,
        sidecars.mesh_router,
        proxy_config.router,
        apply.router,
        revisions.router,
        check.router,
        identity.router,
        serving_ca.router,
        ui.router,
        stats.router,
        prometheus.metrics_router,
        prometheus.router,
        tokens.router,
        version.router,
    )
    for r in routers:
        app.include_router(r)
    for r in (tap.router, tap.sidecar_router):
        app.include_router(r)
    for r in (traces.otlp_router, traces.router):
        app.include_router(r)
    errors.install(app)
    error_responses.install(app)
    return app
