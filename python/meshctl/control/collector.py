"""CPython's full garbage collections kept off the config push.

A full collection walks every object the collector tracks, holding the GIL:
with a mesh of 10,000 routes and 1,667 sidecars' compiled parts in memory,
0.7-1.0 s, to find a few dozen unreachable objects. CPython starts one by
itself once the long-lived objects grew by a quarter, and every mesh load does
that (a new mesh, its views, the compiled parts), so in the scale bench one
replica's push stalled for about a second in most changes; run instead when
the mesh was quiet for a second, it still stalled the next change whenever
that came then (bench/README.md, "Control plane").

So while a control plane runs:
- the automatic full collection is off (the young generations stay automatic:
  they are cheap and catch most cyclic garbage);
- what a load leaves alive is frozen at once (``gc.freeze()``: moved out of
  every generation, in constant time), so a full collection walks only what
  was made since the last load: milliseconds. The previous mesh, dropped by
  the load, goes by reference counting; what it held in cycles (frozen) waits
  for the reclaim below;
- a full collection runs when the mesh has been quiet for `QUIET_SECONDS`
  after a load, and at the latest `MAX_SECONDS` after the last one;
- every `RECLAIM_SECONDS`, at such a quiet moment, the frozen objects are
  thawed, collected with the rest and frozen again: the one walk of the whole
  heap, a stall of up to a second at the bench's scale, at most that often.
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
#: The frozen objects are collected with the rest (the whole heap walked) at most this often.
RECLAIM_SECONDS = 600.0
#: The third generation's threshold that never triggers by itself (counts of gen-1 collections).
NEVER = 2**31 - 1


class Collector:
    """Runs the full collections of this process on the event loop (see the module docstring)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._thresholds = gc.get_threshold()
        gc.set_threshold(self._thresholds[0], self._thresholds[1], NEVER)
        self._timer: asyncio.TimerHandle | None = None
        self._last = self._reclaimed = time.monotonic()
        #: Full collections run here, and how many of them thawed the frozen objects first (the
        #: tests read them).
        self.runs = self.reclaims = 0
        self._tick = self.loop.call_later(MAX_SECONDS, self._overdue)

    def _overdue(self) -> None:
        if time.monotonic() - self._last >= MAX_SECONDS:
            self.collect()
        self._tick = self.loop.call_later(MAX_SECONDS, self._overdue)

    def loaded(self) -> None:
        """A mesh was loaded (on the loop): what is alive now is frozen, a full collection of
        what comes after runs once things are quiet."""
        gc.freeze()
        if self._timer is not None:
            self._timer.cancel()
        overdue = time.monotonic() - self._last >= MAX_SECONDS
        self._timer = self.loop.call_later(0 if overdue else QUIET_SECONDS, self.collect)

    def collect(self) -> None:
        self._timer = None
        started = self._last = time.monotonic()
        reclaim = started - self._reclaimed >= RECLAIM_SECONDS
        if reclaim:
            self._reclaimed = started
            self.reclaims += 1
            gc.unfreeze()
        found = gc.collect()
        if reclaim:
            gc.freeze()
        self.runs += 1
        log.debug(
            "full collection%s: %d unreachable, %.0f ms",
            " (frozen objects too)" if reclaim else "",
            found,
            (time.monotonic() - started) * 1000,
        )

    def close(self) -> None:
        """Back to CPython's own full collections (the process goes on without this hub; what
        is frozen stays so, as what the application froze at startup)."""
        self._tick.cancel()
        if self._timer is not None:
            self._timer.cancel()
        gc.set_threshold(*self._thresholds)
