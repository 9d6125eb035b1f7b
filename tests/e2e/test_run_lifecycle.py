"""End to end: `meshctl run` as a user runs it (the real binary, a real control plane, a real
pricing app behind its sidecar). The app starts only once its sidecar is ready, so its first call
succeeds; its exit code is run's; SIGTERM reaches it; a finished job leaves no process behind; a
sidecar killed under a running app comes back; a killed `run` takes its children with it; and the
file-fed mode works the same way."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from helpers import HttpBackend, unused_port, wait_until
from meshproc import ControlPlane, Sidecar, module_control_plane, service

cp = module_control_plane()

#: The app: calls its upstream once at start (exit 99 unless it got 200), then does what argv[1] says.
APP = textwrap.dedent(
    """
    import os, signal, sys, time, urllib.request
    out = sys.argv[2]

    def call():
        try:
            with urllib.request.urlopen(os.environ["MESHCTL_UPSTREAM_PRICING"] + "/", timeout=5) as r:
                return r.status
        except Exception as e:
            return repr(e)

    first = call()
    with open(out + ".env", "w") as f:
        f.write("\\n".join(f"{k}={v}" for k, v in sorted(os.environ.items())))
    if first != 200:
        sys.exit(99)
    mode = sys.argv[1]
    if mode.startswith("exit:"):
        sys.exit(int(mode[5:]))
    if mode == "kill-self":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "ignore-sigint":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    def on_term(signum, frame):
        with open(out + ".term", "w") as f:
            f.write("SIGTERM")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    while True:  # "serve": call the upstream again and again, one result a line
        with open(out, "a") as f:
            f.write(f"{call()}\\n")
        time.sleep(0.05)
    """
)


@pytest.fixture(scope="module")
def pricing(cp: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpBackend]:
    """The pricing app behind its own sidecar; frontend is the service `meshctl run` runs."""
    cp.apply(service("frontend"), service("pricing"))
    app = HttpBackend("pricing")
    port = int(app.address.rsplit(":", 1)[1])
    sidecar = Sidecar(cp, "pricing", port, tmp_path_factory.mktemp("pricing"), cp.join_token("pricing")).start()
    yield app
    sidecar.stop()
    app.stop()


@dataclass
class Run:
    """One `meshctl run` process for frontend, its stderr in `log`."""

    cp: ControlPlane
    workdir: Path
    mode: str
    extra: list[str] = field(default_factory=list)
    inbound_port: int = field(default_factory=unused_port)
    upstream_port: int = field(default_factory=unused_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "run.log"

    @property
    def out(self) -> Path:
        return self.workdir / "app.out"

    def start(self, *source: str) -> Run:
        app = self.workdir / "app.py"
        app.write_text(APP)
        if not source:
            token = self.workdir / "token"
            token.write_text(self.cp.join_token("frontend"))
            source = ("--control-plane", self.cp.url, "--token-file", str(token))
        cmd = [sys.executable, "-m", "meshctl", "run", *source, "--service", "frontend", "--app-port", "9"]
        cmd += ["--inbound-port", str(self.inbound_port), "--http-proxy-port", str(unused_port())]
        cmd += ["--upstream", f"pricing={self.upstream_port}", "--cache-dir", str(self.workdir / "cache")]
        cmd += ["--grace", "1", "--ttl", "5", "--workers", "1", *self.extra]
        cmd += ["--", sys.executable, str(app), self.mode, str(self.out)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, env=env)
        return self

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"meshctl run still running after {timeout}s:\n{self.log.read_text()}") from None

    def pids(self, what: str) -> list[int]:
        """The pids run logged for its sidecars ("sidecar") or its app ("app"), in order."""
        return [int(p) for p in re.findall(rf"{what} (?:re)?started \(pid (\d+)\)", self.log.read_text())]

    def calls(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def registered(self) -> bool:
        return any(r["service"] == "frontend" and r["inbound_port"] == self.inbound_port for r in self.cp.sidecars())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(15)
        for pid in self.pids("sidecar") + self.pids("app"):  # (PDEATHSIG should have done it)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for r in started:
        r.stop()


def start(runs: list[Run], cp: ControlPlane, tmp: Path, mode: str, *source: str, extra: list[str] | None = None) -> Run:
    workdir = tmp / f"run{len(runs)}"
    workdir.mkdir()
    r = Run(cp, workdir, mode, extra or [])
    runs.append(r)
    return r.start(*source)


@pytest.mark.parametrize(("mode", "code"), [("exit:0", 0), ("exit:3", 3), ("kill-self", 128 + 9)])
def test_run_exits_with_the_apps_code_and_the_job_leaves_nothing_behind(
    cp: ControlPlane, pricing: HttpBackend, runs: list[Run], tmp_path: Path, mode: str, code: int
) -> None:
    """The app's first call through MESHCTL_UPSTREAM_PRICING gets its 200 (it would exit 99
    otherwise): it started once the sidecar was ready. Then run returns the app's code, and the
    sidecar is gone, its registration too (it drained and left the mesh)."""
    r = start(runs, cp, tmp_path, mode)
    assert r.wait() == code, r.log.read_text()
    env = dict(line.split("=", 1) for line in Path(f"{r.out}.env").read_text().splitlines())
    assert env["MESHCTL_UPSTREAM_PRICING"] == f"http://127.0.0.1:{r.upstream_port}"
    assert env["MESHCTL_SERVICE"] == "frontend" and env["HTTP_PROXY"] == env["http_proxy"]
    assert env["NO_PROXY"] == "localhost,127.0.0.1,::1" and "MESHCTL_TOKEN" not in env
    (sidecar,) = r.pids("sidecar")
    assert not alive(sidecar) and not alive(r.pids("app")[0])
    assert not r.registered()


def test_sigterm_reaches_the_app_and_the_sidecar_drains(
    cp: ControlPlane, pricing: HttpBackend, runs: list[Run], tmp_path: Path
) -> None:
    r = start(runs, cp, tmp_path, "serve")
    wait_until(lambda: "200" in r.calls(), timeout=60, what="the app's calls through its sidecar")
    assert r.registered()
    assert r.proc is not None
    r.proc.send_signal(signal.SIGTERM)
    assert r.wait() == 0, r.log.read_text()
    assert Path(f"{r.out}.term").read_text() == "SIGTERM"
    assert not alive(r.pids("sidecar")[0])
    assert not r.registered()


def test_a_sidecar_that_is_refused_exits_run_with_its_code_and_the_app_never_starts(
    cp: ControlPlane, pricing: HttpBackend, runs: list[Run], tmp_path: Path
) -> None:
    token = tmp_path / "bad-token"
    token.write_text("not-a-token")
    r = start(runs, cp, tmp_path, "exit:0", "--control-plane", cp.url, "--token-file", str(token))
    assert r.wait() == 2, r.log.read_text()
    assert "before it was ready: the app was not started" in r.log.read_text()
    assert r.pids("app") == [] and not Path(f"{r.out}.env").exists()


def test_a_killed_sidecar_is_restarted_and_the_app_keeps_running(
    cp: ControlPlane, pricing: HttpBackend, runs: list[Run], tmp_path: Path
) -> None:
    r = start(runs, cp, tmp_path, "serve")
    wait_until(lambda: "200" in r.calls(), timeout=60, what="the app's calls through its sidecar")
    (first,) = r.pids("sidecar")
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: len(r.pids("sidecar")) == 2, timeout=60, what="the sidecar's restart")
    seen = len(r.calls())
    wait_until(lambda: "200" in r.calls()[seen:], timeout=60, what="the app's calls to work again")
    app = r.pids("app")[0]
    assert alive(app) and len(r.pids("app")) == 1  # the same app all along
    assert "the sidecar exited (code 137)" in r.log.read_text()
    assert r.proc is not None
    r.proc.send_signal(signal.SIGINT)  # Ctrl-C: Python's KeyboardInterrupt ends the app by SIGINT
    assert r.wait() == 128 + signal.SIGINT, r.log.read_text()
    assert not any(alive(p) for p in r.pids("sidecar"))


def test_run_killed_takes_the_app_and_the_sidecar_with_it(
    cp: ControlPlane, pricing: HttpBackend, runs: list[Run], tmp_path: Path
) -> None:
    """PR_SET_PDEATHSIG: SIGKILL on run leaves no orphan: the app gets SIGTERM (and says so)."""
    r = start(runs, cp, tmp_path, "serve")
    wait_until(lambda: "200" in r.calls(), timeout=60, what="the app's calls through its sidecar")
    assert r.proc is not None
    r.proc.kill()
    r.proc.wait(15)
    term = Path(f"{r.out}.term")
    wait_until(term.exists, timeout=30, what="the app's SIGTERM")
    assert term.read_text() == "SIGTERM"
    wait_until(lambda: not any(alive(p) for p in r.pids("sidecar") + r.pids("app")), timeout=30, what="both to exit")


def test_file_fed_run_gives_the_files_outbound_listeners_to_the_app(
    cp: ControlPlane, pricing: HttpBackend, runs: list[Run], tmp_path: Path
) -> None:
    """--config: the same supervisor; MESHCTL_UPSTREAM_* from the file's `outbound/...` listeners
    (tcp ones as tcp://, another namespace's as NS_SVC)."""
    direct = HttpBackend("pricing-direct")
    try:
        config = {
            "listeners": [
                {
                    "name": "outbound/pricing",
                    "address": "127.0.0.1:0",
                    "protocol": "http",
                    "routes": [{"backends": [{"cluster": "p"}]}],
                },
                {
                    "name": "outbound/billing/db",
                    "address": "127.0.0.1:0",
                    "protocol": "tcp",
                    "backends": [{"cluster": "p"}],
                },
            ],
            "clusters": [{"name": "p", "endpoints": [{"address": direct.address}]}],
        }
        file = tmp_path / "dp.yaml"
        file.write_text(yaml.safe_dump(config))
        r = Run(cp, tmp_path, "exit:0")
        runs.append(r)
        app = tmp_path / "app.py"
        app.write_text(APP)
        cmd = [sys.executable, "-m", "meshctl", "run", "--config", str(file), "--service", "frontend", "--grace", "1"]
        cmd += ["--", sys.executable, str(app), "exit:0", str(r.out)]
        with r.log.open("w") as err:
            r.proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT)
        assert r.wait() == 0, r.log.read_text()
        assert len(direct.seen) == 1
        env = dict(line.split("=", 1) for line in Path(f"{r.out}.env").read_text().splitlines())
        assert env["MESHCTL_UPSTREAM_PRICING"].startswith("http://127.0.0.1:")
        assert env["MESHCTL_UPSTREAM_BILLING_DB"].startswith("tcp://127.0.0.1:")
        assert "HTTP_PROXY" not in env  # the file has no http-proxy listener
        assert not alive(r.pids("sidecar")[0])
    finally:
        direct.stop()


def test_a_second_sigint_kills_an_app_that_ignores_the_first(
    cp: ControlPlane, pricing: HttpBackend, runs: list[Run], tmp_path: Path
) -> None:
    r = start(runs, cp, tmp_path, "ignore-sigint")
    wait_until(lambda: "200" in r.calls(), timeout=60, what="the app's calls through its sidecar")
    assert r.proc is not None
    r.proc.send_signal(signal.SIGINT)
    wait_until(lambda: "SIGINT: passed on to the app" in r.log.read_text(), timeout=30, what="the first SIGINT")
    assert r.proc.poll() is None
    r.proc.send_signal(signal.SIGINT)
    assert r.wait() == 128 + signal.SIGKILL, r.log.read_text()
    assert not any(alive(p) for p in r.pids("sidecar") + r.pids("app"))


def test_a_sidecar_not_ready_in_time_is_stopped_and_the_app_never_starts(
    cp: ControlPlane, runs: list[Run], tmp_path: Path
) -> None:
    """No control plane answers: the sidecar waits for its identity; run gives up after --ready-timeout."""
    token = tmp_path / "token"
    token.write_text("whatever")
    nobody = f"http://127.0.0.1:{unused_port()}"
    source = ("--control-plane", nobody, "--token-file", str(token))
    r = start(runs, cp, tmp_path, "exit:0", *source, extra=["--ready-timeout", "2"])
    assert r.wait() == 1, r.log.read_text()
    assert "the sidecar was not ready within 2s" in r.log.read_text()
    assert r.pids("app") == [] and not any(alive(p) for p in r.pids("sidecar"))
