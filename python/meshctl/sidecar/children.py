"""The processes ``meshctl run`` starts: each in a session (so a process
group) of its own, so that a terminal's Ctrl-C reaches ``run`` alone and ``run``
decides who gets it; each with PR_SET_PDEATHSIG=SIGTERM (Linux), so that a
``run`` killed with SIGKILL leaves neither the app nor the sidecar behind.

Spawn them from the main thread: the parent-death signal follows the thread
that forked, not the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger("meshctl.run")

PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    return getattr(libc, "prctl", None)


_PRCTL = _prctl()  # loaded here, not in the forked child


def _die_with(parent: int) -> Callable[[], None]:
    """The child's last step before exec: SIGTERM when `parent` dies (already gone: at once)."""

    def setup() -> None:
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal would ever come
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    pass_fds: Sequence[int] = (),
    stdin: int | None = None,
    user: tuple[int, int] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session, dying with us; as `user` (uid, gid, no other groups) if given.
    OSError (a command that is not there) goes to the caller."""
    kw: dict[str, object] = {}
    if user is not None:
        kw = {"user": user[0], "group": user[1], "extra_groups": []}
    proc: subprocess.Popen[bytes] = subprocess.Popen(
        list(argv),
        env=dict(env),
        pass_fds=tuple(pass_fds),
        stdin=stdin,
        start_new_session=True,
        preexec_fn=_die_with(os.getpid()),  # (no threads in `run`'s process when it spawns)
        **kw,  # type: ignore[call-overload]
    )
    return proc


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """`sig` to `proc`'s process group (it leads its own session); gone already: nothing."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def exit_code(returncode: int) -> int:
    """A shell's exit code for a child's: 128+N when signal N killed it."""
    return 128 - returncode if returncode < 0 else returncode


def stop(proc: subprocess.Popen[bytes], *, timeout: float, what: str) -> int:
    """SIGTERM `proc`'s group, wait up to `timeout` seconds, then SIGKILL it; its return code."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the %s did not stop within %.0fs: killing it", what, timeout)
            signal_group(proc, signal.SIGKILL)
    returncode = proc.wait()
    signal_group(proc, signal.SIGKILL)  # whatever it left in its group
    return returncode
