"""The control plane ``meshctl up`` (and so ``meshctl demo``) embeds: a
``meshctl control-plane`` process on SQLite in the work dir, on loopback, with
an admin client once its token is written; and the small waiting and port
helpers the runner and the demo share."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshctl.client import ApiClient, ApiError, Unreachable
from meshctl.up.procs import Child, FileOutput, stop_all
from meshctl.up.spec import ControlPlaneSpec


class Interrupted(Exception):
    """A stop was asked for (SIGINT/SIGTERM) while waiting."""


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 30.0, *, stop: Callable[[], bool] = lambda: False
) -> Any:
    """`check()`'s first true value, polled until `timeout`; its connection and API errors count
    as not yet. TimeoutError naming `what` at the deadline; Interrupted once `stop()` says so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop():
            raise Interrupted(what)
        try:
            if value := check():
                return value
        except (OSError, Unreachable, ApiError, ValueError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class Ports:
    """Free loopback ports, none handed out twice by one `up` (the kernel may offer a released
    port again before the child that was given it has bound it)."""

    def __init__(self) -> None:
        self.given: set[int] = set()

    def take(self, fixed: int | None = None) -> int:
        if fixed is not None:
            self.given.add(fixed)
            return fixed
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in self.given:
                self.given.add(port)
                return port


def meshctl(*args: str) -> list[str]:
    """The command line of a meshctl verb, run by this interpreter (a venv's meshctl, not $PATH's)."""
    return [sys.executable, "-m", "meshctl", *args]


class ControlPlane:
    """`meshctl control-plane --data-dir DIR --port PORT` as a child, and an admin client for it."""

    def __init__(self, data_dir: Path, port: int, settings: ControlPlaneSpec | None = None):
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.settings = settings or ControlPlaneSpec()
        self.api = ApiClient(self.url, None)
        self.child: Child | None = None

    def args(self) -> list[str]:
        s = self.settings
        args = meshctl("control-plane", "--data-dir", str(self.data_dir), "--port", str(self.port))
        args += ["--authz-default", s.authz_default] if s.authz_default else []
        args += ["--outbound-policy", s.outbound_policy] if s.outbound_policy else []
        return args

    @property
    def log(self) -> Path:
        """Its output (a line per API call: too busy for `up`'s console)."""
        return self.data_dir.parent / "control-plane.log"

    def start(self, *, timeout: float = 60.0, stop: Callable[[], bool] = lambda: False) -> None:
        child = self.child = Child("control-plane", self.args(), FileOutput(self.log.parent))
        token = self.data_dir / "admin.token"

        def up() -> bool:
            code = child.exit_code()
            if code is not None:
                child.finish()  # its output all written
                tail = "\n".join(self.log.read_text().splitlines()[-10:])
                raise RuntimeError(f"the control plane exited with code {code}; the end of {self.log}:\n{tail}")
            return token.exists() and bool(self.api.get("/healthz"))

        wait_for("the control plane", up, timeout, stop=stop)
        self.api.token = token.read_text().strip()

    def stop(self, deadline_s: float = 10.0) -> None:
        if self.child is not None:
            stop_all([self.child], deadline_s)
