"""A data plane fed from a config file: reload on SIGHUP or when the file
changes; a bad file is reported and ignored, traffic stays on the old config.
SIGHUP also reopens the access-log files (logrotate). The command line's
telemetry flags (``sidecar.telemetry``) edit the file's document each time it
is read."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from meshctl import DataPlane
from meshctl.sidecar.telemetry import Edit, reopen_logs

TYPE_CHECKING = False  # (typing's, without importing typing: see meshctl.cli.helptext)
if TYPE_CHECKING:
    from meshctl.dataplane_config import DataPlaneConfig

log = logging.getLogger("meshctl.proxy")

POLL_SECONDS = 1.0


class FileConfigProxy:
    """Owns one DataPlane and the file it is configured from."""

    def __init__(
        self,
        path: Path,
        *,
        workers: int | None = None,
        grace: float = 10.0,
        watch: bool = True,
        edit: Edit | None = None,
    ):
        self.path = path
        self.grace = grace
        self.watch = watch
        self.edit = edit
        self._stamp = self._file_stamp()
        self.dataplane = DataPlane(self._read(), workers=workers)
        self._wake = threading.Event()
        self._stop_requested = False
        self._reload_requested = False

    def _read(self) -> str | DataPlaneConfig:
        """The file's config: its text, or the document `edit` changed (ValueError when the file
        is no YAML mapping)."""
        text = self.path.read_text()
        if self.edit is None:
            return text  # parsed by the data plane, which names the field of any error
        import yaml  # only then: the proxy stays lean

        try:
            doc: DataPlaneConfig = yaml.safe_load(text)  # its fields checked by the data plane
        except yaml.YAMLError as e:
            raise ValueError(f"{self.path} is not YAML: {e}") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{self.path}: expected a mapping of sections")
        return self.edit(doc)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def start(self) -> None:
        self.dataplane.start()
        for name, address in sorted(self.dataplane.addresses().items()):
            log.info("listener %s on %s", name, address)

    def reload(self) -> bool:
        """Apply the file again; False (and the old config kept) when it is bad."""
        self._stamp = self._file_stamp()
        try:
            version = self.dataplane.update(self._read())
        except (OSError, ValueError) as e:  # (a ConfigError is a ValueError)
            log.error("config %s rejected, keeping the running one: %s", self.path, e)
            return False
        log.info("config %s applied (version %d)", self.path, version)
        return True

    def request_stop(self) -> None:
        self._stop_requested = True
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.request_reload()
        else:
            self.request_stop()

    def run_until_signalled(self) -> None:
        """Block until SIGINT/SIGTERM (or request_stop), reloading as asked; then drain."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.run()

    def run(self) -> None:
        while not self._stop_requested:
            self._wake.wait(POLL_SECONDS if self.watch else None)
            self._wake.clear()
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
                reopen_logs(self.dataplane)
            elif self.watch and self._file_stamp() != self._stamp:
                self.reload()
        log.info("stopping: draining for up to %.1fs", self.grace)
        self.dataplane.stop(self.grace)
        log.info("stopped")
