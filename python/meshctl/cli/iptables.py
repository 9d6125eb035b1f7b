"""``meshctl iptables``: the transparent-interception rules of
``meshctl.sidecar.iptables``, by hand: print them (``--dry-run``), install
them for a sidecar started otherwise (as linkerd's proxy-init does, before the
app), or remove them (``--cleanup``: what a ``meshctl run --transparent``
killed with SIGKILL left behind). Its flags are ``meshctl run``'s
(:func:`add_interception_arguments`).

Parsed with argparse, as ``meshctl run`` is: they share the flags.
"""

from __future__ import annotations

import argparse

from meshctl.cli import helptext
from meshctl.sidecar.iptables import PROXY_ID, Interception, InterceptionError, install, remove

HELP = (
    "Install the NAT rules that send an app's TCP traffic and DNS queries through its sidecar in this network"
    " namespace (root or CAP_NET_ADMIN), print them (--dry-run), or remove them (--cleanup). `meshctl run"
    " --transparent` installs and removes them itself."
)


def _ports(text: str) -> tuple[int, ...]:
    try:
        ports = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ports separated by commas, got {text!r}") from None
    if any(not 0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"not a port in {text!r}")
    return ports


def _cidrs(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def add_interception_arguments(group: argparse._ActionsContainer) -> None:
    """The flags that shape the rules: `meshctl iptables` and `meshctl run --transparent`."""
    group.add_argument("--outbound-port", type=int, default=15001, help="The sidecar's transparent outbound port.")
    group.add_argument("--dns-port", type=int, default=15053, help="The sidecar's DNS answerer (UDP).")
    group.add_argument("--no-dns", action="store_true", help="Leave DNS queries alone.")
    group.add_argument(
        "--proxy-uid", type=int, default=PROXY_ID, help="The sidecar's uid: its traffic is not redirected."
    )
    group.add_argument(
        "--proxy-gid", type=int, default=PROXY_ID, help="The sidecar's gid: its traffic is not redirected."
    )
    group.add_argument(
        "--exclude-outbound-ports", type=_ports, default=None, metavar="PORT,...", help="Outbound ports not redirected."
    )
    group.add_argument(
        "--exclude-inbound-ports", type=_ports, default=None, metavar="PORT,...", help="Inbound ports not redirected."
    )
    group.add_argument(
        "--exclude-outbound-cidrs",
        type=_cidrs,
        metavar="CIDR,...",
        help="Destinations not redirected (IPv4 networks).",
    )
    group.add_argument("--no-inbound", action="store_true", help="Redirect only what the app sends.")


def interception(args: argparse.Namespace, *, inbound_port: int) -> Interception:
    """The rules the flags of `add_interception_arguments` ask for (ValueError when they cannot be)."""
    return Interception(
        outbound_port=args.outbound_port,
        inbound_port=inbound_port,
        dns_port=None if args.no_dns else args.dns_port,
        proxy_uid=args.proxy_uid,
        proxy_gid=args.proxy_gid,
        exclude_outbound_ports=args.exclude_outbound_ports or (),
        exclude_inbound_ports=args.exclude_inbound_ports or (),
        exclude_outbound_cidrs=args.exclude_outbound_cidrs or (),
        inbound=not args.no_inbound,
    )


def parser() -> argparse.ArgumentParser:
    p = helptext.argparse_parser("meshctl iptables", HELP)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--cleanup", action="store_true", help="Remove every rule and chain of ours, and exit.")
    what.add_argument("--dry-run", action="store_true", help="Print the rules (iptables-restore input) and exit.")
    p.add_argument("--inbound-port", type=int, default=15006, help="The sidecar's inbound listener.")
    add_interception_arguments(p)
    return p


def main(argv: list[str]) -> int:
    """0 when done; 1 when iptables refused or is missing; 2 for bad flags."""
    p = parser()
    args = p.parse_args(argv)
    try:
        if args.cleanup:
            gone = remove()
            print(f"removed {len(gone)} rules and chains" if gone else "nothing of ours to remove")
            return 0
        rules = interception(args, inbound_port=args.inbound_port)
        if args.dry_run:
            print("\n".join(rules.rules()))
            return 0
        install(rules)
    except ValueError as e:
        p.error(str(e))
    except InterceptionError as e:
        print(f"meshctl iptables: {e}")
        return 1
    print("installed; `meshctl iptables --cleanup` removes them")
    return 0
