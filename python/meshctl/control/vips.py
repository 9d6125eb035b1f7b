"""Virtual IPs for transparent mode: each Service ("ns/name") and each exact
ExternalService host gets an address in 240.240.0.0/16 (class E, never routed
on the Internet; the sidecar's iptables rules send it to the sidecar).

A key's address is where the SHA-256 of the key points, so it stays the same
while the mesh changes around it. Two keys pointing at the same address are
settled in key order: the first keeps it, the next probes the following ones.
So adding a key moves another only when they collide, which 65,534 slots make
rare; apps resolve names again at the DNS TTL anyway.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable

NETWORK = ipaddress.IPv4Network("240.240.0.0/16")
#: Host numbers 1 .. 65534: the network's first and last addresses are left out.
_SLOTS = NETWORK.num_addresses - 2


def _slot(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % _SLOTS


def allocate(keys: Iterable[str]) -> dict[str, str]:
    """key -> its VIP (dotted quad), for every key given (at most 65,534 of them)."""
    ordered = sorted(set(keys))
    if len(ordered) > _SLOTS:
        raise ValueError(f"{len(ordered)} keys: at most {_SLOTS} VIPs")
    taken: set[int] = set()
    out: dict[str, str] = {}
    for key in ordered:
        slot = _slot(key)
        while slot in taken:
            slot = (slot + 1) % _SLOTS
        taken.add(slot)
        out[key] = str(NETWORK.network_address + 1 + slot)
    return out
