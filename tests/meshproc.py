"""Real processes for mesh tests: a control plane (uvicorn, SQLite file),
sidecars (``meshctl proxy --control-plane``) and ingress gateways
(``meshctl gateway``), each logging to a file."""

from __future__ import annotations

import http.client
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
import sqlalchemy.pool

import pg
from helpers import unused_port, wait_until


@dataclass
class ControlPlane:
    data_dir: Path
    port: int = field(default_factory=unused_port)
    proc: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()
    #: "https" when the args make it serve TLS; then `verify` is what httpx trusts (default: the
    #: data dir's tls/ca.pem) and `host` the name its URL uses.
    scheme: str = "http"
    host: str = "127.0.0.1"
    verify: str | None = None
    #: Its database: an SQLite file in the data dir, unless set, or unless the suite runs its
    #: PostgreSQL pass (tests/pg.py), when each control plane gets a database of its own.
    database_url: str | None = None
    #: What its command runs under: a host of tests/netns.py (`Host.cmd`, `ip netns exec NAME`) or none.
    wrap: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.database_url is None and pg.on_postgres():
            self.database_url = pg.database()

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def _verify(self) -> ssl.SSLContext | bool:
        if self.scheme != "https":
            return True
        return ssl.create_default_context(cafile=self.verify or str(self.data_dir / "tls" / "ca.pem"))

    @property
    def log(self) -> Path:
        return self.data_dir / "control-plane.log"

    @property
    def database(self) -> str:
        """Its database's SQLAlchemy URL: the SQLite file in the data dir unless `database_url`."""
        return self.database_url or f"sqlite:///{self.data_dir / 'mesh.db'}"

    def sql(self, statement: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one SQL statement on its database, around the API (SQLite file or PostgreSQL alike),
        in a transaction of its own: the rows it returns, or for a write `[(rowcount,)]`.
        Parameters are named (`:name`); a datetime parameter is a timestamp (a naive one is UTC)."""
        sqlite = self.database.startswith("sqlite")
        params = {k: _timestamp(v, sqlite) if isinstance(v, datetime) else v for k, v in (params or {}).items()}
        engine = sqlalchemy.create_engine(self.database, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.begin() as conn:
                result = conn.execute(sqlalchemy.text(statement), params)
                return [tuple(r) for r in result] if result.returns_rows else [(result.rowcount,)]
        finally:
            engine.dispose()

    def tables(self) -> list[str]:
        """The names of its database's tables."""
        engine = sqlalchemy.create_engine(self.database, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                return sorted(sqlalchemy.inspect(conn).get_table_names())
        finally:
            engine.dispose()

    def token(self, role: str) -> str:
        return (self.data_dir / f"{role}.token").read_text().strip()

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token('admin')}"}

    @property
    def reader(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token('reader')}"}

    def start(self) -> ControlPlane:
        cmd = [
            sys.executable,
            "-m",
            "meshctl",
            "control-plane",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
        ]
        if self.database_url is not None:
            cmd += ["--database-url", self.database_url]
        cmd += self.args
        with self.log.open("a") as out:
            self.proc = subprocess.Popen([*self.wrap, *cmd], stdout=out, stderr=subprocess.STDOUT)
        # (generous: on a loaded machine a first start on PostgreSQL, all migrations, took over 30 s)
        wait_until(self.healthy, timeout=90, what="the control plane to serve")
        return self

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1, verify=self._verify).status_code == 200
        except (httpx.HTTPError, FileNotFoundError):  # (https: the CA file is written on start)
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)

    def call(self, method: str, path: str, role: str = "admin", **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token(role)}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, verify=self._verify, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        r = self.call(method, path, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def apply(self, *documents: dict[str, Any]) -> Any:
        return self.ok("POST", "/api/v1/apply", json={"documents": list(documents)})

    def join_token(self, service: str, namespace: str = "default") -> str:
        return str(self.ok("POST", f"/api/v1/services/{namespace}/{service}/join-tokens")["token"])

    def sidecars(self) -> list[dict[str, Any]]:
        return list(self.ok("GET", "/api/v1/sidecars"))

    def cli(self, *args: str, data_dir: Path) -> str:
        """The output of `meshctl ARGS` against this control plane with the admin token; a failure
        fails the test. `data_dir` stands in for ~/.meshctl, so a real one is never read."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
        env |= {"COLUMNS": "200", "MESHCTL_SERVER": self.url, "MESHCTL_TOKEN": self.token("admin")}
        env["MESHCTL_DATA_DIR"] = str(data_dir)
        out = subprocess.run([sys.executable, "-m", "meshctl", *args], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout


def _timestamp(at: datetime, sqlite: bool) -> datetime | str:
    """A timestamp parameter as each database's UTCDateTime column holds it: on SQLite the UTC
    time as text; on PostgreSQL an aware datetime (a naive one would be read in the server's time
    zone)."""
    utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else utc


def module_control_plane(*args: str) -> Any:
    """A module-scoped `cp` fixture: one control plane process (with these command-line `args`)
    on a fresh data dir, shared by a module's tests. A module says `cp = module_control_plane()`."""

    @pytest.fixture(scope="module")
    def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
        plane = ControlPlane(tmp_path_factory.mktemp("cp"), args=args).start()
        yield plane
        plane.stop()

    return cp


#: A `meshctl` fixture's function: `meshctl ARGS` as a process, its result.
Run = Callable[..., subprocess.CompletedProcess[str]]


def meshctl_env(cp: ControlPlane, data_dir: Path, token: str | None = "admin", **env: str) -> dict[str, str]:
    """The environment of `meshctl` run against `cp` with its `token` (None: none at all), and no
    MESHCTL_* of ours; `data_dir` stands in for ~/.meshctl, so a real one is never read."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
    environ.update({"COLUMNS": "200", "MESHCTL_SERVER": cp.url, "MESHCTL_DATA_DIR": str(data_dir), **env})
    if token:
        environ["MESHCTL_TOKEN"] = cp.token(token)
    return environ


def run_meshctl(
    cp: ControlPlane,
    *args: str,
    data_dir: Path,
    token: str | None = "admin",
    stdin: str | None = None,
    timeout: float = 60,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """`meshctl ARGS` as a process against `cp` (see `meshctl_env`); it must not crash."""
    out = subprocess.run(
        [sys.executable, "-m", "meshctl", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=meshctl_env(cp, data_dir, token, **env),
        timeout=timeout,
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


def module_meshctl(**env: str) -> Any:
    """A module-scoped `meshctl` fixture: `run_meshctl` against the module's `cp` with a data dir
    of its own and these environment variables, as `meshctl(*args, token=, stdin=, **more_env)`."""

    @pytest.fixture(scope="module")
    def meshctl(cp: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Run:
        nowhere = tmp_path_factory.mktemp("no-data-dir")

        def run(
            *args: str, token: str | None = "admin", stdin: str | None = None, **more: str
        ) -> subprocess.CompletedProcess[str]:
            return run_meshctl(cp, *args, data_dir=nowhere, token=token, stdin=stdin, **(env | more))

        return run

    return meshctl


def ok(out: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a `meshctl` that exited 0 (else the test fails, showing both streams)."""
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def service(name: str, protocol: str = "http") -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name}, "spec": {"ports": [{"port": 80, "protocol": protocol}]}}


def https_listener(name: str, hostname: str | None = None, port: int = 8443, cert: str = "shop") -> dict[str, Any]:
    """A Gateway listener serving HTTPS with certificateRef `cert`, for `hostname` (None: any)."""
    out: dict[str, Any] = {
        "name": name,
        "port": port,
        "protocol": "HTTPS",
        "tls": {"certificateRefs": [{"name": cert}]},
    }
    return out | ({"hostname": hostname} if hostname else {})


def http_route(name: str, parent: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": parent}], "rules": list(rules)},
    }


class _MeshProcess:
    """What a sidecar and a gateway process share: the control-plane flags, the launch, /ready,
    /stats and the stop. Subclasses are dataclasses with these fields."""

    cp: ControlPlane
    workdir: Path
    token: str
    admin_port: int
    proc: subprocess.Popen[bytes] | None
    starts: int
    args: tuple[str, ...]
    service: str

    @property
    def log(self) -> Path:
        raise NotImplementedError

    def _launch(self, verb: str, own: list[str]) -> None:
        """`meshctl <verb> --control-plane ... <own> <args>`, then wait for its admin /ready."""
        token_file = self.workdir / f"{self.service}.join-token"
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        cmd = [sys.executable, "-m", "meshctl", verb, "--control-plane", self.cp.url, *own]
        cmd += ["--admin-port", str(self.admin_port), "--token-file", str(token_file)]
        cmd += ["--cache-dir", str(self.workdir / "cache"), "--workers", "1", "--grace", "1", "--ttl", "5"]
        cmd += self.args
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        try:
            wait_until(self.ready, timeout=30, what=f"the {self.service} {verb}'s admin /ready")
        except AssertionError as e:
            # A process that never got ready is stopped here: the test's cleanup never knew of it.
            self.stop()
            raise AssertionError(f"{e}\n{self.log.read_text()}") from None

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.service} exited {self.proc.returncode}:\n{self.log.read_text()}")
        return get("127.0.0.1", self.admin_port, "/ready")[0] == 200

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)

    def stats(self) -> dict[str, Any]:
        """The data plane's stats, from the process's admin listener."""
        return dict(httpx.get(f"http://127.0.0.1:{self.admin_port}/stats", timeout=5).json())


@dataclass
class Sidecar(_MeshProcess):
    cp: ControlPlane
    service: str
    app_port: int
    workdir: Path
    token: str
    labels: dict[str, str] = field(default_factory=dict)
    upstreams: dict[str, int] = field(default_factory=dict)
    http_proxy_port: int | None = None
    inbound_port: int = field(default_factory=unused_port)
    admin_port: int = field(default_factory=unused_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: More `meshctl proxy` flags (e.g. --svid-ttl).
    args: tuple[str, ...] = ()

    @property
    def log(self) -> Path:
        return self.workdir / f"sidecar-{self.service}-{self.inbound_port}.log"

    def start(self) -> Sidecar:
        own = ["--service", self.service, "--app-port", str(self.app_port), "--inbound-port", str(self.inbound_port)]
        own += [a for k, v in self.labels.items() for a in ("--label", f"{k}={v}")]
        own += [a for k, v in self.upstreams.items() for a in ("--upstream", f"{k}={v}")]
        if self.http_proxy_port:
            own += ["--http-proxy-port", str(self.http_proxy_port)]
        self._launch("proxy", own)
        return self


@dataclass
class Gateway(_MeshProcess):
    """`meshctl gateway` for the Gateway (and Service) `service`, its listeners on 127.0.0.1."""

    cp: ControlPlane
    service: str
    cert_dir: Path
    workdir: Path
    token: str
    address: str = "127.0.0.1"
    admin_port: int = field(default_factory=unused_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: More `meshctl gateway` flags.
    args: tuple[str, ...] = ()

    @property
    def log(self) -> Path:
        return self.workdir / f"gateway-{self.service}.log"

    def start(self) -> Gateway:
        self._launch("gateway", ["--name", self.service, "--cert-dir", str(self.cert_dir), "--address", self.address])
        return self


def get(host: str, port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """(status, headers) of one GET; (0, {}) when nothing answers."""
    try:
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    except OSError:
        return 0, {}


def backends_seen(port: int, n: int = 20, path: str = "/", headers: dict[str, str] | None = None) -> list[str]:
    """Which app answered each of `n` requests through a local outbound port ("!<status>" for failures)."""
    out = []
    for _ in range(n):
        status, h = get("127.0.0.1", port, path, headers)
        out.append(h.get("x-backend", "?") if status == 200 else f"!{status}")
    return out
