"""What a proxy adds to the telemetry part of its config before handing it to
the data plane: what only its host knows.

- Spans go to the control plane's own trace store unless a Telemetry names a
  collector: a sidecar sets ``tracing.collector`` to its control plane's
  ``/v1/traces`` and gives the data plane its token through a 0600 file
  (``tracing.token_file``): the token never goes into the config itself,
  which the admin port's /config shows. A collector the control plane names
  gets no token: the mesh's token is for the mesh.
- ``--access-log PATH|-`` (with ``--access-log-format``) turns access logs on
  for every listener, whatever the snapshot says: the operator chooses where
  logs go on their host.
- ``--trace-sample-percent`` (a proxy fed from a file) sets the sampling rate.

Each function returns a new config and leaves its argument alone (the
sidecar keeps the control plane's config as sent).
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from meshctl import DataPlane
from meshctl.secretfile import write_secret

TYPE_CHECKING = False  # (typing's, without importing typing: see meshctl.cli.helptext)
if TYPE_CHECKING:  # annotations only: the TypedDicts would cost every proxy ~1 MB at run time
    from meshctl.dataplane_config import AccessLogConfig, AccessLogFormat, DataPlaneConfig

log = logging.getLogger("meshctl.sidecar")

#: A change to a config document.
Edit = Callable[["DataPlaneConfig"], "DataPlaneConfig"]
#: In the sidecar's identity dir: the token the data plane sends spans with.
TOKEN_FILE = "collector.token"


def with_access_log(config: DataPlaneConfig, log: AccessLogConfig | None) -> DataPlaneConfig:
    """`config` with every listener writing `log` (None: as it was)."""
    if log is None or "listeners" not in config:
        return config
    return config | {"listeners": [listener | {"access_log": log} for listener in config["listeners"]]}


def with_sample_percent(config: DataPlaneConfig, percent: float | None) -> DataPlaneConfig:
    """`config` sampling `percent` of new traces (None: as it was)."""
    if percent is None:
        return config
    section = config.get("telemetry", {})
    return config | {"telemetry": section | {"tracing": section.get("tracing", {}) | {"sample_percent": percent}}}


def reopen_logs(dataplane: DataPlane) -> None:
    """Reopen the access-log files after logrotate moved them (SIGHUP); a failure is logged, and
    lines keep going where they went."""
    try:
        dataplane.reopen_logs()
        log.info("access logs reopened")
    except Exception as e:  # a signal for logrotate must never take the proxy down
        log.error("could not reopen the access logs: %s", e)


class ControlPlaneCollector:
    """Sends the spans of a config without a collector to the control plane at `url`, with
    `token` (when there is one) written to `token_path` the first time it is needed. An https://
    control plane is verified against the first of `ca_files` that exists (the operator's
    `--ca-file`, or the CAs the sidecar trusted at bootstrap)."""

    def __init__(self, url: str, token: str | None, token_path: Path, ca_files: Sequence[Path | None] = ()):
        self.url = f"{url.rstrip('/')}/v1/traces"
        self.token, self.token_path = token, token_path
        self.ca_files = [p for p in ca_files if p is not None]
        self._written = False
        self._warned_https = False
        self._lock = threading.Lock()

    def follow(self, url: str) -> None:
        """Send spans to the control plane at `url` from the next config on (the replica that
        answers now)."""
        self.url = f"{url.rstrip('/')}/v1/traces"

    def _token_file(self) -> str | None:
        if self.token is None:
            return None
        with self._lock:
            if not self._written:
                self.token_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_secret(self.token_path, self.token)
                self._written = True
        return str(self.token_path)

    def apply(self, config: DataPlaneConfig) -> DataPlaneConfig:
        """`config` sending its spans here, when it traces and names no collector."""
        section = config.get("telemetry")
        tracing = section.get("tracing") if section else None
        if section is None or tracing is None or "collector" in tracing:
            return config
        ours = tracing | {"collector": self.url}
        if self.url.startswith("https:"):
            # The data plane's exporter trusts only the roots it is given, never the system's.
            ca_file = next((p for p in self.ca_files if p.exists()), None)
            if ca_file is None:
                if not self._warned_https:
                    self._warned_https = True
                    log.warning("spans are not sent to %s: no CA file to verify it with (give --ca-file)", self.url)
                return config
            ours["ca_file"] = str(ca_file)
        if (token_file := self._token_file()) is not None:
            ours["token_file"] = token_file
        return config | {"telemetry": section | {"tracing": ours}}


# === command-line flags ===


def add_access_log_arguments(parser: argparse._ActionsContainer) -> None:
    """`--access-log` and `--access-log-format`, for every process that runs a data plane."""
    parser.add_argument(
        "--access-log",
        metavar="PATH|-",
        help="Write an access log line per request (per connection on tcp) on every listener, to this file"
        " (reopened on SIGHUP, for logrotate) or to stderr (-); overrides the control plane's Telemetry path.",
    )
    parser.add_argument(
        "--access-log-format",
        choices=["json", "text"],
        help="The access log's lines: JSON objects (the default) or text. Needs --access-log.",
    )


def access_log_option(parser: argparse.ArgumentParser, args: argparse.Namespace) -> AccessLogConfig | None:
    """The access log the flags ask for (a relative path made absolute), or None."""
    if args.access_log is None:
        if args.access_log_format is not None:
            parser.error("--access-log-format needs --access-log")
        return None
    path = args.access_log if args.access_log == "-" else str(Path(args.access_log).resolve())
    fmt: AccessLogFormat = args.access_log_format or "json"
    return {"path": path, "format": fmt}


def sample_percent(text: str) -> float:
    """`--trace-sample-percent`: a number from 0 to 100."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentage from 0 to 100, got {text!r}")
    return value


def file_edits(log: AccessLogConfig | None, percent: float | None) -> Edit | None:
    """What the flags change in a config file's document (None: nothing)."""
    if log is None and percent is None:
        return None
    return lambda config: with_sample_percent(with_access_log(config, log), percent)
