"""A sidecar's side of ``meshctl tap``: relay its data plane's request
metadata to the control plane while an operator taps its service.

One thread long-polls ``GET /api/v1/sidecars/{id}/tap`` (held ~25 s; answered
when the set of open sessions of its service changes). For each session it did
not know, a thread opens ``DataPlane.tap(...)`` with the session's filters and
POSTs batches of events to ``/api/v1/sidecars/{id}/tap/{session}`` until the
control plane answers 410 Gone, the session is no longer listed, its limit or
time is reached (even with the control plane away), or the sidecar stops; then
it closes the tap. So with no tap open a sidecar costs one parked request and
its data plane nothing.

A tap never blocks traffic: the data plane's tap drops what its bounded queue
cannot hold, and this relay reports those drops (and batches it could not
deliver) with its next batch. A failing tap is logged and ends; it never
takes the sidecar down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from meshctl.client import ApiClient, ApiError, Unreachable
from meshctl.sidecar.backoff import Backoff

if TYPE_CHECKING:  # (Tap is in the extension built for issue 12; typing needs no import at run time)
    from meshctl._core import DataPlane, Tap

log = logging.getLogger("meshctl.sidecar.tap")

#: How long the control plane holds the long-poll for sessions (its client waits longer).
WAIT_SECONDS = 25.0
#: The most events in one POST (the control plane takes up to 1000).
BATCH_EVENTS = 200
#: After the first event of a batch, how long to gather more: at most ~10 POSTs a second per session.
BATCH_SECONDS = 0.1
#: Events the data plane buffers per tap before it drops (and counts) them.
TAP_QUEUE = 1000
#: How long `stop` waits for each session's thread to close its tap.
STOP_SECONDS = 3.0


class TapRelay:
    """The long-poll for sessions and one `_Session` thread per open session. `sidecar_id` and
    `dataplane` are read anew each time: nothing happens until the sidecar joined and runs."""

    def __init__(
        self,
        api: ApiClient,
        *,
        sidecar_id: Callable[[], int | None],
        dataplane: Callable[[], DataPlane | None],
    ):
        self.api = api
        self._sidecar_id, self._dataplane = sidecar_id, dataplane
        self._stop = threading.Event()
        #: The sessions the control plane listed last, each with its thread (ended or not).
        self._sessions: dict[str, _Session] = {}

    def start(self) -> None:
        threading.Thread(target=self._follow, name="sidecar-tap", daemon=True).start()

    def stop(self, *, wait: bool = True) -> None:
        """End every session's tap (each thread closes its own, within a poll); with `wait`, give
        them up to `STOP_SECONDS` to have done it."""
        self._stop.set()
        sessions = list(self._sessions.values())
        for session in sessions:
            session.stop.set()
        deadline = time.monotonic() + STOP_SECONDS
        for session in sessions if wait else ():
            if session.thread.is_alive():
                session.thread.join(max(0.0, deadline - time.monotonic()))

    def _follow(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            sidecar_id, dataplane = self._sidecar_id(), self._dataplane()
            if sidecar_id is None or dataplane is None:
                self._stop.wait(1.0)
                continue
            known = quote(",".join(sorted(self._sessions)))
            path = f"/api/v1/sidecars/{sidecar_id}/tap?known={known}&wait={WAIT_SECONDS:g}"
            try:
                code, body = self.api.call("GET", path, timeout=WAIT_SECONDS + 10)
            except (Unreachable, ApiError) as e:
                # The watch loop reports the control plane's troubles (and re-registers): say it once.
                delay = backoff.next_delay()
                log.debug("tap: asking for sessions failed (%s); retrying in %.1fs", e, delay)
                self._stop.wait(delay)
                continue
            backoff.reset()
            if code == 200 and isinstance(body, dict):
                self._update(sidecar_id, dataplane, body.get("sessions", []))

    def _update(self, sidecar_id: int, dataplane: DataPlane, listed: list[dict[str, Any]]) -> None:
        """Start a tap for each session newly listed; end those no longer listed."""
        ids = {s["id"] for s in listed}
        for gone in set(self._sessions) - ids:
            self._sessions.pop(gone).stop.set()
        for info in listed:
            if info["id"] not in self._sessions and not self._stop.is_set():
                session = _Session(self.api, f"/api/v1/sidecars/{sidecar_id}/tap/{info['id']}", dataplane, info)
                self._sessions[info["id"]] = session
                session.thread.start()


class _Session:
    """One session's tap on this data plane, pumped to the control plane by its own thread."""

    def __init__(self, api: ApiClient, path: str, dataplane: DataPlane, info: dict[str, Any]):
        self.api, self.path, self.dataplane, self.info = api, path, dataplane, info
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"sidecar-tap-{info['id']}", daemon=True)

    def _run(self) -> None:
        try:
            tap = self.dataplane.tap(
                method=self.info.get("method"),
                path_prefix=self.info.get("path"),
                status=self.info.get("status"),
                max_queue=TAP_QUEUE,
            )
        except Exception as e:  # a tap must never take the sidecar down
            log.warning("tap %s: the data plane could not open a tap: %s", self.info["id"], e)
            return
        log.info("tap %s opened", self.info["id"])
        try:
            self._pump(tap)
        except Exception as e:
            log.warning("tap %s failed: %s", self.info["id"], e)
        finally:
            tap.close()
            log.info("tap %s closed", self.info["id"])

    def _pump(self, tap: Tap) -> None:
        deadline = time.monotonic() + float(self.info.get("seconds_left", 0))
        limit = int(self.info.get("limit", 0))
        sent = reported = lost = 0
        while not self.stop.is_set() and sent < limit and time.monotonic() < deadline:
            events = self._batch(tap, limit - sent)
            dropped = tap.dropped
            if not events and dropped == reported and not lost:
                continue
            try:
                self.api.post(self.path, {"events": events, "dropped": dropped - reported + lost}, timeout=5)
            except ApiError as e:
                if e.status != 410:  # 410: the session ended
                    log.warning("tap %s: the control plane refused events: %s", self.info["id"], e)
                return
            except Unreachable:
                lost += len(events)  # reported with the next batch that gets through
                continue
            sent, reported, lost = sent + len(events), dropped, 0

    def _batch(self, tap: Tap, most: int) -> list[dict[str, Any]]:
        """Events for one POST: wait up to a second for the first, then gather briefly."""
        most = min(most, BATCH_EVENTS)
        events = tap.poll(timeout=1.0, max_events=most)
        until = time.monotonic() + BATCH_SECONDS
        while events and len(events) < most and (left := until - time.monotonic()) > 0:
            more = tap.poll(timeout=left, max_events=most - len(events))
            if not more:
                break
            events += more
        return events
