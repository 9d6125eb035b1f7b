"""SPIFFE IDs: how the mesh names a service in its certificates. The CA signs
this name, sidecars ask for it, and peers and authorization rules expect it,
so it is built in one place. Shared by the control plane and the sidecar, so it
imports neither."""

from __future__ import annotations


def spiffe_id(trust_domain: str, namespace: str, service: str) -> str:
    """The identity of `service` in `namespace`: the only URI SAN of its SVID."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service}"
