"""The mesh's certificate authority. Sidecars keep their own keys and send
CSRs; what they get back is an X.509 SVID whose only URI SAN is their SPIFFE
ID, chained to a root in the trust bundle. Keys never appear in a response or
a log line.

Where it lives: in the database (``store``), shared by every control-plane
replica on it: the current root and issuer, during a rotation the next ones,
the rotation phase, and the latest expiry of each issuer's SVIDs. The keys are
sealed with AES-256-GCM under a key-encryption key (KEK) read from a 0600 file,
``--ca-kek-file`` / ``MESHCTL_CA_KEK_FILE`` (default ``<data-dir>/ca-kek``, made
on the first start that finds no CA); the database alone never yields a key
(see ``sealing``). A second replica needs a copy of that file, given as a secret
(a Kubernetes Secret mount would be the way); with none, or another, it refuses
to start, naming the file.

The CA directory (``<data-dir>/ca``) is where files come in:

``root.pem`` (+ ``root.key``), ``issuer.pem`` + ``issuer.key``
    Before the first start, an operator's root (the issuer is made from its key) or
    own intermediate (the issuer's certificate, then any intermediates above it up to,
    not including, the root). An earlier release's CA is there too, with ``state.json``.
    The first start takes them into the database (once, whichever replica wins);
    their certificates then move to ``imported/<time>/``, their keys are removed.
    With no files, a new root and issuer are made.
``next-root.pem``, ``next-root.key``, ``next-issuer.pem``, ``next-issuer.key``
    The same for the root a rotation moves to, read (and consumed) by the replica
    that takes ``rotate start``; made when absent.

A root rotation goes in three steps, each safe to hold as long as needed:

1. ``start``: the bundle holds the current and the new root; SVIDs still come from the
   current issuer. Every sidecar learns the new root before anyone presents a
   certificate under it.
2. ``activate``: SVIDs come from the new issuer. Sidecars move to it as they renew, and
   their peers already trust it; certificates from the old issuer still verify.
3. ``finish``: the old root leaves the bundle, once every SVID from the old issuer has
   expired (or when forced). Its certificates stay in the database as a retired
   slot, its keys are dropped.

A step is one transaction with the mesh generation it raises, announced on the
``ca`` topic; every replica reloads on the announcement, and reads the state's
version before it serves the bundle or the rotation (see ``authority``).

Every authority is validated when loaded; a CA that cannot issue SVIDs peers will accept
raises ``CaError`` and the control plane does not start.

The modules, each below the next: ``errors``; ``certs`` (keys, CA certificates, the
``Authority`` that signs SVIDs); ``checks`` (whether the data plane will accept what it
signs); ``files`` (the CA directory's files); ``sealing`` (the KEK); ``store`` (the
tables); ``authority`` (the ``CertificateAuthority``: issuing and rotation); ``serving``
(the control plane's own HTTPS certificate). Import from this package.
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
