"""Hosts for multi-host tests: network namespaces made by the test, each with
its own address on a bridge in the root namespace (which reaches them all at
the bridge's address), loopback up, a default route through the bridge and
its own ``/etc/netns/<name>/resolv.conf`` (``ip netns exec`` mounts it over
``/etc/resolv.conf``; :meth:`Host.etc` puts more files there, such as its
own ``hosts``). Everything is removed at exit, processes first.

Needs root (CI runs as root); :func:`require_root` skips otherwise."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import wait_until


def require_root(tools: tuple[str, ...] = ("iptables",)) -> None:
    """Skip unless root with iproute2, curl (`Host.curl`) and `tools` (those the test uses)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    for tool in ("curl", *tools):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done


@dataclass
class Host:
    name: str
    address: str

    def cmd(self, *args: str) -> list[str]:
        """`args` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.cmd(*args), capture_output=True, text=True, check=False, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{self.name}: {' '.join(args)} -> {done.returncode}: {done.stderr.strip()}")
        return done

    def curl(self, url: str, *args: str, timeout: float = 5) -> tuple[int, str]:
        """(status, body) of `curl URL` from this host; status 0 when nothing answered over HTTP."""
        out = self.run(
            "curl", "-sS", "--max-time", str(timeout), *args, "-o", "-", "-w", "\n%{http_code}", url, check=False
        )
        body, _, code = out.stdout.rpartition("\n")
        return int(code or 0), body

    def etc(self, filename: str) -> Path:
        """Where this host's own /etc/`filename` is kept: `ip netns exec` bind-mounts it over the
        root's (only when it exists as a command starts: write it before; edit it in place after)."""
        return Path("/etc/netns") / self.name / filename

    def nat_rules(self) -> list[str]:
        """Our interception rules in this namespace (`meshctl.sidecar.iptables`'s chains)."""
        return [line for line in self.run("iptables", "-t", "nat", "-S").stdout.splitlines() if "MESHCTL" in line]

    def pids(self) -> list[int]:
        return [int(p) for p in sh("ip", "netns", "pids", self.name, check=False).stdout.split()]


@dataclass
class Network:
    """A bridge at 10.<n>.0.1/24 and hosts at .2, .3, ..."""

    hosts: list[Host] = field(default_factory=list)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    subnet: int = field(default_factory=lambda: 200 + os.getpid() % 50)

    @property
    def bridge(self) -> str:
        return f"mbr{self.tag}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge."""
        return f"10.{self.subnet}.0.1"

    def __enter__(self) -> Network:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        return self

    def add(self, role: str) -> Host:
        index = len(self.hosts) + 2
        host = Host(f"m{role[:5]}{self.tag}", f"10.{self.subnet}.0.{index}")
        self.hosts.append(host)
        veth, peer = f"mv{self.tag}{index}", f"mp{self.tag}{index}"
        sh("ip", "netns", "add", host.name)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", host.name)
        sh("ip", "link", "set", veth, "master", self.bridge)
        sh("ip", "link", "set", veth, "up")
        host.run("ip", "link", "set", "lo", "up")
        host.run("ip", "addr", "add", f"{host.address}/24", "dev", peer)
        host.run("ip", "link", "set", peer, "up")
        host.run("ip", "route", "add", "default", "via", self.gateway)
        resolv = host.etc("resolv.conf")
        resolv.parent.mkdir(parents=True, exist_ok=True)
        # No search domains: a mesh name is asked as it is. The server is never reached: the
        # sidecar's answerer takes every query (and fails what it cannot answer).
        resolv.write_text(f"nameserver {self.gateway}\noptions timeout:1 attempts:1\n")
        return host

    def __exit__(self, *_: object) -> None:
        for host in self.hosts:
            for pid in host.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(lambda h=host: not h.pids(), timeout=10, what=f"{host.name}'s processes to end")
            sh("ip", "netns", "del", host.name, check=False)
            shutil.rmtree(host.etc(""), ignore_errors=True)
        sh("ip", "link", "del", self.bridge, check=False)
