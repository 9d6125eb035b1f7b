"""The API's request limits: a body size for every ``/api/`` request and a
document count for ``apply``, both refused with 413 and a message saying the
limit, its setting and what to do. The same defaults bound ``meshctl apply -f``
(the CLI reads them here, and the same ``MESHCTL_*`` variables raise them), so a
file the server would refuse is refused before it is parsed or sent.

This module imports only the standard library: the CLI loads it at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

MIB = 1024 * 1024
#: The largest request body the API takes, unless Settings.max_request_bytes says otherwise.
MAX_REQUEST_BYTES = 4 * MIB
#: The most documents one apply takes, unless Settings.apply_max_documents says otherwise.
MAX_DOCUMENTS = 1000
#: How much of a refused body is read and thrown away so that its client sees the 413.
DRAIN_BYTES = 64 * MIB
#: The variables that set both (Settings reads them, with its MESHCTL_ prefix; so does the CLI).
BYTES_VARIABLE = "MESHCTL_MAX_REQUEST_BYTES"
DOCUMENTS_VARIABLE = "MESHCTL_APPLY_MAX_DOCUMENTS"


def size(n: int) -> str:
    """A byte count as people read it: `4 MiB`, `5.2 MiB`, `900 KiB`, `512 bytes`."""
    for unit, scale in (("MiB", MIB), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


def too_many_bytes(given: int | None, limit: int, what: str = "request") -> str:
    """Why a request (or the files to apply) of `given` bytes (None: more than the limit) is refused."""
    amount = f"{given} bytes" if given is not None else f"more than {limit} bytes"
    return (
        f"{what} too large: {amount}, over the limit of {size(limit)} ({BYTES_VARIABLE});"
        " apply the documents in several smaller files"
    )


def too_many_documents(given: int, limit: int) -> str:
    """Why an apply of `given` documents is refused."""
    return (
        f"too many documents: {given}, at most {limit} per apply ({DOCUMENTS_VARIABLE});"
        " apply them in several smaller files"
    )


def configured(variable: str, default: int) -> int:
    """The limit a CLI process uses: the variable when set to a positive number, else the default."""
    value = os.environ.get(variable, "")
    return int(value) if value.isdigit() and int(value) > 0 else default


# === the body limit (ASGI middleware) ===

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuses a request under `prefix` whose body is over `max_bytes` with 413, before the app
    sees any of it: by its Content-Length, else as soon as the body read passes the limit (what
    is left of it is read and thrown away, not kept). A body within the limit is read here and
    handed to the app as it came. Other paths (the OTLP receiver at /v1/traces has its own limit)
    pass untouched."""

    def __init__(self, app: App, *, max_bytes: int, prefix: str = "/api/"):
        self.app, self.max_bytes, self.prefix = app, max_bytes, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(receive, send, int(length))
            return
        messages, total = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # a disconnect: the app finds out as it would have
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                await self._refuse(receive if message.get("more_body", False) else None, send, None)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, rest: Receive | None, send: Send, given: int | None) -> None:
        """Answer 413, after reading what is left of the body (`rest`; None: nothing is) and
        throwing it away: clients that send the whole body before reading the answer (Python's
        urllib, the CLI's) would get a connection reset instead if it were left unread. Past a
        bound, a client gets the reset."""
        drained = 0
        while rest is not None and drained <= DRAIN_BYTES:
            message = await rest()
            drained += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = json.dumps({"detail": too_many_bytes(given, self.max_bytes)}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
