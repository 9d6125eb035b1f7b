"""A real PostgreSQL server for tests: the Debian ``postgresql`` package's
binaries, a cluster made with initdb in a temporary directory (as the
``postgres`` user when the tests run as root: the server refuses root), on a
free port of 127.0.0.1. One server per test session, started on first use and
stopped at exit; each control plane gets a database of its own.

``MESHCTL_TEST_DATABASE=postgresql`` makes every ``meshproc.ControlPlane`` run
on PostgreSQL (the suite's second pass in ``.ci/run``); tests of replicas ask
for a database with `database()` whatever the pass.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from helpers import unused_port

#: "postgresql" runs the control planes of the tests on PostgreSQL; anything else, SQLite.
PASS = os.environ.get("MESHCTL_TEST_DATABASE", "sqlite")


def on_postgres() -> bool:
    return PASS == "postgresql"


def _bin(name: str) -> str:
    """A server binary: on PATH, or in the newest /usr/lib/postgresql/N/bin (Debian keeps them there)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise RuntimeError(f"{name} not found: install the postgresql package (.ci/run does)")
    return candidates[-1]


@dataclass
class Server:
    directory: Path
    port: int
    proc: subprocess.Popen[bytes]
    _count: int = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-t",
                "-A",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode:
            raise RuntimeError(f"psql {sql!r}: {out.stderr.strip()}")
        return out.stdout.strip()

    def database(self, prefix: str = "mesh") -> str:
        """A new empty database's SQLAlchemy URL (psycopg 3 driver)."""
        with _lock:
            self._count += 1
            name = f"{prefix}_{os.getpid()}_{self._count}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: smart shutdown is too polite for leftover clients
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)


_lock = threading.Lock()
_server: Server | None = None


def _demote() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def server() -> Server:
    """The session's server, started on first use."""
    global _server
    with _lock:
        if _server is None:
            _server = _start()
            atexit.register(_server.stop)
        return _server


def _start() -> Server:
    ids = _demote()
    directory = Path(tempfile.mkdtemp(prefix="meshctl-pg-"))
    data = directory / "data"
    if ids is not None:
        os.chown(directory, *ids)
    user = {"user": ids[0], "group": ids[1]} if ids is not None else {}
    init = subprocess.run(
        [_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
        capture_output=True,
        text=True,
        **user,  # type: ignore[arg-type]
    )
    if init.returncode:
        raise RuntimeError(f"initdb failed: {init.stderr.strip()}")
    port = unused_port()
    # Durability off: a test's database lives minutes. Enough connections for three replicas'
    # pools and the tests' own.
    settings = [
        "-c", f"port={port}", "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={directory}",
        "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        "-c", "max_connections=600", "-c", "shared_buffers=64MB",
    ]  # fmt: skip
    log = (directory / "server.log").open("ab")
    proc = subprocess.Popen(
        [_bin("postgres"), "-D", str(data), *settings],
        stdout=log,
        stderr=subprocess.STDOUT,
        **user,  # type: ignore[arg-type]
    )
    srv = Server(directory, port, proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            srv.psql("SELECT 1")
            return srv
        except RuntimeError:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (directory / "server.log").read_text(errors="replace")[-2000:]
                srv.stop()
                raise RuntimeError(f"PostgreSQL did not start: {tail}") from None
            time.sleep(0.1)


def database(prefix: str = "mesh") -> str:
    """A new empty database on the session's server."""
    return server().database(prefix)
