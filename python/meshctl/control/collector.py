"""CPython's full garbage collections kept off the config push.

A full collection walks every object the collector tracks, holding the GIL:
with a mesh of 10,000 routes and 1,667 sidecars' compiled parts in memory,
0.6-0.8 s. CPython starts one by itself once the long-lived objects grew by a
quarter, and every mesh load does that (a new mesh, its views, the compiled
parts), so in the scale bench one replica's push stalled for about a second
in most changes (bench/README.md, "Control plane").

While a control plane runs, the automatic full collection is off (the young
generations stay automatic: they are cheap and catch most cyclic garbage);
this one runs it when the mesh has been quiet for `QUIET_SECONDS` after a
load, and at the latest `MAX_SECONDS` after the last one, loads or not (a
push may then wait for it, as before, but at most that often).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("meshctl.control.collector")

#: Quiet this long after a mesh load: a full collection now delays no push.
QUIET_SECONDS = 1.0
#: Loads keep coming: a full collection at least this often, whatever it delays.
MAX_SECONDS = 60.0
#: The third generation's threshold that never triggers by itself (counts of gen-1 collections).
NEVER = 2**31 - 1


class Collector:
    """Runs the full collections of this process on the event loop (see the module docstring)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._thresholds = gc.get_threshold()
        gc.set_threshold(self._thresholds[0], self._thresholds[1], NEVER)
        self._timer: asyncio.TimerHandle | None = None
        self._last = time.monotonic()
        #: Full collections run here (the tests read it).
        self.runs = 0
        self._tick = self.loop.call_later(MAX_SECONDS, self._overdue)

    def _overdue(self) -> None:
        if time.monotonic() - self._last >= MAX_SECONDS:
            self.collect()
        self._tick = self.loop.call_later(MAX_SECONDS, self._overdue)

    def loaded(self) -> None:
        """A mesh was loaded (on the loop): a full collection once things are quiet."""
        if self._timer is not None:
            self._timer.cancel()
        overdue = time.monotonic() - self._last >= MAX_SECONDS
        self._timer = self.loop.call_later(0 if overdue else QUIET_SECONDS, self.collect)

    def collect(self) -> None:
        self._timer = None
        started = self._last = time.monotonic()
        found = gc.collect()
        self.runs += 1
        log.debug("full collection: %d unreachable, %.0f ms", found, (time.monotonic() - started) * 1000)

    def close(self) -> None:
        """Back to CPython's own full collections (the process goes on without this hub)."""
        self._tick.cancel()
        if self._timer is not None:
            self._timer.cancel()
        gc.set_threshold(*self._thresholds)
