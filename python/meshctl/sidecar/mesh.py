"""A sidecar that follows the control plane: it registers its instance and
heartbeats, follows a stream of snapshots newer than the one it runs (one
request however many changes), applies them with ``DataPlane.update()`` and
reports ACK or NACK.

Every snapshot runs with this sidecar's SVID (``sidecar.identity``): the
files are merged into its ``identity`` section, and each renewal re-applies
the running config, so the data plane picks up the new certificate for the
next handshake without dropping a connection.

An ingress gateway (``gateway=True``, ``meshctl gateway``) runs the same
way without an app: its snapshots carry the Gateway's listeners, whose
certificate files are named relative to ``cert_dir`` and resolved here, so
keys never travel. It refuses to start when the first snapshot names a file
that is missing, and SIGHUP re-reads the files (a renewed certificate; see
``reload_on_sighup``) and reopens the access-log files (logrotate), for
sidecars too.

What only the host knows goes into each snapshot here (``sidecar.telemetry``):
spans go to this control plane's trace store unless a Telemetry names a
collector, and ``access_log`` (``--access-log``) puts every listener's access
log where the operator wants it.

It probes its app when told to (``sidecar.health``: flags, or its Service's
``healthCheck``) and reports the app's health with each heartbeat, and at once
when it changes: only a healthy instance is an endpoint.

Each heartbeat also says which endpoints its data plane has out of balancing
(ejected by outlier detection, failing active health checks): ``explain``
shows them for the calls of its service.
And it carries the data plane's counters per edge (``telemetry()``, its
busiest edges): the control plane's live views are made from them, so they
work wherever the sidecar reaches its control plane (see
``meshctl.control.stats`` for why they are pushed rather than scraped).

While an operator taps its service (``meshctl tap``), it relays its data
plane's request metadata to the control plane (``sidecar.tap``); asked for its
config (``meshctl proxy-config``), it answers the same way
(``sidecar.proxy_config``).

The last good snapshot is kept on disk, so a sidecar (re)started while the
control plane is away serves from it; it keeps trying to reach the control
plane with capped exponential backoff and full jitter, so that a fleet does
not reconnect in lockstep. Python only runs here between requests: the data
plane forwards on its own threads.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, cast

from meshctl import BindError, ConfigError, DataPlane
from meshctl.client import ApiClient, ApiError, TrustError, Unreachable, split_urls
from meshctl.dataplane_config import AccessLogConfig, DataPlaneConfig
from meshctl.secretfile import write_secret
from meshctl.sidecar import instance
from meshctl.sidecar.backoff import Backoff
from meshctl.sidecar.certfiles import certificate_problems, resolve_certificates
from meshctl.sidecar.health import HealthMonitor, Probe
from meshctl.sidecar.identity import Identity, IdentityKeeper
from meshctl.sidecar.proxy_config import ConfigDumpRelay, config_dump
from meshctl.sidecar.tap import TapRelay
from meshctl.sidecar.telemetry import TOKEN_FILE, ControlPlaneCollector, reopen_logs, with_access_log
from meshctl.trust import Trust
from meshctl.versions import agent

log = logging.getLogger("meshctl.sidecar")

#: The control plane sends a keep-alive line every 15 s; this long without one, the stream is dead.
STREAM_IDLE_SECONDS = 40.0
#: The most endpoints one heartbeat reports unhealthy (the control plane takes no more).
MAX_ENDPOINT_HEALTH = 256
#: The most edges one heartbeat reports telemetry for (the control plane takes no more).
MAX_TELEMETRY_EDGES = 500


def busiest_edges(telemetry: dict[str, Any]) -> dict[str, Any]:
    """The data plane's `telemetry()` cut to its `MAX_TELEMETRY_EDGES` edges with the most requests."""
    edges = telemetry.get("edges", [])
    if len(edges) > MAX_TELEMETRY_EDGES:
        edges = sorted(edges, key=lambda e: e.get("requests", 0), reverse=True)[:MAX_TELEMETRY_EDGES]
    return {**telemetry, "edges": edges}


def endpoint_health(stats: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The endpoints the data plane has out of balancing, by cluster, from its `stats()`: whether
    outlier detection ejected each (and for how long yet) and whether its health checks fail.
    At most `MAX_ENDPOINT_HEALTH` of them."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    left = MAX_ENDPOINT_HEALTH
    for cluster, c in sorted(stats.get("clusters", {}).items()):
        for address, e in sorted(c.get("endpoints", {}).items()):
            if e.get("healthy", True) or left == 0:
                continue
            state: dict[str, Any] = {"ejected": bool(e.get("ejected"))}
            if e.get("ejected_for_ms") is not None:
                state["ejected_for_ms"] = int(e["ejected_for_ms"])
            if e.get("health_check") is not None:
                state["health_check"] = e["health_check"]
            out.setdefault(cluster, {})[address] = state
            left -= 1
    return out


@dataclass
class SidecarOptions:
    #: One URL or several (replicas of one control plane: comma-separated, or a list); see `urls`.
    control_plane: str | list[str]
    service: str
    app_port: int
    namespace: str = "default"
    address: str = "127.0.0.1"
    inbound_port: int = 15006
    upstreams: dict[str, int] = field(default_factory=dict)
    http_proxy_port: int | None = None
    admin_port: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    weight: int = 1
    #: Where it runs: its endpoint's `zone` label, and the zone its calls prefer.
    zone: str | None = None
    token: str | None = None
    cache_dir: Path | None = None
    ttl_seconds: int = 15
    #: The SVID lifetime to ask for (the control plane's default when None).
    svid_ttl_seconds: int | None = None
    workers: int | None = None
    grace: float = 10.0
    #: An ingress gateway: no app, no inbound listener; the Gateway's listeners bind `address`.
    gateway: bool = False
    #: Where a gateway's certificate files (`<name>.pem`, `<name>.key`) are.
    cert_dir: Path | None = None
    #: Every listener's access log, whatever the snapshots say (`--access-log`).
    access_log: AccessLogConfig | None = None
    #: How an https:// control plane is trusted: a CA bundle, or a CA pin (see meshctl.trust).
    ca_file: Path | None = None
    ca_hash: str | None = None
    #: The app health probe from flags (None: the Service's healthCheck, if any).
    health: Probe | None = None
    #: Transparent mode (`meshctl run --transparent`): the sidecar's transparent outbound port and
    #: its DNS answerer's port (the registration's `transparent` field).
    transparent_port: int | None = None
    dns_port: int | None = None
    #: Its instance id (`--instance-id`); None: a gateway's is made once and kept in its cache
    #: directory, a sidecar sends none (see meshctl.sidecar.instance).
    instance: str | None = None

    @property
    def cache_path(self) -> Path:
        base = self.cache_dir or Path("~/.meshctl/sidecars").expanduser()
        instance = f"gateway.{self.address}" if self.gateway else str(self.inbound_port)
        return base / f"{self.namespace}.{self.service}.{instance}" / "snapshot.json"

    @property
    def identity_dir(self) -> Path:
        return self.cache_path.parent / "identity"

    @property
    def trust_store(self) -> Path:
        """The control plane's CAs trusted after bootstrap (see meshctl.trust)."""
        return self.cache_path.parent / "control-plane-ca.pem"

    @property
    def urls(self) -> list[str]:
        """The control plane's URLs, the client's failover order (see meshctl.client)."""
        return split_urls(self.control_plane)

    def trust(self) -> Trust | None:
        """One trust for every https:// URL: the replicas share a serving CA (issue 16)."""
        https = [u for u in self.urls if u.startswith("https:")]
        if not https:
            return None
        return Trust(https[0], ca_file=self.ca_file, pin=self.ca_hash, store=self.trust_store)

    def transparent_registration(self) -> dict[str, Any]:
        """The registration's `transparent` field, when it runs transparent."""
        if self.transparent_port is None:
            return {}
        return {"transparent": {"outbound_port": self.transparent_port, "dns_port": self.dns_port}}

    def registration(self) -> dict[str, Any]:
        ports = {"gateway": True} if self.gateway else {"inbound_port": self.inbound_port, "app_port": self.app_port}
        if self.gateway and self.instance is None:
            self.instance = instance.kept(self.cache_path.parent)
        return {
            "namespace": self.namespace,
            "service": self.service,
            "address": self.address,
            **({"instance": self.instance} if self.instance else {}),
            **ports,
            "labels": self.labels,
            **({"zone": self.zone} if self.zone else {}),
            "weight": self.weight,
            "upstreams": self.upstreams,
            "http_proxy_port": self.http_proxy_port,
            "admin_port": self.admin_port,
            **self.transparent_registration(),
            "ttl_seconds": self.ttl_seconds,
            "version": agent(),
        }


class SnapshotCache:
    """The last snapshot the data plane accepted, in a 0600 file replaced atomically."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> tuple[int, DataPlaneConfig] | None:
        try:
            doc = json.loads(self.path.read_text())
            # What `save` wrote: a config the data plane took.
            return int(doc["version"]), cast(DataPlaneConfig, dict(doc["config"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, version: int, config: DataPlaneConfig) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret(self.path, json.dumps({"version": version, "config": config}))


class StartRefused(Exception):
    """The sidecar cannot start as configured (a gateway's certificate file is missing)."""


class MeshSidecar:
    def __init__(self, options: SidecarOptions):
        self.opts = options
        self.api = ApiClient(options.urls, options.token, trust=options.trust())
        self.cache = SnapshotCache(options.cache_path)
        self.dataplane: DataPlane | None = None
        self.sidecar_id: int | None = None
        #: The snapshot version last tried (applied or refused): only newer ones are asked for.
        self.version = -1
        #: The snapshot version the data plane runs (None: none yet).
        self.running_version: int | None = None
        self._pending: dict[str, Any] | None = None  # an ACK or NACK not delivered yet
        #: The last ACK or NACK delivered, sent again each time the watch (re)connects: a control
        #: plane killed before writing its batch of ACKs (control.push) has lost it, and would show
        #: this sidecar out of sync until the next change.
        self._reported: dict[str, Any] | None = None
        self._stop = threading.Event()
        #: Probes the app (a gateway has none); a change of its state is reported at once.
        self.health: HealthMonitor | None = None
        if not options.gateway:
            self.health = HealthMonitor(options.app_port, fixed=options.health, on_change=self._health_changed)
        #: Set once a config was applied with the SVID held: listeners bound (`--ready-fd`).
        self.ready = threading.Event()
        self._lock = threading.Lock()
        #: The config last applied, as the control plane sent it (no local paths).
        self._config: DataPlaneConfig | None = None
        self._warned: set[str] = set()
        self.keeper = IdentityKeeper(
            self.api,
            options.identity_dir,
            namespace=options.namespace,
            service=options.service,
            install=self._identity_renewed,
            ttl_seconds=options.svid_ttl_seconds,
        )
        self.collector = ControlPlaneCollector(
            self.api.url,
            options.token,
            options.identity_dir / TOKEN_FILE,
            ca_files=[options.ca_file, options.trust_store],
        )
        #: `meshctl tap`: idle (one parked request) until an operator taps this service.
        self.tap = TapRelay(self.api, sidecar_id=lambda: self.sidecar_id, dataplane=lambda: self.dataplane)
        #: `meshctl proxy-config`: idle (one parked request) until an operator asks for this sidecar's config.
        self.config_dumps = ConfigDumpRelay(self.api, sidecar_id=lambda: self.sidecar_id, dump=self.config_dump)

    # === control-plane calls ===

    def register(self) -> None:
        """Register or heartbeat; ApiError for a refusal (bad token, unknown service). When the
        answer changes what the app health probe reports (the Service's healthCheck was added or
        removed), registers again at once."""
        for _ in range(2):
            if not self._register():
                return

    def _health_changed(self, _state: str | None) -> None:
        if self.sidecar_id is not None and not self._stop.is_set():
            try:
                self.register()
            except (Unreachable, ApiError) as e:
                log.warning("reporting app health failed (the next heartbeat carries it): %s", e)

    def _register(self) -> bool:
        """One registration; True when the health to report changed with its answer."""
        body = self.opts.registration()
        if self.health is not None and self.health.state is not None:
            body["health"] = self.health.state
        if self.keeper.current is not None:  # so that `meshctl status` shows a renewal that fails
            body["svid_expires_at"] = self.keeper.current.not_after.isoformat()
        if (dataplane := self.dataplane) is not None:
            body["endpoint_health"] = endpoint_health(dataplane.stats())
            # For `meshctl stat`, `top`, `edges` and the dashboard's graph.
            body["telemetry"] = busiest_edges(dataplane.telemetry())
        sidecar = self.api.put("/api/v1/sidecars", body, timeout=5)
        if sidecar["id"] != self.sidecar_id:
            log.info(
                "registered with %s as sidecar %d of %s/%s",
                self.api.url,
                sidecar["id"],
                self.opts.namespace,
                self.opts.service,
            )
        self.sidecar_id = sidecar["id"]
        return self.health is not None and self.health.configure(sidecar.get("health_check"))

    def _report(self) -> None:
        pending = self._pending
        if pending is None or self.sidecar_id is None:
            return
        try:
            self.api.post(f"/api/v1/sidecars/{self.sidecar_id}/status", pending, timeout=5)
            self._pending, self._reported = None, pending
        except (Unreachable, ApiError) as e:
            log.warning("could not report snapshot %s: %s", pending["version"], e)

    # === applying snapshots ===

    def _with_identity(self, config: DataPlaneConfig) -> DataPlaneConfig:
        """`config` with this sidecar's SVID files in its identity section (the control plane
        sends the trust bundle there; the roots from the last SVID stand in when it does not)."""
        if self.keeper.current is None:
            return config
        files = self.keeper.files()
        section = (config.get("identity") or {}).copy()
        section["cert_chain_file"] = files["cert_chain_file"]
        section["private_key_file"] = files["private_key_file"]
        if "roots" not in section:
            section["roots_file"] = files["roots_file"]
        return config | {"identity": section}

    def _local(self, config: DataPlaneConfig) -> DataPlaneConfig:
        """`config` as this process runs it: with its SVID files, its span collector and
        --access-log, and for a gateway its certificate files found in --cert-dir (ValueError
        naming any that cannot be read)."""
        if self.opts.cert_dir is not None:
            config = resolve_certificates(config, self.opts.cert_dir)
            errors, warnings = certificate_problems(config)
            for warning in warnings:
                if warning not in self._warned:
                    self._warned.add(warning)
                    log.warning("%s", warning)
            if errors:
                raise ValueError("; ".join(errors))
        self.collector.follow(self.api.url)  # spans go to the replica that answers (failover)
        config = with_access_log(self.collector.apply(config), self.opts.access_log)
        return self._with_identity(config)

    def _identity_renewed(self, identity: Identity) -> None:
        with self._lock:
            if self.dataplane is None or self._config is None:
                return
            try:
                self.dataplane.update(self._local(self._config))
                log.info("identity renewed: %s until %s", identity.spiffe_id, identity.not_after.isoformat())
            except (ConfigError, ValueError, OSError) as e:
                log.error("the renewed identity was refused, keeping the current one: %s", e)

    def apply(self, version: int, config: DataPlaneConfig, *, source: str) -> bool:
        """Start or update the data plane; True when it took the config."""
        with self._lock:
            self.version = max(self.version, version)
            try:
                if self.dataplane is None:
                    dataplane = DataPlane(self._local(config), workers=self.opts.workers)
                    dataplane.start()
                    self.dataplane = dataplane
                else:
                    self.dataplane.update(self._local(config))
            except (ConfigError, BindError, ValueError, OSError) as e:
                log.error("snapshot %d from %s refused, keeping the running config: %s", version, source, e)
                self._pending = {"version": version, "error": str(e)}
                return False
            self._config, self.running_version = config, version
            log.info("snapshot %d from %s applied", version, source)
            self.ready.set()
            if source == "control plane":
                self.cache.save(version, config)
            return True

    def config_dump(self) -> dict[str, Any]:
        """What `meshctl proxy-config` shows of this sidecar (see sidecar.proxy_config)."""
        with self._lock:
            dataplane, config, version = self.dataplane, self._config, self.running_version
        bundle = (config or {}).get("identity", {}).get("roots")  # the control plane's, when it sent one
        return config_dump(dataplane, version=version, identity=self.keeper.current, bundle_pem=bundle)

    # === loops ===

    def _watch(self) -> None:
        """Follow the snapshot stream; reconnect with backoff when it breaks."""
        backoff, at_once = Backoff(), 0.0
        while not self._stop.is_set():
            opened = False  # a stream that was open and broke: another replica at once (failover)
            try:
                if self.sidecar_id is None:
                    self.register()
                if self.keeper.current is None:
                    self.keeper.renew()
                self._pending = self._pending or self._reported
                self._report()
                path = f"/api/v1/sidecars/{self.sidecar_id}/watch?version={self.version}"
                for line in self.api.lines(path, timeout=STREAM_IDLE_SECONDS):
                    if not opened:
                        opened = True
                        log.info("watching %s from snapshot %d", self.api.url, self.version)
                    backoff.reset()
                    if self._stop.is_set():
                        return
                    if line.strip():  # blank lines only keep the stream alive
                        snap = json.loads(line)
                        if self.apply(snap["version"], snap["config"], source="control plane"):
                            self._pending = {"version": snap["version"], "error": None}
                        self._report()
                why = "the control plane ended the watch"
            except Unreachable as e:
                why = f"control plane unreachable ({e})"
            except ApiError as e:
                if e.status == 404:  # the control plane forgot us (e.g. a new database): join again
                    self.sidecar_id = None
                why = f"control plane refused: {e}"
            except (ValueError, KeyError) as e:
                why = f"bad snapshot from the control plane ({e})"
            if opened and len(self.api.urls) > 1 and time.monotonic() - at_once > 5.0:
                at_once = time.monotonic()  # (at most once in 5 s: a stream that keeps breaking backs off)
                log.warning("%s; reconnecting at once", why)
            elif not self._stop.is_set():
                self._pause(backoff, why)

    def _pause(self, backoff: Backoff, why: str) -> None:
        delay = backoff.next_delay()
        log.warning("%s; retrying in %.1fs", why, delay)
        self._stop.wait(delay)

    def _heartbeat(self) -> None:
        while not self._stop.wait(max(1.0, self.opts.ttl_seconds / 3)):
            if self.sidecar_id is None:
                continue  # the watch loop is (re)registering
            try:
                self.register()
            except (Unreachable, ApiError) as e:
                log.warning("heartbeat failed: %s", e)

    # === lifecycle ===

    def reload_on_sighup(self) -> None:
        """SIGHUP reads the certificate files again and reopens the access logs (call before
        `start`: from then on it may come)."""
        signal.signal(signal.SIGHUP, lambda _s, _f: threading.Thread(target=self.reload, daemon=True).start())

    def reload(self) -> None:
        """Apply the running config again, so that files it names (a gateway's certificates) are
        read anew, and reopen the access-log files (logrotate moved them away)."""
        with self._lock:
            if self.dataplane is None or self._config is None:
                return
            try:
                self.dataplane.update(self._local(self._config))
                log.info("reloaded: certificate files read again")
            except (ConfigError, ValueError, OSError) as e:
                log.error("reloading refused, keeping the running config: %s", e)
            reopen_logs(self.dataplane)

    def _first(self, version: int, config: DataPlaneConfig, *, source: str) -> None:
        """A gateway's first config, applied before start returns: StartRefused when a certificate
        file it names cannot be read (later ones are NACKed and the running config kept)."""
        if self.opts.cert_dir is not None:
            errors, _ = certificate_problems(resolve_certificates(config, self.opts.cert_dir))
            if errors:
                raise StartRefused(f"snapshot {version} from the {source}: " + "; ".join(errors))
        if self.apply(version, config, source=source) and source == "control plane":
            self._pending = {"version": version, "error": None}

    def start(self) -> None:
        """Join the mesh, or start from the cached snapshot when the control plane does not answer.
        Raises ApiError when the control plane refuses us (bad token, unknown service), and
        StartRefused when a gateway's first snapshot names a certificate file it cannot read."""
        try:
            self.register()
            self.keeper.renew()
            if self.opts.gateway:
                snap = self.api.get(f"/api/v1/sidecars/{self.sidecar_id}/snapshot?wait=0", timeout=10)
                self._first(snap["version"], snap["config"], source="control plane")
        except TrustError:
            raise  # a control plane that is not the one trusted: no cached start either
        except Unreachable as e:
            cached = self.cache.load()
            if not self.keeper.resume():
                log.warning("control plane unreachable (%s) and no valid identity yet: waiting for it", e)
            elif cached is None:
                log.warning("control plane unreachable (%s) and no cached snapshot yet: waiting for it", e)
            else:
                log.warning("control plane unreachable (%s): starting from cached snapshot %d", e, cached[0])
                if self.opts.gateway:
                    self._first(*cached, source="cache")
                else:
                    self.apply(*cached, source="cache")
        self.keeper.start()
        if self.health is not None:
            self.health.start()
        for target in (self._watch, self._heartbeat):
            threading.Thread(target=target, name=f"sidecar{target.__name__}", daemon=True).start()
        self.tap.start()
        self.config_dumps.start()

    def stop(self) -> None:
        self._stop.set()
        self.keeper.stop()
        if self.health is not None:
            self.health.stop()
        self.tap.stop(wait=False)  # (a signal handler may call this: no joins)
        self.config_dumps.stop()

    def run_until_signalled(self) -> None:
        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            self.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        self._stop.wait()
        self.shutdown()

    def shutdown(self) -> None:
        """Leave the mesh at once (callers stop picking us), then drain."""
        self._stop.set()
        self.keeper.stop()
        if self.health is not None:
            self.health.stop()
        self.tap.stop()  # before the data plane stops: each tap is closed by its own thread
        self.config_dumps.stop()
        if self.sidecar_id is not None:
            try:
                self.api.delete(f"/api/v1/sidecars/{self.sidecar_id}", timeout=2)
            except (Unreachable, ApiError) as e:
                log.warning("could not deregister: %s", e)
        with self._lock:
            if self.dataplane is not None:
                log.info("stopping: draining for up to %.1fs", self.opts.grace)
                self.dataplane.stop(self.opts.grace)
        log.info("stopped")
