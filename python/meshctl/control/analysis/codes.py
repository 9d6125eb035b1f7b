"""The catalogue of checks: one stable code per thing ``check`` looks at, with
the category it is shown under, its severity, what passing means (the line a
passing check prints) and a generic fix hint (findings may give a sharper one).

Codes never change meaning and are never reused. MC00xx are the CLI's own
checks (it reaches the control plane, its token works, versions agree); the
others come from the control plane's analysis. Severity is fixed per code:
where a condition has tiers (an SVID close to expiry, or expired) each tier
has its code.

Standard library only: the CLI imports this without the control plane."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]

#: Categories in the order they are shown, with their headings.
CATEGORIES = {
    "control-plane": "control plane",
    "sidecars": "sidecars",
    "identity": "identity",
    "routes": "routes",
    "resources": "resources and policies",
}


@dataclass(frozen=True)
class Check:
    code: str
    category: str
    severity: Severity
    #: What holds when the check passes ("sidecars run the current config").
    title: str
    #: How to fix a finding, in general.
    hint: str


CHECKS = (
    # --- the CLI's own (client side) ---
    Check(
        "MC0001",
        "control-plane",
        "error",
        "the control plane answers",
        "start it (meshctl control-plane), or point --server / $MESHCTL_SERVER at it",
    ),
    Check(
        "MC0002",
        "control-plane",
        "error",
        "the API token is accepted",
        "give a valid admin or reader token (--token, --token-file, $MESHCTL_TOKEN); "
        "expired and revoked ones are refused",
    ),
    Check(
        "MC0003",
        "control-plane",
        "error",
        "the API token may read the mesh",
        "use an admin or reader token: a join token only acts for its service's sidecars",
    ),
    Check(
        "MC0004",
        "control-plane",
        "warning",
        "the CLI and the control plane run the same meshctl version",
        "install the control plane's meshctl version for the CLI (pip install meshctl==VERSION), or upgrade both",
    ),
    # --- sidecars ---
    Check(
        "MC0101",
        "sidecars",
        "error",
        "no sidecar refuses the mesh's config",
        "read the error (meshctl status), fix the resource that compiled to it and apply again",
    ),
    Check(
        "MC0102",
        "sidecars",
        "error",
        "sidecars run the current config",
        "look at the sidecar's log: it may be unable to reach the control plane, or be stuck; restart it",
    ),
    Check(
        "MC0103",
        "sidecars",
        "warning",
        "sidecars run the control plane's meshctl version",
        "upgrade the sidecar's meshctl to the control plane's version and restart it",
    ),
    Check(
        "MC0104",
        "sidecars",
        "error",
        "no sidecar joined with a revoked join token",
        "stop that sidecar (its SVID is no longer renewed), or give it a new join token and restart it",
    ),
    Check(
        "MC0105",
        "sidecars",
        "info",
        "no live sidecar runs on an expired join token",
        "nothing to do for it: an expired join token keeps serving the sidecars that joined with it until "
        "it is revoked, but joins no new instance (meshctl token create makes one for those); to retire "
        "the old token, give its sidecars a new one, restart them, then meshctl token revoke it",
    ),
    # --- identity ---
    Check(
        "MC0201",
        "identity",
        "error",
        "no live sidecar serves with an expired SVID",
        "the sidecar could not renew: check that it reaches the control plane and that its join token is valid",
    ),
    Check(
        "MC0202",
        "identity",
        "warning",
        "SVIDs are renewed on time",
        "sidecars renew at ~70% of an SVID's life: one this close to expiry failed to renew; read its log",
    ),
    Check(
        "MC0203",
        "identity",
        "error",
        "the CA's root and issuer certificates are valid",
        "rotate to a new root (meshctl ca rotate start), or replace the CA files and restart the control plane",
    ),
    Check(
        "MC0204",
        "identity",
        "warning",
        "the CA's root and issuer certificates do not expire within 30 days",
        "rotate to a new root before then (meshctl ca rotate start)",
    ),
    Check(
        "MC0205",
        "identity",
        "warning",
        "a root rotation is not stuck waiting for sidecars",
        "the sidecars that have not ACKed the new bundle are behind or gone: fix or stop them, or force activation",
    ),
    Check(
        "MC0206",
        "identity",
        "info",
        "no root rotation is ready for its next step",
        "run the rotation's next step (meshctl ca rotate activate, or finish)",
    ),
    Check(
        "MC0207",
        "identity",
        "warning",
        "no finished-with root is still trusted",
        "finish the rotation (meshctl ca rotate finish): the old root is still in every sidecar's trust bundle",
    ),
    # --- routes ---
    Check(
        "MC0301",
        "routes",
        "warning",
        "no HTTPRoute rule is shadowed by earlier rules",
        "make the rule's matches more specific than the earlier rule's, or remove one of them; rules are tried "
        "exact paths first, then regular expressions, longer prefixes, a method, more headers, more query "
        "params, then the older route, the route's name and the order in the route",
    ),
    Check(
        "MC0302",
        "routes",
        "warning",
        "each TCP service has at most one TCPRoute",
        "delete the extra TCPRoute, or merge its backends into the one in use (the oldest)",
    ),
    Check(
        "MC0303",
        "routes",
        "warning",
        "routes attach to services of their protocol",
        "attach HTTPRoutes to http/http2/grpc services and TCPRoutes to tcp services (the service's first port)",
    ),
    Check(
        "MC0304",
        "routes",
        "warning",
        "routes send to services with live endpoints",
        "start sidecars for the service (meshctl proxy --control-plane ... with its join token), or change the route",
    ),
    Check(
        "MC0305",
        "routes",
        "warning",
        "backend subsets match live endpoints",
        "fix the subset's labels, or start sidecars with those labels (--label key=value)",
    ),
    # --- resources and policies ---
    Check(
        "MC0401",
        "resources",
        "error",
        "every resource a resource names exists",
        "create the missing resource, or fix or delete the one naming it",
    ),
    Check(
        "MC0402",
        "resources",
        "error",
        "every Gateway listener a route names exists",
        "fix the route's sectionName, or add the listener to the Gateway",
    ),
    Check(
        "MC0403",
        "resources",
        "error",
        "every stored resource is valid",
        "apply a corrected version of the resource (meshctl get KIND NAME -o yaml, fix, apply -f)",
    ),
    Check(
        "MC0404",
        "resources",
        "warning",
        "services take only mutual TLS (STRICT)",
        "set mtls: STRICT once every caller has a sidecar: PERMISSIVE also takes plaintext callers, "
        "whom no AuthorizationPolicy source matches",
    ),
)
BY_CODE = {c.code: c for c in CHECKS}
assert len(BY_CODE) == len(CHECKS), "a code is used twice"
assert all(c.category in CATEGORIES for c in CHECKS)
#: The checks the control plane runs (the others are the CLI's).
SERVER_CODES = tuple(c.code for c in CHECKS if c.category != "control-plane")
