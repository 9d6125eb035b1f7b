"""Transparent interception across hosts (issue 15, item 4): a control plane
in the root namespace and three hosts made of network namespaces on a bridge
(client, web, db), each app under ``meshctl run --transparent``. The apps are
unchanged (curl, ``python -m http.server``, a TCP echo server): they call
``http://web/`` and ``db:5432`` by name, and the sidecars answer the names,
carry the calls over mTLS, and count them. The control plane is
REGISTRY_ONLY, so a destination outside the mesh is refused, except on the
client's excluded port, which bypasses the sidecar. Stopping ``run`` removes
its rules; a ``run`` killed with SIGKILL leaves them to ``meshctl iptables
--cleanup``. As root only (CI is)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_until
from meshproc import ControlPlane
from netns import Host, Network, require_root

ECHO = """
import socket, sys
s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    c, _ = s.accept()
    with c:
        data = c.recv(1024)
        c.sendall(b"echo:" + data)
"""

SLEEP = "import time; time.sleep(600)"

CALL_DB = """
import socket
with socket.create_connection(("db", 5432), timeout=5) as s:
    s.sendall(b"ping")
    print(s.recv(1024).decode())
"""


def proxy_user() -> list[str]:
    """The sidecar's user: uid 1337 (the default) when it may run this Python; else root with gid
    1337 (its traffic then passes by group), e.g. when Python lives under root's 0700 home."""
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import meshctl"], user=1337, group=1337, extra_groups=[], capture_output=True
        )
        ok = probe.returncode == 0
    except PermissionError:
        ok = False
    return [] if ok else ["--proxy-uid", "0", "--proxy-gid", "1337"]


class Run:
    """`meshctl run --transparent` on a host, for one service."""

    def __init__(self, host: Host, cp: ControlPlane, service: str, app_port: int, app: list[str], workdir: Path):
        self.host, self.service, self.admin_port = host, service, 15000
        token = workdir / f"{service}.token"
        token.write_text(cp.join_token(service))
        token.chmod(0o600)
        # The sidecar runs as uid 1337: its cache must be reachable by it (pytest's tmp is root's only).
        self.cache = Path(tempfile.mkdtemp(prefix=f"meshctl-tp-{service}-"))
        self.cache.chmod(0o755)
        self.log = workdir / f"run-{service}.log"
        cmd = [sys.executable, "-m", "meshctl", "run", "--transparent", "--service", service]
        cmd += ["--app-port", str(app_port), "--address", host.address, "--control-plane", cp.url]
        cmd += ["--token-file", str(token), "--admin-port", str(self.admin_port), "--cache-dir", str(self.cache)]
        cmd += ["--insecure"]  # (plain HTTP to the control plane across the bridge: a test network)
        cmd += ["--exclude-outbound-ports", "9999", "--exclude-inbound-ports", "22", *proxy_user(), "--", *app]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(host.cmd(*cmd), stdout=out, stderr=subprocess.STDOUT)

    def stats(self) -> dict[str, Any]:
        out = self.host.run("curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{self.admin_port}/stats")
        return dict(json.loads(out.stdout))

    def rules_in_place(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"run {self.service} exited {self.proc.returncode}:\n{self.log.read_text()}")
        return len(self.host.nat_rules()) > 0

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(30)
        shutil.rmtree(self.cache, ignore_errors=True)
        return code


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[dict[str, Any]]:
    require_root()
    with Network() as net:
        hosts = {role: net.add(role) for role in ("client", "web", "db")}
        (tmp_path / "cp").mkdir()
        cp = ControlPlane(
            tmp_path / "cp",
            args=("--host", net.gateway, "--insecure-http", "--outbound-policy", "REGISTRY_ONLY"),
            host=net.gateway,
        ).start()
        try:
            cp.apply(
                {"kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}},
                {"kind": "Service", "metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432, "protocol": "tcp"}]}},
                {"kind": "Service", "metadata": {"name": "client"}, "spec": {"ports": [{"port": 80}]}},
            )
            site = tmp_path / "site"
            site.mkdir()
            (site / "index.html").write_text("hello from web\n")
            serve = [sys.executable, "-m", "http.server", "8080", "--bind", "127.0.0.1", "--directory", str(site)]
            runs = {
                "web": Run(hosts["web"], cp, "web", 8080, serve, tmp_path),
                "db": Run(hosts["db"], cp, "db", 5432, [sys.executable, "-c", ECHO, "5432"], tmp_path),
                "client": Run(hosts["client"], cp, "client", 9, [sys.executable, "-c", SLEEP], tmp_path),
            }
            for run in runs.values():
                wait_until(run.rules_in_place, timeout=60, what=f"{run.service}'s app to start behind its sidecar")
            yield {"net": net, "hosts": hosts, "cp": cp, "runs": runs}
        finally:
            for run in locals().get("runs", {}).values():
                run.stop(signal.SIGKILL)
            cp.stop()


def curl(host: Host, url: str) -> subprocess.CompletedProcess[str]:
    return host.run("curl", "-sS", "--max-time", "5", url, check=False)


def test_unchanged_apps_talk_through_their_sidecars(mesh: dict[str, Any]) -> None:
    client, runs = mesh["hosts"]["client"], mesh["runs"]

    # By name, over mTLS: the web sidecar's inbound saw handshakes and no plaintext.
    out = wait_until(lambda: (r := curl(client, "http://web/")).returncode == 0 and r, timeout=30, what="http://web/")
    assert out.stdout == "hello from web\n"
    assert curl(client, "http://web.default/").stdout == "hello from web\n"
    inbound = runs["web"].stats()["listeners"]["inbound"]
    assert inbound["tls"]["handshakes"] >= 1 and inbound["tls"]["plaintext_accepted"] == 0
    assert inbound["requests"] >= 2

    # The client's sidecar counted the calls it carried (metrics), on its transparent listener.
    client_stats = runs["client"].stats()
    assert client_stats["listeners"]["transparent-outbound"]["connections"] >= 2

    # Outside the mesh: refused (REGISTRY_ONLY) and counted, except on the excluded port.
    net: Network = mesh["net"]
    outside, bypass = (
        subprocess.Popen(
            [sys.executable, "-m", "http.server", port, "--bind", net.gateway],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ("9998", "9999")
    )
    try:
        wait_until(lambda: curl(client, f"http://{net.gateway}:9999/").returncode == 0, timeout=15, what="the bypass")
        assert curl(client, f"http://{net.gateway}:9998/").returncode != 0
        egress = runs["client"].stats()["listeners"]["transparent-outbound"]["egress"]
        assert egress["denied"] >= 1 and egress["passthrough"] == 0
    finally:
        outside.kill()
        bypass.kill()


def test_a_tcp_service_by_name_and_port(mesh: dict[str, Any]) -> None:
    client, runs = mesh["hosts"]["client"], mesh["runs"]
    # Its app may still be starting (the fixture waits for the interception rules, which come
    # first): until it listens, the call is reset or closed empty.
    wait_until(
        lambda: client.run(sys.executable, "-c", CALL_DB, check=False).stdout.strip() == "echo:ping",
        timeout=30,
        what="db:5432 to echo",
    )
    assert runs["db"].stats()["listeners"]["inbound"]["tls"]["handshakes"] >= 1
    assert runs["client"].stats()["listeners"]["transparent-outbound"]["connections"] >= 1


def applied(run: Run) -> int:
    """The newest snapshot `run`'s sidecar applied from the control plane (-1: none yet)."""
    found = re.findall(r"snapshot (\d+) from control plane applied", run.log.read_text())
    return max(map(int, found), default=-1)


def test_a_change_reaches_every_sidecar_after_its_rules_went_in(mesh: dict[str, Any]) -> None:
    """Each sidecar's stream from the control plane was opened before `run` installed its rules:
    a change made now must reach every sidecar on it at once (the rules once redirected the
    stream's next packet, which cut it; the sidecar learned nothing until its 40 s idle timeout)."""
    cp: ControlPlane = mesh["cp"]
    runs: dict[str, Run] = mesh["runs"]
    before = {name: applied(run) for name, run in runs.items()}
    cp.apply({"kind": "Service", "metadata": {"name": "cache"}, "spec": {"ports": [{"port": 6379, "protocol": "tcp"}]}})
    wait_until(
        lambda: all(applied(run) > before[name] for name, run in runs.items()),
        timeout=15,
        what="every sidecar to apply the snapshot with the new service",
    )


def test_rules_go_with_run_and_leftovers_are_cleaned_up(mesh: dict[str, Any]) -> None:
    client, web = mesh["hosts"]["client"], mesh["hosts"]["web"]
    runs = mesh["runs"]
    # SIGTERM goes to the app (python sleeping: killed by it), then the sidecar drains; run exits
    # with the app's status, and its rules and route are gone.
    assert runs["client"].stop(signal.SIGTERM) == 128 + signal.SIGTERM
    assert client.nat_rules() == []
    assert "240.240.0.0/16" not in client.run("ip", "route").stdout

    # SIGKILL: nothing runs the removal; `meshctl iptables --cleanup` does.
    runs["web"].stop(signal.SIGKILL)
    assert web.nat_rules() != []
    out = web.run(sys.executable, "-m", "meshctl", "iptables", "--cleanup")
    assert "removed" in out.stdout
    assert web.nat_rules() == []
