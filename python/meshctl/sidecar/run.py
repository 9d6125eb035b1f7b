"""``meshctl run``'s supervisor: the sidecar first, the app once the sidecar
is ready, and the app's exit code at the end.

1. The sidecar starts (``meshctl proxy ... --ready-fd N``, ``sidecar.children``)
   and ``run`` waits for its ready line (``sidecar.readiness``) for at most
   ``ready_timeout`` seconds. A sidecar that exits first: ``run`` exits with its
   code (1 if it had none), the app never started; one that says nothing in
   time is stopped and ``run`` exits 1.
2. In transparent mode the interception rules (``sidecar.iptables``) are
   installed now, after the sidecar listens and before the app sends anything;
   they are removed on every way out of ``run`` but SIGKILL (then ``meshctl
   iptables --cleanup``).
3. The app starts with its environment (``sidecar.appenv``).
4. SIGINT and SIGTERM go to the app's process group, each once; a second
   SIGINT kills the app (SIGKILL), a second SIGTERM is ignored. SIGHUP is
   passed on each time. Before the app starts, SIGINT/SIGTERM stop the sidecar
   and ``run`` exits 128+N.
5. A sidecar that dies while the app runs is restarted after a capped,
   jittered exponential back-off (0.5 s doubling up to 30 s; back to 0.5 s once
   one ran 60 s); the app keeps running, its upstream ports refuse
   connections in between. Ports the sidecar chose itself (port 0 in a file)
   may differ after a restart: the app's environment is not changed.
6. When the app exits: what it left in its process group gets SIGTERM, the
   sidecar gets SIGTERM and ``grace`` + 5 s to drain (then SIGKILL), and
   ``run`` exits with the app's code (128+N when signal N killed it).

Waiting is one ``select`` on a self-pipe that every signal (SIGCHLD included)
writes to (``signal.set_wakeup_fd``) and on the sidecar's ready pipe: no
polling, and no thread (the children's parent-death signal follows the thread
that forked them).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from meshctl.sidecar import children
from meshctl.sidecar.appenv import app_environment
from meshctl.sidecar.backoff import Backoff
from meshctl.sidecar.readiness import Ready, parse_ready

log = logging.getLogger("meshctl.run")

#: A sidecar that ran this long before it died restarts after the shortest delay again.
HEALTHY_SECONDS = 60.0
RESTART_BASE_SECONDS, RESTART_CAP_SECONDS = 0.5, 30.0
#: On top of --grace: how long a stopping sidecar has before SIGKILL.
STOP_SLACK_SECONDS = 5.0
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class RunSpec:
    """What `meshctl run` was asked (``meshctl.cli.run`` builds it from the flags)."""

    command: list[str]
    #: `meshctl proxy`'s arguments (without --ready-fd, which the supervisor adds).
    sidecar_args: list[str]
    namespace: str = "default"
    service: str | None = None
    upstreams: dict[str, int] = field(default_factory=dict)
    grace: float = 10.0
    ready_timeout: float = 60.0
    #: Added to the sidecar's environment (transparent mode: MESHCTL_TOKEN).
    sidecar_env: dict[str, str] = field(default_factory=dict)
    #: The sidecar's (uid, gid) (transparent mode), else run's own.
    sidecar_user: tuple[int, int] | None = None
    #: The rules to install (a meshctl.sidecar.iptables.Interception), or None.
    interception: Any = None


class NotReady(Exception):
    """The sidecar did not get ready: the exit code `run` ends with."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class Sidecar:
    """One sidecar process and the pipe it writes its ready line on."""

    def __init__(self, spec: RunSpec):
        read, write = os.pipe()
        os.set_blocking(read, False)
        argv = [sys.executable, "-m", "meshctl", "proxy", *spec.sidecar_args, "--ready-fd", str(write)]
        try:
            self.proc = children.spawn(
                argv,
                env={**os.environ, **spec.sidecar_env},
                pass_fds=[write],
                stdin=subprocess.DEVNULL,
                user=spec.sidecar_user,
            )
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)  # ours closed: EOF on `read` once the sidecar closes (or loses) its end
        self.started = time.monotonic()
        self.fd: int | None = read
        self._line = b""
        self.ready: Ready | None = None

    def read(self) -> None:
        """Take what the ready pipe has (call when select says it is readable)."""
        if self.fd is None:
            return
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        self._line += chunk
        if b"\n" in self._line or not chunk:
            os.close(self.fd)
            self.fd = None
            if self._line.strip():
                try:
                    self.ready = parse_ready(self._line)
                except ValueError as e:
                    log.error("the sidecar's ready line: %s", e)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Supervisor:
    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.sidecar: Sidecar | None = None
        self.app: subprocess.Popen[bytes] | None = None
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._forwarded: set[int] = set()
        self._installed = False
        self._backoff = Backoff(RESTART_BASE_SECONDS, RESTART_CAP_SECONDS)
        self._restart_at: float | None = None

    # === the run ===

    def run(self) -> int:
        """Run the sidecar and the app; the exit code (see the module's docstring)."""
        with self._signals():
            try:
                ready = self._start()
                self._intercept()
                self.app = self._start_app(ready)
                return self._supervise(self.app)
            except NotReady as e:
                return e.code
            finally:
                self._teardown()

    def _start(self) -> Ready:
        """Start the sidecar and wait for its ready line (NotReady: the code to exit with)."""
        try:
            sidecar = self.sidecar = Sidecar(self.spec)
        except OSError as e:
            user = self.spec.sidecar_user
            as_user = f" as uid {user[0]}, gid {user[1]} (who must be able to run {sys.executable})" if user else ""
            log.error("cannot start the sidecar%s: %s", as_user, e)
            raise NotReady(1) from None
        log.info("sidecar started (pid %d)", sidecar.proc.pid)
        deadline = time.monotonic() + self.spec.ready_timeout
        while sidecar.ready is None:
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("the sidecar was not ready within %.0fs: stopping it", self.spec.ready_timeout)
                raise NotReady(1)
            for sig in self._wait([sidecar.fd] if sidecar.fd is not None else [], left):
                if sig in (signal.SIGINT, signal.SIGTERM):
                    log.info("%s before the app started: stopping the sidecar", signal.Signals(sig).name)
                    raise NotReady(128 + sig)
            if sidecar.ready is None and sidecar.proc.poll() is not None:
                code = children.exit_code(sidecar.proc.returncode)
                log.error("the sidecar exited (code %d) before it was ready: the app was not started", code)
                raise NotReady(code or 1)
        log.info("sidecar ready: %s", ", ".join(f"{k} {v}" for k, v in sorted(sidecar.ready.listeners.items())))
        return sidecar.ready

    def _intercept(self) -> None:
        if self.spec.interception is None:
            return
        from meshctl.sidecar.iptables import InterceptionError, install

        try:
            install(self.spec.interception)
        except (InterceptionError, ValueError, OSError) as e:
            log.error("could not install the interception rules: %s", e)
            raise NotReady(1) from None
        self._installed = True
        log.info("interception rules installed")

    def _start_app(self, ready: Ready) -> subprocess.Popen[bytes]:
        spec = self.spec
        env = app_environment(
            os.environ, ready, upstreams=spec.upstreams, service=spec.service, namespace=spec.namespace
        )
        try:
            app = children.spawn(spec.command, env=env)
        except OSError as e:
            log.error("cannot start %s: %s", spec.command[0], e)
            # A shell's codes: 127 command not found, 126 found but not runnable.
            raise NotReady(127 if isinstance(e, FileNotFoundError) else 126) from None
        log.info("app started (pid %d): %s", app.pid, " ".join(spec.command))
        return app

    def _supervise(self, app: subprocess.Popen[bytes]) -> int:
        """Until the app exits: pass signals on, keep a sidecar running. The app's exit code."""
        while app.poll() is None:
            fds = [self.sidecar.fd] if self.sidecar is not None and self.sidecar.fd is not None else []
            timeout = None if self._restart_at is None else max(0.0, self._restart_at - time.monotonic())
            for sig in self._wait(fds, timeout):
                self._forward(app, sig)
            self._mind_sidecar()
        code = children.exit_code(app.returncode)
        log.info("app exited (code %d): stopping the sidecar", code)
        children.signal_group(app, signal.SIGTERM)  # what the app left behind in its group
        return code

    def _forward(self, app: subprocess.Popen[bytes], sig: int) -> None:
        if sig not in FORWARDED:
            return
        name = signal.Signals(sig).name
        if sig in self._forwarded and sig == signal.SIGINT:
            log.warning("SIGINT again: killing the app")
            children.signal_group(app, signal.SIGKILL)
        elif sig in self._forwarded and sig == signal.SIGTERM:
            log.info("SIGTERM again: the app has it already")
        else:
            log.info("%s: passed on to the app", name)
            children.signal_group(app, sig)
            self._forwarded.add(sig)

    def _mind_sidecar(self) -> None:
        """Restart a sidecar that died, after its back-off."""
        sidecar = self.sidecar
        if sidecar is not None:
            if sidecar.proc.poll() is None:
                return
            sidecar.close()
            up = time.monotonic() - sidecar.started
            if up >= HEALTHY_SECONDS:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            code = children.exit_code(sidecar.proc.returncode)
            log.error(
                "the sidecar exited (code %d) after %.0fs; the app keeps running; restarting in %.1fs", code, up, delay
            )
            self.sidecar, self._restart_at = None, time.monotonic() + delay
        elif self._restart_at is not None and time.monotonic() >= self._restart_at:
            self._restart_at = None
            try:
                self.sidecar = Sidecar(self.spec)
                log.info("sidecar restarted (pid %d)", self.sidecar.proc.pid)
            except OSError as e:
                delay = self._backoff.next_delay()
                log.error("cannot restart the sidecar (%s): trying again in %.1fs", e, delay)
                self._restart_at = time.monotonic() + delay

    def _teardown(self) -> None:
        """Stop what is still running, remove the rules: on every way out of `run`."""
        if self.app is not None and self.app.poll() is None:  # (an exception got us here)
            children.stop(self.app, timeout=self.spec.grace + STOP_SLACK_SECONDS, what="app")
        if self.sidecar is not None:
            self.sidecar.close()
            children.stop(self.sidecar.proc, timeout=self.spec.grace + STOP_SLACK_SECONDS, what="sidecar")
            log.info("sidecar stopped")
        if self._installed:
            from meshctl.sidecar.iptables import InterceptionError, remove

            try:
                remove()
                log.info("interception rules removed")
            except (InterceptionError, OSError) as e:
                log.error("could not remove the interception rules (`meshctl iptables --cleanup`): %s", e)

    # === waiting ===

    def _wait(self, fds: Sequence[int], timeout: float | None) -> list[int]:
        """Block until a signal comes, a child exits or one of `fds` (ready pipes) is readable, or
        `timeout`; read the readable pipes and return the signals that came."""
        try:
            readable, _, _ = select.select([self._wake_r, *fds], [], [], timeout)
        except InterruptedError:  # (retried by Python; kept for clarity)
            readable = [self._wake_r]
        sidecar = self.sidecar
        if sidecar is not None and sidecar.fd is not None and sidecar.fd in readable:
            was_ready = sidecar.ready is not None
            sidecar.read()
            if self.app is not None and not was_ready and sidecar.ready is not None:
                log.info("sidecar ready again")
        try:
            return list(os.read(self._wake_r, 512))
        except BlockingIOError:
            return []

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """Signals write their number to the self-pipe (the handlers themselves do nothing);
        the previous handlers come back afterwards."""
        handled = (*FORWARDED, signal.SIGCHLD)
        previous: dict[int, Callable[..., Any] | int | None] = {s: signal.getsignal(s) for s in handled}
        old_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for s in handled:
            signal.signal(s, _noop)
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler if handler is not None else signal.SIG_DFL)
            signal.set_wakeup_fd(old_fd)
            os.close(self._wake_r)
            os.close(self._wake_w)


def _noop(_signum: int, _frame: object) -> None:
    pass


def run(spec: RunSpec) -> int:
    """Supervise `spec`'s sidecar and app (see the module's docstring); the exit code."""
    return Supervisor(spec).run()
