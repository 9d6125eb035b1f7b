"""Transparent interception without Kubernetes: the NAT rules that send an
unchanged app's TCP traffic (and DNS queries) through its sidecar, as
istio-iptables and linkerd's proxy-init install them in a pod.

In the app's network namespace, in the ``nat`` table:

- ``MESHCTL_INBOUND`` (from PREROUTING): TCP arriving from other hosts is
  redirected to the sidecar's inbound listener (mTLS, authorization), except
  to the excluded inbound ports;
- ``MESHCTL_OUTPUT`` (from OUTPUT): TCP the app opens is redirected to the
  sidecar's transparent outbound listener, which reads the original
  destination back (SO_ORIGINAL_DST) and maps it to a mesh service or an
  external service, or applies the egress policy. Loopback, the excluded
  ports and CIDRs, and everything the sidecar itself sends (its uid or gid,
  by owner match: the sidecar runs as a user of its own) pass untouched;
- ``MESHCTL_DNS`` (from OUTPUT): UDP queries to port 53 go to the sidecar's
  DNS answerer, which answers mesh names with their virtual addresses and
  forwards the rest (loopback resolvers included).

Only connections opened after the rules are redirected (see `OPENING`): one
open before keeps going where it went. IPv4 only. The rules live in chains
of our own, so that removing them is exact: ``remove`` deletes our jumps
and chains and nothing else, and ``meshctl iptables --cleanup`` does the
same for rules a killed ``meshctl run`` left behind. Installing goes through
one ``iptables-restore --noflush`` so a mistake leaves nothing half-installed.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Our chains, and the built-in chain each is jumped to from.
CHAINS = {"MESHCTL_INBOUND": "PREROUTING", "MESHCTL_OUTPUT": "OUTPUT", "MESHCTL_DNS": "OUTPUT"}
#: The uid and gid the sidecar runs as by default (Istio's).
PROXY_ID = 1337
#: Where the control plane puts mesh services' virtual addresses (`meshctl.control.vips`): always
#: redirected, even when routed through loopback (the route `install` adds when there is none).
VIP_NETWORK = "240.240.0.0/16"
#: What a redirect matches: a connection's opening packet only. Connection tracking starts in a
#: namespace with its first NAT rule, and takes up a connection open before then at whatever
#: packet comes next (nf_conntrack_tcp_loose); redirecting that one would cut the connection
#: (the sidecar's own stream from the control plane, opened before `run` installs the rules, was
#: cut so, and missed every snapshot until it timed out). Matched on the SYN, such a connection
#: keeps its path; the NAT table sees only a connection's first packet anyway.
OPENING = "-p tcp --syn"


class InterceptionError(Exception):
    """The rules cannot be installed or removed here (the message says what is missing)."""


@dataclass(frozen=True)
class Interception:
    outbound_port: int = 15001
    inbound_port: int = 15006
    #: The sidecar's DNS answerer (None: DNS is left alone).
    dns_port: int | None = 15053
    #: Traffic of this uid (the sidecar's) is not redirected; 0 (root) is never excluded by uid.
    proxy_uid: int = PROXY_ID
    #: ... nor that of this gid.
    proxy_gid: int | None = PROXY_ID
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_cidrs: tuple[str, ...] = ()
    #: Redirect inbound TCP at all (False: only what the app sends goes through the sidecar).
    inbound: bool = True

    def __post_init__(self) -> None:
        for name in ("outbound_port", "inbound_port", "dns_port"):
            port = getattr(self, name)
            if port is not None and not 0 < port < 65536:
                raise ValueError(f"{name}: {port} is not a port")
        for port in (*self.exclude_outbound_ports, *self.exclude_inbound_ports):
            if not 0 < port < 65536:
                raise ValueError(f"excluded port {port} is not a port")
        for cidr in self.exclude_outbound_cidrs:
            try:
                if ipaddress.ip_network(cidr, strict=False).version != 4:
                    raise ValueError
            except ValueError:
                raise ValueError(f"excluded CIDR {cidr!r} is not an IPv4 network") from None

    def _owner(self) -> list[str]:
        """The rules that let the sidecar's own traffic pass."""
        out = []
        if self.proxy_uid != 0:  # excluding root would exclude every root app
            out.append(f"-m owner --uid-owner {self.proxy_uid} -j RETURN")
        if self.proxy_gid is not None and self.proxy_gid != 0:
            out.append(f"-m owner --gid-owner {self.proxy_gid} -j RETURN")
        if not out:
            raise ValueError("the sidecar needs a uid or gid of its own (not 0) for its traffic to pass")
        return out

    def rules(self) -> list[str]:
        """The `iptables-restore` lines (table nat) that install the interception."""
        lines = ["*nat", *(f":{chain} - [0:0]" for chain in CHAINS)]
        if self.inbound:
            lines.append("-A PREROUTING -p tcp -j MESHCTL_INBOUND")
            lines += [f"-A MESHCTL_INBOUND -p tcp --dport {p} -j RETURN" for p in self.exclude_inbound_ports]
            lines.append(f"-A MESHCTL_INBOUND {OPENING} -j REDIRECT --to-ports {self.inbound_port}")
        lines.append("-A OUTPUT -p tcp -j MESHCTL_OUTPUT")
        out = [
            *self._owner(),
            f"-o lo ! -d {VIP_NETWORK} -j RETURN",
            *(f"-d {c} -j RETURN" for c in self.exclude_outbound_cidrs),
            *(f"-p tcp --dport {p} -j RETURN" for p in self.exclude_outbound_ports),
            f"{OPENING} -j REDIRECT --to-ports {self.outbound_port}",
        ]
        lines += [f"-A MESHCTL_OUTPUT {r}" for r in out]
        if self.dns_port is not None:
            lines.append("-A OUTPUT -p udp --dport 53 -j MESHCTL_DNS")
            dns = [*self._owner(), f"-p udp -j REDIRECT --to-ports {self.dns_port}"]
            lines += [f"-A MESHCTL_DNS {r}" for r in dns]
        return [*lines, "COMMIT"]


def _iptables(tool: str = "iptables") -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        raise InterceptionError(f"{tool} is not installed (Debian: apt-get install iptables)")
    return path


def _run(args: Sequence[str], *, stdin: str | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = done.stderr.strip() or f"exit code {done.returncode}"
        if "Permission denied" in why or "you must be root" in why:
            why += " (transparent mode needs root or CAP_NET_ADMIN in the app's network namespace)"
        raise InterceptionError(f"{' '.join(args[:3])}: {why}")
    return done.stdout


def install(rules: Interception) -> None:
    """Install `rules` in this network namespace, replacing any of ours already there; and a
    route for the virtual addresses when none leads there (a connect to one must not fail with
    "network unreachable" before the rules see it)."""
    remove()
    _run([_iptables("iptables-restore"), "--noflush"], stdin="\n".join(rules.rules()) + "\n")
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    probe = VIP_NETWORK.split("/")[0]
    if ip and subprocess.run([ip, "route", "get", probe], capture_output=True, check=False).returncode != 0:
        _run([ip, "route", "add", *_VIP_ROUTE])


def installed() -> list[str]:
    """Our rules in this network namespace, as `iptables -t nat -S` prints them."""
    lines = _run([_iptables(), "-t", "nat", "-S"]).splitlines()
    return [line for line in lines if "MESHCTL_" in line]


#: The route `install` adds (and `remove` takes away): its protocol number marks it as ours.
_VIP_ROUTE = (VIP_NETWORK, "dev", "lo", "proto", "252")


def remove() -> list[str]:
    """Remove our jumps, chains and route from this network namespace; the rules removed."""
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    if ip:  # (absent when we added none: nothing to say)
        subprocess.run([ip, "route", "del", *_VIP_ROUTE], capture_output=True, check=False)
    gone = installed()
    jumps = [line for line in gone if line.startswith("-A ") and line.split()[1] in set(CHAINS.values())]
    for line in jumps:
        _run([_iptables(), "-t", "nat", "-D", *line.split()[1:]])
    for verb in ("-F", "-X"):
        for chain in _ours(gone):
            _run([_iptables(), "-t", "nat", verb, chain])
    return gone


def _ours(lines: Iterable[str]) -> list[str]:
    """The chains of ours that `lines` (`iptables -S` output) declare."""
    return [line.split()[1] for line in lines if line.startswith("-N MESHCTL_")]
