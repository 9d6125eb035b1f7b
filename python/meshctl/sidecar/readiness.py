"""The sidecar's ready line: how ``meshctl proxy --ready-fd N`` tells its
supervisor (``meshctl run``) that the app may start.

When the sidecar is ready (control-plane mode: SVID held, first snapshot
applied, listeners bound; file mode: the config applied and its listeners
bound) it writes one JSON line on fd N and closes it::

    {"ready": true, "listeners": {"outbound/default/pricing": "127.0.0.1:7001", ...},
     "protocols": {"outbound/default/pricing": "http", ...}}

``listeners`` is the contract's shape (name -> bound address); ``protocols``
(name -> the listener's protocol: http, tcp, transparent...) is added so that
the supervisor can give a tcp upstream a ``tcp://`` URL. A sidecar that exits
before it is ready closes the fd without a line: the supervisor reads EOF.
Standard library only: the proxy imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Protocol


class _Listening(Protocol):
    def addresses(self) -> dict[str, str]: ...
    def config(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Ready:
    """What a ready line says: each listener's bound address and protocol, by name."""

    listeners: dict[str, str] = field(default_factory=dict)
    protocols: dict[str, str] = field(default_factory=dict)


def ready_line(dataplane: _Listening) -> bytes:
    """The ready line of a started data plane (its bound addresses: port 0 resolved)."""
    protocols = {
        str(listener.get("name")): str(listener.get("protocol", "http"))
        for listener in dataplane.config().get("listeners", [])
    }
    listeners = dataplane.addresses()
    doc = {"ready": True, "listeners": listeners, "protocols": {k: protocols.get(k, "http") for k in listeners}}
    return json.dumps(doc, sort_keys=True).encode() + b"\n"


def announce(fd: int, dataplane: _Listening) -> None:
    """Write the ready line on `fd` and close it (a supervisor gone already: nothing to tell)."""
    try:
        line = ready_line(dataplane)
        while line:
            line = line[os.write(fd, line) :]
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def parse_ready(line: bytes) -> Ready:
    """A ready line as `Ready`; ValueError when it is not one."""
    try:
        doc = json.loads(line)
    except ValueError:
        raise ValueError(f"not a ready line: {line[:200]!r}") from None
    if not isinstance(doc, dict) or doc.get("ready") is not True or not isinstance(doc.get("listeners", {}), dict):
        raise ValueError(f"not a ready line: {line[:200]!r}")
    listeners = {str(k): str(v) for k, v in doc.get("listeners", {}).items()}
    protocols = doc.get("protocols")
    if not isinstance(protocols, dict):
        protocols = {}
    return Ready(listeners, {k: str(protocols.get(k, "http")) for k in listeners})
