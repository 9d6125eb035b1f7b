"""The transparent-interception rules (``meshctl.sidecar.iptables``): what
they say, and, as root in a network namespace made here, that installing
twice leaves one set, and that removing leaves nothing of ours (chains,
jumps, the VIP route) and nothing else touched."""

from __future__ import annotations

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
    assert out[-1] == "-A MESHCTL_OUTPUT -p tcp -j REDIRECT --to-ports 15001"
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
