"""Transparent interception, data plane only: in a host of tests/netns.py, iptables
REDIRECTs outbound TCP (except the proxy's own uid) to a transparent listener, which serves each
connection as the listener whose address is its original destination (an unbound http listener on
a VIP, an unbound tcp listener), and applies its egress policy to destinations no listener has.
Needs root, ``ip netns``, iptables and setpriv."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import wait_until
from netns import Host, Network, require_root

PROXY_UID = 1337
PORT = 15001
ADMIN = "127.0.0.1:15000"


@dataclass
class Namespace:
    """A host of tests/netns.py and the processes the test started in it."""

    host: Host
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.host.run(*cmd, check=check, timeout=60)

    def start(self, *cmd: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        err = log.open("wb") if log else subprocess.DEVNULL
        p = subprocess.Popen(self.host.cmd(*cmd), stdout=subprocess.DEVNULL, stderr=err)
        self.procs.append(p)
        return p

    def curl(self, url: str) -> tuple[int, str]:
        return self.host.curl(url, timeout=10)

    def stats(self) -> dict[str, Any]:
        code, body = self.curl(f"http://{ADMIN}/stats")
        assert code == 200, body
        stats: dict[str, Any] = json.loads(body)
        return stats


@pytest.fixture
def netns() -> Iterator[Namespace]:
    require_root(tools=("iptables", "setpriv"))
    with Network() as net:
        ns = Namespace(net.add("tproxy"))
        # An address outside every listener, with a server behind it, for passthrough.
        ns.run("ip", "addr", "add", "10.77.0.1/32", "dev", "lo")
        ns.run(
            "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "!", "-d", "127.0.0.0/8",
            "-m", "owner", "!", "--uid-owner", str(PROXY_UID), "-j", "REDIRECT", "--to-ports", str(PORT),
        )  # fmt: skip
        try:
            yield ns
        finally:
            for p in ns.procs:  # (stopped gently first: the network kills what is left)
                if p.poll() is None:
                    p.terminate()
            for p in ns.procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def config(policy: str) -> dict[str, Any]:
    return {
        "admin": {"address": ADMIN},
        "listeners": [
            {
                "name": "transparent-outbound",
                "address": f"127.0.0.1:{PORT}",
                "protocol": "transparent",
                "egress": {"policy": policy},
            },
            {
                "name": "vip-http",
                "address": "240.240.0.9:80",
                "bind": False,
                "routes": [{"backends": [{"cluster": "web"}]}],
            },
            {"name": "vip-tcp", "address": "240.240.0.10:5432", "bind": False, "protocol": "tcp", "cluster": "web"},
        ],
        "clusters": [{"name": "web", "endpoints": [{"address": "127.0.0.1:8080"}]}],
    }


def test_transparent_listener_serves_unbound_listeners_and_applies_egress(netns: Namespace) -> None:
    # Readable by the proxy's uid (pytest's tmp_path is private to root).
    directory = Path(tempfile.mkdtemp(prefix="meshctl-transparent-"))
    try:
        directory.chmod(0o755)
        (directory / "index.html").write_text("hello from the backend\n")
        conf = directory / "dataplane.yaml"
        conf.write_text(yaml.safe_dump(config("registry_only")))
        conf.chmod(0o644)
        log = directory / "proxy.log"
        for address in ("127.0.0.1", "10.77.0.1"):
            netns.start(sys.executable, "-m", "http.server", "--bind", address, "--directory", str(directory), "8080")
        proxy = netns.start(
            "setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups",
            sys.executable, "-m", "meshctl", "proxy", "--config", str(conf), log=log,
        )  # fmt: skip
        wait_until(lambda: netns.curl(f"http://{ADMIN}/ready")[0] == 200, timeout=60, what="the proxy ready")
        # Both backends answer (10.77.0.1 asked as the proxy's uid, which is not redirected).
        as_proxy = ("setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups", "curl", "-s")
        for url in ("http://127.0.0.1:8080/", "http://10.77.0.1:8080/"):
            wait_until(lambda u=url: netns.run(*as_proxy, u, check=False).returncode == 0, timeout=30, what=url)

        code, body = netns.curl("http://240.240.0.9/index.html")
        assert (code, body) == (200, "hello from the backend\n")
        code, body = netns.curl("http://240.240.0.10:5432/index.html")
        assert (code, body) == (200, "hello from the backend\n")
        stats = netns.stats()["listeners"]
        assert stats["vip-http"]["requests"] == 1 and stats["vip-http"]["connections"] == 1
        assert stats["vip-tcp"]["connections"] == 1
        assert stats["transparent-outbound"]["connections"] == 2

        # No listener for 10.77.0.1:8080: registry_only closes, allow_any passes through.
        assert netns.curl("http://10.77.0.1:8080/index.html")[0] == 0
        assert netns.stats()["listeners"]["transparent-outbound"]["egress"]["denied"] == 1
        conf.write_text(yaml.safe_dump(config("allow_any")))
        version = netns.stats()["version"]
        proxy.send_signal(signal.SIGHUP)
        wait_until(lambda: netns.stats()["version"] > version, timeout=30, what="the config reloaded")
        code, body = netns.curl("http://10.77.0.1:8080/index.html")
        assert (code, body) == (200, "hello from the backend\n")
        egress = netns.stats()["listeners"]["transparent-outbound"]["egress"]
        assert egress == {"denied": 1, "passthrough": 1, "tunnelled": 0}
    finally:
        # Shown by pytest when the test fails.
        if (directory / "proxy.log").exists():
            print((directory / "proxy.log").read_text())
        shutil.rmtree(directory, ignore_errors=True)
