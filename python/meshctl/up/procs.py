"""Child processes of ``meshctl up``: started in their own session (a Ctrl-C
at the terminal reaches ``up`` alone, which stops them in order), their
output relayed line by line to an :class:`Output`, and stopped with SIGTERM,
a deadline, then SIGKILL for them and every process below them.

Processes below a child (a ``meshctl run``'s sidecar and app) are found in
/proc by parent pid, and known by (pid, start time) so that a reused pid is
never signalled."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Protocol

# === output ===


class Output(Protocol):
    def line(self, name: str, text: str) -> None:
        """One line `text` (no newline) that child `name` wrote."""


_COLOURS = ("36", "33", "35", "32", "34", "91", "96", "93", "95", "92")


class ConsoleOutput:
    """``name | line`` on a stream, names padded to one width and coloured on a terminal."""

    def __init__(self, stream: IO[str] | None = None, *, width: int = 12, colour: bool | None = None):
        self.stream = stream or sys.stdout
        self.width = width
        self.colour = self.stream.isatty() and "NO_COLOR" not in os.environ if colour is None else colour
        self._colours: dict[str, str] = {}
        self._lock = threading.Lock()

    def prefix(self, name: str) -> str:
        label = name.ljust(self.width)
        if not self.colour:
            return f"{label} | "
        code = self._colours.setdefault(name.split("#")[0], _COLOURS[len(self._colours) % len(_COLOURS)])
        return f"\x1b[{code}m{label} |\x1b[0m "

    def line(self, name: str, text: str) -> None:
        with self._lock:  # whole lines, never two children's halves on one
            self.stream.write(self.prefix(name) + text + "\n")
            self.stream.flush()


class FileOutput:
    """Each child's lines in its own file, ``DIR/<name>.log`` (the demo keeps its console for results)."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        with self._lock, (self.directory / f"{name.replace('#', '-')}.log").open("a") as f:
            f.write(text + "\n")


# === /proc ===


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None: no such process, or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return None if fields[0] == "Z" else int(fields[19])


def _parents() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            out[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every living process below `pid`, children first."""
    parents = _parents()
    out: list[int] = []
    frontier = [pid]
    while frontier:
        below = [p for p, parent in parents.items() if parent in frontier]
        out += below
        frontier = below
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


class Known:
    """Processes remembered by (pid, start time): alive only while both still match."""

    def __init__(self, pids: Iterable[int] = ()):
        self.procs: dict[int, int] = {}
        self.add(pids)

    def add(self, pids: Iterable[int]) -> None:
        for pid in pids:
            if (started := start_time(pid)) is not None:
                self.procs.setdefault(pid, started)

    def alive(self) -> list[int]:
        return [pid for pid, started in self.procs.items() if start_time(pid) == started]

    def kill(self) -> None:
        for pid in self.alive():
            with contextlib.suppress(OSError):  # gone meanwhile
                os.kill(pid, signal.SIGKILL)


# === children ===


class Child:
    """A process started in its own session, its output relayed to `output` as `name`."""

    def __init__(self, name: str, args: list[str], output: Output, *, env: dict[str, str] | None = None):
        self.name = name
        self.args = args
        self.output = output
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.below = Known()
        self._relay = threading.Thread(target=self._read, name=f"relay-{name}", daemon=True)
        self._relay.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.output.line(self.name, raw.decode(errors="replace").rstrip("\r\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def remember(self) -> list[int]:
        """Note the processes below it now (a run's sidecar and app), to kill any it leaves behind."""
        self.below.add(descendants(self.pid))
        return self.below.alive()

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.remember()
            self.proc.send_signal(sig)

    def wait(self, deadline: float) -> bool:
        """Wait until `deadline` (time.monotonic()) for it to exit; True if it did."""
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
            return True
        except subprocess.TimeoutExpired:
            return False

    def finish(self) -> int:
        """After SIGTERM and its deadline: SIGKILL it if still running, and whatever it left below it;
        its exit code once its output is all relayed."""
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        self.below.kill()
        self._relay.join(5)
        return code


def stop_all(children: list[Child], deadline_s: float) -> None:
    """SIGTERM to every child at once, then each one's SIGKILL at the deadline."""
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + deadline_s
    for child in children:
        child.wait(deadline)
    for child in children:
        child.finish()
