"""App health (issue 15, item 3): the sidecar probes its own app, and the
control plane makes the instance an endpoint only while the probe passes.

The probe is an HTTP GET of a path (any 2xx or 3xx answer passes) or a TCP
connect, on 127.0.0.1 at the app's port (or the probe's own), with an interval,
a timeout and thresholds, as a Kubernetes readinessProbe has them. It comes
from the sidecar's flags (`add_health_arguments`, shared by ``meshctl proxy``
and ``meshctl run``) or else from the Service's ``healthCheck``, which the
control plane hands back with each registration (``health_check``); flags win.

The state the sidecar reports (``health`` in its registration):
- None: no probe configured (the instance is an endpoint, as before). The
  control plane takes None from an instance of a Service that has a
  ``healthCheck`` for ``unknown``: the sidecar learns of the check from that
  registration's answer, so an instance is never an endpoint before its first
  pass (and a sidecar too old to probe never becomes one: upgrade sidecars
  before giving their Service a health check);
- ``unknown``: a probe is configured but has no result yet;
- ``healthy`` after `healthy_threshold` passes in a row, ``unhealthy`` after
  `unhealthy_threshold` failures in a row. From ``unknown`` a failure makes it
  ``unhealthy`` at once (that much is known: the app does not answer yet).
Each change of state is reported at once (`on_change`), not at the next
heartbeat.

The module imports only the standard library at its top: ``meshctl proxy``
parses its flags before anything heavy is loaded.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable, Mapping

TYPE_CHECKING = False  # (typing's, without importing typing: see meshctl.cli.helptext)
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("meshctl.sidecar.health")

UNKNOWN, HEALTHY, UNHEALTHY = "unknown", "healthy", "unhealthy"
#: Probes answered slower than this many seconds are failed however long the timeout (as the
#: control plane's spec bounds it).
MAX_SECONDS = 3600.0


class Probe:
    """One app health check: `http_path` for an HTTP GET, None for a TCP connect. (A plain class:
    `dataclasses` imports `inspect` and `NamedTuple` imports `typing`, 0.4-1 MB in every proxy.)"""

    __slots__ = ("healthy_threshold", "http_path", "interval", "port", "timeout", "unhealthy_threshold")

    def __init__(
        self,
        http_path: str | None = None,
        port: int | None = None,  # on 127.0.0.1; None: the sidecar's app port
        interval: float = 5.0,
        timeout: float = 1.0,
        healthy_threshold: int = 1,
        unhealthy_threshold: int = 3,
    ) -> None:
        self.http_path, self.port = http_path, port
        self.interval, self.timeout = interval, timeout
        self.healthy_threshold, self.unhealthy_threshold = healthy_threshold, unhealthy_threshold

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Probe:
        """From a Service's stored `healthCheck` (camelCase, defaults filled in)."""
        http, tcp = spec.get("httpGet"), spec.get("tcpSocket")
        target = http if http is not None else tcp or {}
        return cls(
            http_path=str(http.get("path", "/")) if http is not None else None,
            port=target.get("port"),
            interval=float(spec.get("periodSeconds", 5)),
            timeout=float(spec.get("timeoutSeconds", 1)),
            healthy_threshold=int(spec.get("successThreshold", 1)),
            unhealthy_threshold=int(spec.get("failureThreshold", 3)),
        )

    def describe(self, app_port: int) -> str:
        port = self.port or app_port
        what = f"GET http://127.0.0.1:{port}{self.http_path}" if self.http_path is not None else f"TCP 127.0.0.1:{port}"
        return f"{what} every {self.interval:g}s"

    def argv(self) -> list[str]:
        """The flags that give this probe to `meshctl proxy` (what `meshctl run` passes its sidecar)."""
        out = ["--health-http", self.http_path] if self.http_path is not None else ["--health-tcp"]
        if self.port is not None:
            out += ["--health-port", str(self.port)]
        out += ["--health-interval", f"{self.interval:g}", "--health-timeout", f"{self.timeout:g}"]
        out += ["--health-healthy-threshold", str(self.healthy_threshold)]
        out += ["--health-unhealthy-threshold", str(self.unhealthy_threshold)]
        return out


def probe_once(probe: Probe, app_port: int) -> bool:
    """Whether the app passes `probe` now."""
    import socket

    port, timeout = probe.port or app_port, min(probe.timeout, MAX_SECONDS)
    if probe.http_path is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
            return True
        except OSError:
            return False
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", probe.http_path, headers={"User-Agent": "meshctl-health", "Connection": "close"})
        resp = conn.getresponse()
        resp.read(65536)  # (not to the end: a probe needs no more than its status)
        return 200 <= resp.status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class HealthMonitor:
    """Probes the app on a thread of its own and keeps the state the sidecar reports.

    `fixed`: the probe from flags (the Service's is then ignored). Without it the monitor waits for
    `configure` with the Service's health check; `on_change(state)` is called on its thread (or
    `configure`'s caller's) whenever the state changes."""

    def __init__(self, app_port: int, *, fixed: Probe | None, on_change: Callable[[str | None], None]):
        self.app_port, self.fixed, self.on_change = app_port, fixed, on_change
        self._lock = threading.Lock()
        self._probe: Probe | None = fixed
        self._spec: Mapping[str, Any] | None = None
        self.state: str | None = UNKNOWN if fixed is not None else None
        self._passes = self._failures = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if fixed is not None:
            log.info("app health: %s (flags)", fixed.describe(app_port))

    def configure(self, spec: Mapping[str, Any] | None) -> bool:
        """The Service's health check, as the control plane's answer carries it (None: none); True
        when the state changed (then report it)."""
        if self.fixed is not None:
            return False
        with self._lock:
            if spec == self._spec:
                return False
            had, self._spec = self._spec, spec
            self._probe = Probe.from_spec(spec) if spec is not None else None
            self._passes = self._failures = 0
            was = self.state
            if self._probe is None:
                self.state = None
            elif had is None:
                self.state = UNKNOWN
            # (a changed check keeps the state until its own thresholds move it)
            if self._probe is not None:
                log.info("app health: %s (the service's healthCheck)", self._probe.describe(self.app_port))
            elif had is not None:
                log.info("app health: the service has no healthCheck any more")
        self._wake.set()  # probe with the new settings now
        return self.state != was

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="app-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            probe = self._probe
            if probe is None:
                self._wake.wait()
            else:
                passed = probe_once(probe, self.app_port)
                self._record(probe, passed)
                self._wake.wait(probe.interval)
            self._wake.clear()

    def _record(self, probe: Probe, passed: bool) -> None:
        with self._lock:
            if probe is not self._probe:  # reconfigured while it ran: the result is for the old one
                return
            if passed:
                self._passes, self._failures = self._passes + 1, 0
            else:
                self._passes, self._failures = 0, self._failures + 1
            was = self.state
            if passed and was != HEALTHY and self._passes >= probe.healthy_threshold:
                self.state = HEALTHY
            elif not passed and (was == UNKNOWN or (was == HEALTHY and self._failures >= probe.unhealthy_threshold)):
                self.state = UNHEALTHY
            if self.state == was:
                return
            state = self.state
        log.log(logging.INFO if state == HEALTHY else logging.WARNING, "app health: %s -> %s", was, state)
        try:
            self.on_change(state)
        except Exception:  # reporting is best effort: the next heartbeat carries it anyway
            log.exception("reporting app health %s failed", state)


# === flags (`meshctl proxy` and `meshctl run`) ===


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, {MAX_SECONDS:g}], got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"expected a count from 1 to 100, got {text!r}")
    return int(text)


def _path(text: str) -> str:
    if not text.startswith("/") or any(not 0x21 <= ord(c) <= 0x7E for c in text):
        raise argparse.ArgumentTypeError(f"expected an absolute path without spaces, e.g. /healthz, got {text!r}")
    return text


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port, got {text!r}")
    return int(text)


class _Unset(float):
    """A tuning flag's default: shown by --help as `[default: X]`, yet told apart from the same
    value given on the command line (`health_options` refuses tuning flags without a probe)."""

    def __str__(self) -> str:
        return f"{self:g}"


def add_health_arguments(group: argparse._ActionsContainer) -> None:
    """The app health flags (they override the Service's `healthCheck`)."""
    kind = group.add_mutually_exclusive_group()
    kind.add_argument(
        "--health-http",
        type=_path,
        metavar="PATH",
        help="Probe the app with GET PATH on 127.0.0.1 (2xx or 3xx passes); the instance is an endpoint only"
        " while it passes. Overrides the Service's healthCheck.",
    )
    kind.add_argument("--health-tcp", action="store_true", help="Probe the app by connecting to its port.")
    group.add_argument("--health-port", type=_port, metavar="PORT", help="Probe this port instead of --app-port.")
    probe = Probe()
    group.add_argument(
        "--health-interval",
        type=_seconds,
        default=_Unset(probe.interval),
        metavar="S",
        help="Seconds between probes.",
    )
    group.add_argument(
        "--health-timeout",
        type=_seconds,
        default=_Unset(probe.timeout),
        metavar="S",
        help="Seconds a probe may take before it fails.",
    )
    group.add_argument(
        "--health-healthy-threshold",
        type=_count,
        default=_Unset(probe.healthy_threshold),
        metavar="N",
        help="Passes in a row that make the instance healthy.",
    )
    group.add_argument(
        "--health-unhealthy-threshold",
        type=_count,
        default=_Unset(probe.unhealthy_threshold),
        metavar="N",
        help="Failures in a row that make a healthy instance unhealthy.",
    )


#: The flags that tune a probe, which need --health-http or --health-tcp.
_TUNING = ("port", "interval", "timeout", "healthy_threshold", "unhealthy_threshold")


def health_options(args: argparse.Namespace) -> Probe | None:
    """The probe the flags give (None: none, the Service's applies); ValueError for tuning flags
    without --health-http or --health-tcp."""
    given = {k: v for k in _TUNING if (v := getattr(args, f"health_{k}", None)) is not None and type(v) is not _Unset}
    if args.health_http is None and not args.health_tcp:
        if given:
            flags = ", ".join("--health-" + k.replace("_", "-") for k in given)
            raise ValueError(f"{flags} {'need' if len(given) > 1 else 'needs'} --health-http or --health-tcp")
        return None
    return Probe(http_path=args.health_http, **given)
