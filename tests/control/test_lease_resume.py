"""A control plane restarted after an outage longer than a registration's TTL (issue 14, item 7,
found by bench/chaos.py's cp-down case): the instances that were live when it went away are live
when it comes back, until their sidecars heartbeat again or their time left runs out. Before,
every endpoint had expired on restart, and the snapshots sent while the heartbeats came back one
by one named only some instances: callers failed requests for the others (5xx for a few seconds).
Against a real control plane process, stopped and started on the same database."""

from __future__ import annotations

from datetime import UTC, datetime

from helpers import wait_until
from meshproc import ControlPlane, service


def _register(cp: ControlPlane, port: int, ttl: int) -> str:
    """A sidecar's registration (heartbeat) for api; when its endpoint expires."""
    body = {"service": "api", "address": "127.0.0.1", "inbound_port": port, "app_port": 9000, "ttl_seconds": ttl}
    cp.ok("PUT", "/api/v1/sidecars", json=body)
    return next(str(e["expires_at"]) for e in _endpoints(cp) if e["port"] == port)


def _endpoints(cp: ControlPlane) -> list[dict[str, object]]:
    return list(cp.ok("GET", "/api/v1/services/default/api/endpoints"))


def _live(cp: ControlPlane) -> list[int]:
    return sorted(int(str(e["port"])) for e in _endpoints(cp))


def _past(stamp: str) -> bool:
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return datetime.now(UTC) > (at if at.tzinfo else at.replace(tzinfo=UTC))


def test_registrations_live_at_the_outage_are_live_after_the_restart(cp: ControlPlane) -> None:
    cp.apply(service("api"))
    gone = _register(cp, 15303, ttl=1)
    wait_until(lambda: _past(gone), timeout=10, what="one registration to expire before the outage")
    expiry = max(_register(cp, port, ttl=3) for port in (15301, 15302))
    assert _live(cp) == [15301, 15302]
    cp.stop()
    wait_until(lambda: _past(expiry), timeout=10, what="the outage to outlast the registrations")
    cp.start()
    # Live again, for the time they had left (3 s at most): the one that had expired stays out.
    assert _live(cp) == [15301, 15302]
    # And without heartbeats they run out as before.
    wait_until(lambda: _live(cp) == [], timeout=15, what="the resumed registrations to run out")
