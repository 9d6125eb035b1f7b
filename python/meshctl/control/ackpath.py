"""A short path for ACKs: every sidecar POSTs one to ``/api/v1/sidecars/{id}/status`` for every
snapshot it applies, so a route change to 5,000 sidecars is 5,000 ACKs, and through FastAPI's
middleware, routing and dependencies each cost ~0.35 ms of a control plane's event loop, more
than compiling and sending the snapshots.

This ASGI middleware, outermost, answers the common case itself: an ACK (``{"version": N}``,
no error) of a sidecar this process knows (`Hub.sidecars`), with a valid token that may act for
that sidecar. It decides exactly as the route would (the same token check,
`deps.TokenCache.caller`; the same `Caller.may_act_for`; the same bounds on the version) and
counts the request in the same metrics. Anything else (a NACK, an unknown token or sidecar,
another body) goes on to the app, with the body it read handed on unchanged: the route
answers it as before.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meshctl.control.metrics import Metrics
from meshctl.control.models import DB_INT_MAX

_PATH = re.compile(r"/api/v1/sidecars/([1-9][0-9]{0,9})/status")
#: The route's template, as `RequestMetrics` labels it.
TEMPLATE = "/api/v1/sidecars/{sidecar_id}/status"
#: An ACK's body is `{"version": N}`: a longer one is not an ACK this path answers.
MAX_BODY = 64
_HEADERS = (b"content-type", b"authorization")


class AckPath:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATH.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        body, rest = await _read(receive)
        if rest is None:  # the client went away
            return
        ack = await _ack(scope, int(match[1]), body) if not rest and len(body) <= MAX_BODY else None
        if ack is None:
            await self.app(scope, _replay(body, rest, receive), send)
            return
        hub, sidecar_id, version = ack
        hub.note_ack(sidecar_id, version)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        labels = ("POST", TEMPLATE, "204")
        self.metrics.api_requests.labels(*labels).inc()
        self.metrics.api_seconds.labels(*labels).observe(time.perf_counter() - started)


async def _ack(scope: Scope, sidecar_id: int, body: bytes) -> tuple[Any, int, int] | None:
    """(hub, sidecar id, version) when this is an ACK the route would take with 204, else None."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _HEADERS:
            if name in headers:  # twice: which one the app reads is the app's business
                return None
            headers[name] = value
    if headers.get(b"content-type", b"").split(b";")[0].strip().lower() != b"application/json":
        return None
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    if scheme.lower() != b"bearer" or not token:
        return None
    state = scope["app"].state
    hub = getattr(state, "hub", None)
    if hub is None:  # (not started yet)
        return None
    caller = await state.token_cache.caller(state.engine, token.decode("latin-1"))
    if caller is None:
        return None
    known = hub.sidecars.get(sidecar_id)
    if known is None or (caller.joined_only and known[2] != caller.id):
        return None
    if not caller.may_act_for(known[1], known[2]):
        return None
    try:
        report = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(report, dict) or not report.keys() <= {"version", "error"} or report.get("error") is not None:
        return None
    version = report.get("version")
    if type(version) is not int or not 0 <= version <= DB_INT_MAX:
        return None
    return hub, sidecar_id, version


async def _read(receive: Receive) -> tuple[bytes, bool | None]:
    """The body, up to a little over `MAX_BODY` bytes, and whether more follows (None: the
    client disconnected)."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body, None
        body += message.get("body", b"")
        more = bool(message.get("more_body", False))
        if not more or len(body) > MAX_BODY:
            return body, more


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """`receive` as the app sees it: the body read so far first, then the rest."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": more}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
