"""The mesh's certificate authority. Sidecars keep their own keys and send
CSRs; what they get back is an X.509 SVID whose only URI SAN is their SPIFFE
ID, chained to a root in the trust bundle. Keys live in 0600 files in the
0700 CA directory and never appear in a response or a log line.

Files in the CA directory (``<data-dir>/ca``):

``root.pem`` (+ ``root.key``)
    The root. Made on first start, or the operator's, placed there before it.
``issuer.pem`` + ``issuer.key``
    What signs SVIDs: the issuer's certificate, then any intermediates above it up
    to (not including) the root. Made from ``root.key`` when absent, or the operator's
    own intermediate, in which case ``root.key`` is not needed.
``next-root.pem``, ``next-root.key``, ``next-issuer.pem``, ``next-issuer.key``
    The same for the root a rotation moves to: made at its start, or the operator's.
``state.json``
    The rotation phase, and the latest expiry of an SVID from each issuer.
``retired/``
    The certificates (never keys) of roots and issuers a rotation finished with.

A root rotation goes in three steps, each safe to hold as long as needed:

1. ``start``: the bundle holds the current and the new root; SVIDs still come from the
   current issuer. Every sidecar learns the new root before anyone presents a
   certificate under it.
2. ``activate``: SVIDs come from the new issuer. Sidecars move to it as they renew, and
   their peers already trust it; certificates from the old issuer still verify.
3. ``finish``: the old root leaves the bundle, once every SVID from the old issuer has
   expired (or when forced).

Every file is validated when loaded; a CA that cannot issue SVIDs peers will accept
raises ``CaError`` and the control plane does not start.

The modules, each below the next: ``errors``; ``certs`` (keys, CA certificates, the
``Authority`` that signs SVIDs); ``checks`` (whether the data plane will accept what it
signs); ``files`` (the CA directory and ``state.json``); ``authority`` (the
``CertificateAuthority``: issuing and rotation). Import from this package.
"""

from __future__ import annotations

from meshctl.control.ca.authority import CertificateAuthority
from meshctl.control.ca.certs import Authority, fingerprint
from meshctl.control.ca.errors import CaError, CsrRefused, RotationRefused
from meshctl.control.ca.files import State

__all__ = [
    "Authority",
    "CaError",
    "CertificateAuthority",
    "CsrRefused",
    "RotationRefused",
    "State",
    "fingerprint",
]
