"""The long-polls sidecars hold open on the control plane to be told of work
(tap sessions in ``control.tap``, config dumps in ``control.proxy_config``):
the wait until there is something to answer, woken by an event per key and
ended by a deadline or shutdown, and the ``wait`` query parameter they take."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Annotated, TypeVar

from fastapi import Query

#: How long a sidecar's long-poll is held by default (under its client's timeout).
SIDECAR_WAIT_SECONDS = 25.0

#: The `wait` query parameter of a sidecar's long-poll.
SidecarWait = Annotated[float, Query(ge=0, le=60, description="Seconds to hold the request open.")]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


async def wait_ready(
    ready: Callable[[], T | None],
    *,
    events: dict[K, asyncio.Event],
    key: K,
    timeout: float,
    closing: Callable[[], bool],
) -> T | None:
    """`ready()`'s first answer that is not None, asked now and each time `events[key]` is set;
    None after `timeout` seconds or once `closing()`. Whoever changes what `ready` sees pops
    `events[key]` and sets it (a new event is made for the next wait), and shutdown sets them all."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not closing():
        if (found := ready()) is not None:
            return found
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        event = events.setdefault(key, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), remaining)
        except TimeoutError:
            return None
    return None
