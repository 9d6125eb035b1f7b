"""Messages between replicas for the requests an operator makes of one
sidecar (``meshctl proxy-config``): the operator may reach replica A while the
sidecar long-polls replica B. Carried by the notify channel (``control.notify``,
topic ``dumps``), so nothing is stored: an announcement is heard by every
replica, this one too, when its transaction commits.

Messages (the topic's payload, fields joined by ``:``):

- ``ask:<sidecar>:<request>:<seconds>``: an operator waits on some replica for
  that sidecar's dump, for up to that long; a replica where the sidecar
  long-polls hands it the request.
- ``done:<sidecar>:<request>``: that operator stopped waiting (answered, timed
  out, gone).
- ``answer:<sidecar>:<request>:<i>:<n>:<text>``: part `i` of `n` of the dump's
  JSON (ASCII), all parts sent in one transaction: a NOTIFY payload holds less
  than 8,000 bytes, and PostgreSQL delivers one transaction's notifications
  together and in order.

On SQLite (one process per database) announcements do nothing and every
request stays in its process, as before replicas.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from meshctl.control.notify import Listener, announce

TOPIC = "dumps"
#: Characters of a dump's JSON per notification (the payload limit is 8,000 bytes, with the header).
CHUNK = 7000


@dataclass
class Heard:
    """One message, parsed."""

    kind: str
    sidecar: int
    request: str
    seconds: float = 0.0
    index: int = 0
    parts: int = 0
    text: str = ""


def parse(payload: str) -> Heard | None:
    """A message of the topic; None for one this version does not know."""
    kind, _, rest = payload.partition(":")
    try:
        if kind == "ask":
            sidecar, request, seconds = rest.split(":", 2)
            return Heard(kind, int(sidecar), request, seconds=float(seconds))
        if kind == "done":
            sidecar, request = rest.split(":", 1)
            return Heard(kind, int(sidecar), request)
        if kind == "answer":
            sidecar, request, index, parts, text = rest.split(":", 4)
            return Heard(kind, int(sidecar), request, index=int(index), parts=int(parts), text=text)
    except ValueError:
        pass
    return None


class Relay:
    """Sends the messages (blocking: call from a thread) and hands what is heard to `on_heard`
    (in the listener's thread)."""

    def __init__(self, engine: Engine, listener: Listener | None, on_heard: Callable[[Heard], None]) -> None:
        self.engine = engine
        if listener is not None:
            listener.on(TOPIC, lambda payload: self._heard(payload, on_heard))

    @staticmethod
    def _heard(payload: str | None, on_heard: Callable[[Heard], None]) -> None:
        if payload is not None and (heard := parse(payload)) is not None:  # (None: a reconnect, nothing to redo)
            on_heard(heard)

    def _send(self, *payloads: str) -> None:
        with Session(self.engine) as session:
            for payload in payloads:
                announce(session, TOPIC, payload)
            session.commit()

    def ask(self, sidecar: int, request: str, seconds: float) -> None:
        self._send(f"ask:{sidecar}:{request}:{seconds:g}")

    def done(self, sidecar: int, request: str) -> None:
        self._send(f"done:{sidecar}:{request}")

    def answer(self, sidecar: int, request: str, doc: dict[str, Any]) -> None:
        text = json.dumps(doc, separators=(",", ":"))  # (ASCII: characters are bytes)
        chunks = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]
        self._send(*(f"answer:{sidecar}:{request}:{i}:{len(chunks)}:{c}" for i, c in enumerate(chunks)))


@dataclass
class Parts:
    """An answer being put together from its parts."""

    parts: int
    texts: dict[int, str] = field(default_factory=dict)

    def add(self, heard: Heard) -> dict[str, Any] | None:
        """The whole document once every part is in."""
        self.texts[heard.index] = heard.text
        if len(self.texts) < self.parts:
            return None
        doc: dict[str, Any] = json.loads("".join(self.texts[i] for i in range(self.parts)))
        return doc
