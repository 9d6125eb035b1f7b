"""The transparent-interception rules (``meshctl.sidecar.iptables``): what
they say, and, as root in a network namespace made here, that installing
twice leaves one set, that removing leaves nothing of ours (chains,
jumps, the VIP route) and nothing else touched, and that a connection open
before the rules keeps its path while new ones are redirected."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from meshctl.sidecar.iptables import Interception
from netns import Network, require_root


def test_rules_exclude_the_sidecar_loopback_ports_and_cidrs() -> None:
    rules = Interception(
        exclude_outbound_ports=(22,),
        exclude_inbound_ports=(2222,),
        exclude_outbound_cidrs=("10.0.0.0/8",),
    ).rules()
    out = [r for r in rules if r.startswith("-A MESHCTL_OUTPUT")]
    # Exclusions come before the redirect, which is last.
    assert out[-1] == "-A MESHCTL_OUTPUT -p tcp --syn -j REDIRECT --to-ports 15001"
    for rule in (
        "-m owner --uid-owner 1337 -j RETURN",
        "-m owner --gid-owner 1337 -j RETURN",
        "-o lo ! -d 240.240.0.0/16 -j RETURN",
        "-d 10.0.0.0/8 -j RETURN",
        "-p tcp --dport 22 -j RETURN",
    ):
        assert f"-A MESHCTL_OUTPUT {rule}" in out[:-1]
    assert "-A MESHCTL_INBOUND -p tcp --dport 2222 -j RETURN" in rules
    assert rules[-1] == "COMMIT" and "-A MESHCTL_DNS -p udp -j REDIRECT --to-ports 15053" in rules


def test_root_is_excluded_by_group_only_and_bad_values_are_refused() -> None:
    rules = Interception(proxy_uid=0, proxy_gid=1337, dns_port=None, inbound=False).rules()
    assert not any("--uid-owner" in r for r in rules)  # excluding uid 0 would exclude every root app
    assert not any("MESHCTL_DNS" in r or "PREROUTING" in r for r in rules[4:])
    with pytest.raises(ValueError, match="uid or gid of its own"):
        Interception(proxy_uid=0, proxy_gid=0).rules()
    with pytest.raises(ValueError, match="not an IPv4 network"):
        Interception(exclude_outbound_cidrs=("fd00::/8",))
    with pytest.raises(ValueError, match="not a port"):
        Interception(exclude_outbound_ports=(0,))


def test_install_twice_then_cleanup_leaves_nothing_of_ours() -> None:
    require_root()
    with Network() as net:
        host = net.add("ipt")
        host.run("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "7", "-j", "RETURN")  # not ours
        before = host.run("iptables", "-t", "nat", "-S").stdout

        meshctl = [sys.executable, "-m", "meshctl", "iptables"]
        for _ in range(2):
            host.run(*meshctl, "--exclude-outbound-ports", "22")
        assert len(host.nat_rules()) == 15  # three chains, three jumps, nine rules: once
        assert "240.240.0.0/16" not in host.run("ip", "route").stdout  # the default route leads there
        host.run(*meshctl, "--cleanup")
        host.run("ip", "route", "del", "default")
        host.run(*meshctl, "--exclude-outbound-ports", "22")
        assert "240.240.0.0/16" in host.run("ip", "route").stdout  # without it, one through loopback

        out = host.run(*meshctl, "--cleanup").stdout
        assert "removed 15" in out
        assert host.nat_rules() == []
        assert host.run("iptables", "-t", "nat", "-S").stdout == before
        assert "240.240.0.0/16" not in host.run("ip", "route").stdout
        assert "nothing of ours" in host.run(*meshctl, "--cleanup").stdout


#: In the namespace: connect to the root namespace, say when connected, then echo one line back.
EARLY = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print("connected", flush=True)
s.sendall(b"echo:" + s.recv(100))
print("sent", flush=True)
"""

#: In the namespace, on the inbound port: what a redirected connection reaches.
INBOUND = """
import socket
s = socket.create_server(("0.0.0.0", 15006))
print("listening", flush=True)
c, _ = s.accept()
c.sendall(b"redirected")
"""


def test_a_connection_open_before_the_rules_keeps_its_path() -> None:
    """Found with `meshctl run --transparent`: the sidecar's stream from the control plane, opened
    before the rules, stopped receiving when they went in (conntrack took the connection up at its
    next packet and the inbound rule redirected it), so the sidecar missed every snapshot until
    the stream timed out. Here: an app connection open before the rules carries data both ways
    after them (inbound, then outbound: the app is no sidecar, no owner rule lets it pass), and
    a connection opened after them is redirected."""
    require_root()
    with Network() as net, socket.create_server((net.gateway, 0)) as server:
        host = net.add("ipt")
        server.settimeout(10)
        port = server.getsockname()[1]
        early = subprocess.Popen(
            host.cmd(sys.executable, "-c", EARLY, net.gateway, str(port)), stdout=subprocess.PIPE, text=True
        )
        inbound = subprocess.Popen(host.cmd(sys.executable, "-c", INBOUND), stdout=subprocess.PIPE, text=True)
        try:
            assert early.stdout is not None and inbound.stdout is not None
            conn, _ = server.accept()
            assert early.stdout.readline().strip() == "connected"
            assert inbound.stdout.readline().strip() == "listening"
            host.run(sys.executable, "-m", "meshctl", "iptables")  # (nothing listens on 15001)

            with conn:
                conn.settimeout(10)
                conn.sendall(b"ping")
                assert conn.recv(100) == b"echo:ping"
            assert early.wait(10) == 0

            # A new connection to any port of the host reaches the inbound port instead.
            with socket.create_connection((host.address, 8080), timeout=10) as new:
                assert new.recv(100) == b"redirected"
        finally:
            for proc in (early, inbound):
                proc.kill()
                proc.wait()
