"""A sidecar's side of ``meshctl proxy-config``: answer an operator's request
for the config its data plane runs, relayed by the control plane (the admin
listener binds localhost, and the operator is elsewhere).

One thread long-polls ``GET /api/v1/sidecars/{id}/config-dumps`` (held ~25 s;
answered at once when an operator asks). For each request listed it builds the
dump (``config_dump``) and POSTs it to ``config-dumps/{request}``. So with
nobody asking a sidecar costs one parked request and its data plane nothing.
A failure is logged and retried with backoff; it never takes the sidecar down.

The dump is the data plane's own view: its running config in sections, the
health of each endpoint from its stats, and the SVID it serves with (SPIFFE
ID, serial, validity, a digest of the trust bundle), never a key.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshctl import _core
from meshctl.client import ApiClient, ApiError, Unreachable
from meshctl.sidecar.backoff import Backoff

if TYPE_CHECKING:
    from meshctl._core import DataPlane
    from meshctl.sidecar.identity import Identity

log = logging.getLogger("meshctl.sidecar.proxy_config")

#: How long the control plane holds the long-poll for requests (its client waits longer).
WAIT_SECONDS = 25.0
#: The endpoint stats an endpoint's `health` carries.
HEALTH_FIELDS = ("healthy", "ejected", "ejected_for_ms", "health_check", "active", "requests")


# === the dump ===


def running_config(dataplane: DataPlane) -> dict[str, Any]:
    """The data plane's running config, secrets redacted, with the defaults written out (as the
    admin /config shows it)."""
    return dataplane.effective_config()


def sections(config: dict[str, Any], stats: dict[str, Any], bound: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """`config` cut into the sections `meshctl proxy-config` shows: listeners (without their
    routes, with the address each is `bound` to), routes (with their listener and index), clusters
    (without their endpoints) and endpoints (with their cluster and their health from `stats`)."""
    listeners, routes, clusters, endpoints = [], [], [], []
    for listener in config.get("listeners", []):
        name = listener.get("name", "")
        listeners.append({k: v for k, v in listener.items() if k != "routes"} | {"bound": bound.get(name)})
        routes += [{"listener": name, "index": i, **r} for i, r in enumerate(listener.get("routes", []))]
    cluster_stats = stats.get("clusters", {})
    for cluster in config.get("clusters", []):
        name = cluster.get("name", "")
        clusters.append({k: v for k, v in cluster.items() if k != "endpoints"})
        seen = cluster_stats.get(name, {}).get("endpoints", {})
        for endpoint in cluster.get("endpoints", []):
            s = seen.get(endpoint.get("address"), {})
            health = {k: s.get(k) for k in HEALTH_FIELDS if k in s}
            endpoints.append({"cluster": name, **endpoint, "health": health})
    return {"listeners": listeners, "routes": routes, "clusters": clusters, "endpoints": endpoints}


def bundle_digest(pem: str) -> dict[str, Any] | None:
    """How many roots `pem` holds and the SHA-256 of their DER, concatenated (None if unreadable)."""
    try:
        roots = _core.certificates_der(pem)  # (not `cryptography`: ~10 MB of every sidecar's memory)
    except ValueError:
        return None
    return {"roots": len(roots), "sha256": hashlib.sha256(b"".join(roots)).hexdigest()}


def identity_summary(identity: Identity, bundle_pem: str | None) -> dict[str, Any]:
    """The SVID in use, and the trust bundle its peers are checked with: `bundle_pem` when the
    control plane sent one in the config, else the roots that came with the SVID."""
    serial = _core.leaf_certificate(identity.chain_pem)[3]
    return {
        "spiffe_id": identity.spiffe_id,
        "serial": serial,
        "not_before": identity.not_before.isoformat(),
        "not_after": identity.not_after.isoformat(),
        "trust_bundle": bundle_digest(bundle_pem or "".join(identity.roots_pem)),
    }


def config_dump(
    dataplane: DataPlane | None, *, version: int | None, identity: Identity | None, bundle_pem: str | None
) -> dict[str, Any]:
    """What the sidecar answers (see control.proxy_config.ProxyConfigReport): empty sections
    while its data plane is not running yet."""
    dump: dict[str, Any] = {"version": version if dataplane is not None else None}
    if dataplane is not None:
        dump |= sections(running_config(dataplane), dataplane.stats(), dataplane.addresses())
    dump["identity"] = identity_summary(identity, bundle_pem) if identity is not None else None
    return dump


# === the relay ===


class ConfigDumpRelay:
    """The long-poll for requests, answered on its own thread. `sidecar_id` is read anew each
    time: nothing happens until the sidecar joined."""

    def __init__(
        self, api: ApiClient, *, sidecar_id: Callable[[], int | None], dump: Callable[[], dict[str, Any]]
    ) -> None:
        self.api = api
        self._sidecar_id, self._dump = sidecar_id, dump
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._follow, name="sidecar-config-dumps", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _follow(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            sidecar_id = self._sidecar_id()
            if sidecar_id is None:
                self._stop.wait(1.0)
                continue
            base = f"/api/v1/sidecars/{sidecar_id}/config-dumps"
            try:
                code, body = self.api.call("GET", f"{base}?wait={WAIT_SECONDS:g}", timeout=WAIT_SECONDS + 10)
                if code == 200 and isinstance(body, dict) and body.get("requests"):
                    self._answer(base, body["requests"])
            except (Unreachable, ApiError) as e:
                # The watch loop reports the control plane's troubles (and re-registers): say it quietly.
                delay = backoff.next_delay()
                log.debug("proxy-config: asking for requests failed (%s); retrying in %.1fs", e, delay)
                self._stop.wait(delay)
                continue
            except Exception:  # a dump that fails to build must not end the relay
                log.exception("proxy-config: building the config dump failed")
                self._stop.wait(backoff.next_delay())
                continue
            backoff.reset()

    def _answer(self, base: str, requests: list[str]) -> None:
        dump = self._dump()  # one dump for every operator waiting now
        for request_id in requests:
            try:
                self.api.post(f"{base}/{request_id}", dump, timeout=10)
            except ApiError as e:
                if e.status != 410:  # 410: that operator stopped waiting
                    raise
