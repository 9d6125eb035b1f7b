"""Messages between replicas for what an operator asks of sidecars
(``meshctl proxy-config``, ``meshctl tap``): the operator may reach replica A
while the sidecar long-polls replica B. Carried by the notify channel
(``control.notify``), so nothing is stored: an announcement is heard by every
replica, this one too, when its transaction commits. A document larger than
one notification (a NOTIFY payload holds less than 8,000 bytes) is sent as
parts, all in one transaction: PostgreSQL delivers one transaction's
notifications together and in order (``chunks``, ``Parts``).

Topic ``taps`` (``control.tap``): ``open:<session>:<json>`` (a session opened
on some replica: service, filters, limit, seconds), ``close:<session>``, and
``events:<session>:<batch>:<i>:<n>:<text>`` (part `i` of `n` of a sidecar's
batch, JSON, for the replica that holds the session).

Topic ``dumps`` (proxy-config; fields joined by ``:``):

- ``ask:<sidecar>:<request>:<seconds>``: an operator waits on some replica for
  that sidecar's dump, for up to that long; a replica where the sidecar
  long-polls hands it the request.
- ``done:<sidecar>:<request>``: that operator stopped waiting (answered, timed
  out, gone).
- ``answer:<sidecar>:<request>:<i>:<n>:<text>``: part `i` of `n` of the dump's
  JSON (ASCII).

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
    """Sends a topic's messages (blocking: call from a thread) and hands each one heard to
    `on_heard` (in the listener's thread)."""

    def __init__(self, engine: Engine, listener: Listener | None, topic: str, on_heard: Callable[[str], None]) -> None:
        self.engine, self.topic = engine, topic
        if listener is not None:  # (None: a reconnect; these messages need no resynchronising)
            listener.on(topic, lambda payload: on_heard(payload) if payload is not None else None)

    def send(self, *payloads: str) -> None:
        with Session(self.engine) as session:
            for payload in payloads:
                announce(session, self.topic, payload)
            session.commit()


def chunks(prefix: str, doc: Any) -> list[str]:
    """`doc` as JSON in parts, each `prefix:i:n:text`, small enough for one notification."""
    text = json.dumps(doc, separators=(",", ":"))  # (ASCII: characters are bytes)
    parts = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]
    return [f"{prefix}:{i}:{len(parts)}:{c}" for i, c in enumerate(parts)]


class DumpRelay(Relay):
    """The ``dumps`` topic: handing parsed messages to `on_heard`."""

    def __init__(self, engine: Engine, listener: Listener | None, on_heard: Callable[[Heard], None]) -> None:
        def heard(payload: str) -> None:
            if (message := parse(payload)) is not None:
                on_heard(message)

        super().__init__(engine, listener, TOPIC, heard)

    def ask(self, sidecar: int, request: str, seconds: float) -> None:
        self.send(f"ask:{sidecar}:{request}:{seconds:g}")

    def done(self, sidecar: int, request: str) -> None:
        self.send(f"done:{sidecar}:{request}")

    def answer(self, sidecar: int, request: str, doc: dict[str, Any]) -> None:
        self.send(*chunks(f"answer:{sidecar}:{request}", doc))


@dataclass
class Parts:
    """An answer being put together from its parts."""

    parts: int
    texts: dict[int, str] = field(default_factory=dict)

    def add(self, index: int, text: str) -> Any:
        """The whole document once every part is in (None until then)."""
        self.texts[index] = text
        if len(self.texts) < self.parts:
            return None
        return json.loads("".join(self.texts[i] for i in range(self.parts)))
