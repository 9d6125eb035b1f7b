"""A sidecar's identity: it makes its own key (which never leaves it), asks
the control plane to sign a CSR for its SPIFFE ID with its join token, and
renews at about 70 % of the certificate's lifetime, with jitter so that a
fleet does not renew in lockstep. A new key each time; the old certificate
serves until the new one is installed; an expired one is never installed."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meshctl import _core
from meshctl.client import ApiClient, ApiError, Unreachable
from meshctl.secretfile import write_secret
from meshctl.spiffe import spiffe_id

log = logging.getLogger("meshctl.sidecar.identity")

RENEW_AT = 0.7
#: Renewal lands anywhere within this fraction of the lifetime around RENEW_AT.
JITTER = 0.1


@dataclass(frozen=True)
class Identity:
    spiffe_id: str
    key_pem: str
    chain_pem: str
    roots_pem: list[str]
    not_before: dt.datetime
    not_after: dt.datetime

    def usable(self, now: dt.datetime | None = None) -> bool:
        now = now or dt.datetime.now(dt.UTC)
        return self.not_before <= now < self.not_after

    def renew_at(self, rng: random.Random | None = None) -> dt.datetime:
        """When to ask for the next certificate: ~70 % through the lifetime, jittered."""
        fraction = RENEW_AT + (rng or random).uniform(-JITTER / 2, JITTER / 2)
        return self.not_before + (self.not_after - self.not_before) * fraction


def key_and_csr(spiffe_id: str) -> tuple[str, str]:
    """A new EC P-256 key (PKCS#8 PEM) and a CSR (PEM) whose only name is the URI SAN `spiffe_id`.
    (Made by the data plane's library: `cryptography` would cost every sidecar ~16 MB.)"""
    return _core.key_and_csr(spiffe_id)


def _utc(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def request_identity(api: ApiClient, *, namespace: str, service: str, ttl_seconds: int | None = None) -> Identity:
    """A fresh key and a certificate for it. Raises ApiError (refused) or Unreachable."""
    bundle = api.get("/api/v1/identity/bundle", timeout=10)
    # Over the verified connection: a root rotation's new root also verifies the control plane's next
    # serving certificate (see meshctl.trust).
    api.learn_roots(bundle["roots"])
    identity = spiffe_id(bundle["trust_domain"], namespace, service)
    key_pem, csr_pem = key_and_csr(identity)
    svid = api.post("/api/v1/identity/svid", {"csr": csr_pem, "ttl_seconds": ttl_seconds}, timeout=10)
    _, not_before, not_after, _ = _core.leaf_certificate(svid["certificate_chain"])
    return Identity(identity, key_pem, svid["certificate_chain"], bundle["roots"], _utc(not_before), _utc(not_after))


def load_identity(directory: Path) -> Identity | None:
    """The identity last written to `directory`, if it is still usable."""
    try:
        svid = (directory / SVID_FILE).read_text()
        roots = (directory / ROOTS_FILE).read_text()
        uri, not_before, not_after, _ = _core.leaf_certificate(svid)
    except (OSError, ValueError):
        return None
    if uri is None:
        return None
    key_start = svid.index("-----BEGIN PRIVATE KEY-----") if "-----BEGIN PRIVATE KEY-----" in svid else 0
    identity = Identity(
        uri,
        svid[key_start:],
        svid[:key_start],
        [roots],
        _utc(not_before),
        _utc(not_after),
    )
    return identity if identity.usable() else None


#: The chain and its key in one owner-only file, replaced atomically: a
#: reader never sees a new certificate with an old key.
SVID_FILE = "svid.pem"
ROOTS_FILE = "roots.pem"


class IdentityKeeper:
    """Keeps a valid identity in `directory` (svid.pem: chain + key, 0600; roots.pem) and hands each
    new one to `install` before the old one expires."""

    def __init__(
        self,
        api: ApiClient,
        directory: Path,
        *,
        namespace: str,
        service: str,
        install: Callable[[Identity], None],
        ttl_seconds: int | None = None,
    ):
        self.api, self.directory = api, directory
        self.namespace, self.service, self.ttl_seconds = namespace, service, ttl_seconds
        self.install = install
        self.current: Identity | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def resume(self) -> bool:
        """Take up the identity already on disk, when it is still valid (control plane away)."""
        self.current = load_identity(self.directory)
        return self.current is not None

    def renew(self) -> Identity:
        with self._lock:
            return self._renew()

    def _renew(self) -> Identity:
        identity = request_identity(
            self.api, namespace=self.namespace, service=self.service, ttl_seconds=self.ttl_seconds
        )
        if not identity.usable():
            raise ValueError(f"refusing a certificate valid {identity.not_before} to {identity.not_after}")
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret(self.directory / SVID_FILE, identity.chain_pem.strip() + "\n" + identity.key_pem.strip())
        write_secret(self.directory / ROOTS_FILE, "".join(identity.roots_pem))
        self.current = identity
        self.install(identity)
        log.info("identity %s valid until %s", identity.spiffe_id, identity.not_after.isoformat())
        return identity

    def files(self) -> dict[str, str]:
        """The data plane's `identity` section for the files this keeper writes."""
        svid = str(self.directory / SVID_FILE)
        return {"cert_chain_file": svid, "private_key_file": svid, "roots_file": str(self.directory / ROOTS_FILE)}

    def run(self) -> None:
        """Renew until stopped; failed renewals retry with backoff while the current one lasts."""
        delay = 1.0
        while not self._stop.is_set():
            due = self.current.renew_at() if self.current else dt.datetime.now(dt.UTC)
            if self._stop.wait(max(0.0, (due - dt.datetime.now(dt.UTC)).total_seconds())):
                return
            try:
                self.renew()
                delay = 1.0
            except (ApiError, Unreachable, ValueError) as e:
                left = (self.current.not_after - dt.datetime.now(dt.UTC)) if self.current else None
                log.warning("renewing the identity failed (%s); %s left; retrying in %.0fs", e, left, delay)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, 30.0)

    def start(self) -> None:
        threading.Thread(target=self.run, name="identity", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
