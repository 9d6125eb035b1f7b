"""The ``CertificateAuthority``: signs SVIDs for CSRs, serves the trust bundle,
and takes a root rotation through its three steps (see the package doc), under
one lock so that signing and recording an SVID's expiry never straddle a step."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from cryptography import x509

from meshctl.control.ca.certs import CLOCK_SKEW, Authority, describe, fingerprint, now, pem, when
from meshctl.control.ca.errors import CaError, CsrRefused, RotationRefused
from meshctl.control.ca.files import Phase, State, complete_finish, iso, load_authority, parse_time

log = logging.getLogger("meshctl.control.ca")

#: The longest SVID a sidecar may ask for (models.SvidRequest).
MAX_SVID_TTL = dt.timedelta(days=30)
#: Recorded expiries are rounded up to this: at most one state write per issuer a minute,
#: and never a "safe" time earlier than the truth.
RECORD_STEP_SECONDS = 60
#: An issuer expiring sooner than this is worth a warning at start.
EXPIRY_WARNING = dt.timedelta(days=30)


class CertificateAuthority:
    """The current root and issuer, and during a rotation the next ones; thread-safe."""

    def __init__(
        self, directory: Path, trust_domain: str, current: Authority, next_: Authority | None, state: State
    ) -> None:
        self.directory, self.trust_domain = directory, trust_domain
        self.current, self.next, self.state = current, next_, state
        self._lock = threading.Lock()

    @property
    def root(self) -> x509.Certificate:
        return self.current.root

    @property
    def issuer(self) -> x509.Certificate:
        return self.current.issuer

    @property
    def phase(self) -> Phase:
        return self.state.phase  # type: ignore[return-value]

    @property
    def signing(self) -> Authority:
        """What signs SVIDs now: the new issuer once a rotation is activated."""
        return self.next if self.phase == "activated" and self.next else self.current

    @classmethod
    def load_or_create(cls, directory: Path, trust_domain: str) -> CertificateAuthority:
        """The CA in `directory`, made there on first use (see the module's doc for the files).
        Raises CaError, naming the file and the reason, when what is there cannot be used."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if directory.stat().st_mode & 0o077:
            os.chmod(directory, 0o700)
        state_path = directory / "state.json"
        fresh = not state_path.exists()
        legacy = fresh and (directory / "issuer.pem").exists() and (directory / "root.key").exists()
        state = State() if fresh else State.read(state_path)
        if state.phase == "finishing":
            complete_finish(directory, state)
        current, made = load_authority(directory, "", trust_domain, create=state.phase == "idle")
        next_ = None
        if state.phase in ("bundled", "activated"):
            try:
                next_, _ = load_authority(directory, "next-", trust_domain, create=False)
            except CaError as e:
                raise CaError(f"a root rotation is {state.phase} but its new root is unusable: {e}") from None
        if legacy and not made and current.fingerprint not in state.issued:
            # Made before SVIDs were tracked: assume the longest one it could have signed, just now.
            bound = min(current.not_after, now() + MAX_SVID_TTL)
            state.issued[current.fingerprint] = iso(bound)
            log.info("SVIDs from the issuer before tracking began are assumed valid until %s", when(bound))
        if fresh or legacy:
            state.write(state_path)
        ca = cls(directory, trust_domain, current, next_, state)
        signing = ca.signing
        log.info(
            "CA: issuing SVIDs for %s from %s (%s), root %s; rotation %s",
            trust_domain,
            describe(signing.issuer),
            signing.fingerprint,
            fingerprint(signing.root),
            state.phase,
        )
        if signing.not_after - now() < EXPIRY_WARNING:
            log.warning("the CA chain expires on %s: SVIDs will not outlive it", when(signing.not_after))
        return ca

    # --- the bundle ---

    def bundle(self) -> list[str]:
        """The trust anchors sidecars verify peers against (PEM): during a rotation the current
        root then the new one."""
        roots = [self.current.root] + ([self.next.root] if self.next else [])
        return [pem(r) for r in roots]

    def bundle_digest(self) -> str:
        """Changes exactly when the bundle does."""
        return "sha256:" + hashlib.sha256("".join(self.bundle()).encode()).hexdigest()

    # --- SVIDs ---

    def issue(self, csr_pem: str, *, expected: str, ttl: dt.timedelta) -> tuple[str, dt.datetime]:
        """(leaf + issuer chain as PEM, expiry) for a CSR whose only identity is `expected`."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as e:
            raise CsrRefused(f"not a PEM certificate request: {e}") from None
        if not csr.is_signature_valid:
            raise CsrRefused("the CSR's signature does not verify")
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise CsrRefused(f"the CSR names no identity: give the URI SAN {expected}") from None
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if len(list(san)) != 1 or uris != [expected]:
            asked = ", ".join(str(g.value) for g in san)
            raise CsrRefused(f"the CSR asks for {asked}; this token may only have {expected}", forbidden=True)
        # Signing and recording under one lock: a rotation never finishes between the two.
        with self._lock:
            authority = self.signing
            at = now()
            not_after = min(at + ttl, authority.not_after)
            leaf = authority.sign_leaf(csr.public_key(), expected, at - CLOCK_SKEW, not_after)
            self._record(authority, not_after)
        return pem(leaf) + authority.chain_pem(), not_after

    def _record(self, authority: Authority, not_after: dt.datetime) -> None:
        """Remember the latest expiry of this issuer's SVIDs before the SVID leaves (lock held)."""
        known = parse_time(self.state.issued.get(authority.fingerprint))
        if known is None or known < not_after:
            step = RECORD_STEP_SECONDS
            rounded = dt.datetime.fromtimestamp(math.ceil(not_after.timestamp() / step) * step, dt.UTC)
            self.state.issued[authority.fingerprint] = iso(rounded)
            self._save()

    def _save(self) -> None:
        self.state.write(self.directory / "state.json")

    # --- rotation ---

    def finish_safe_after(self) -> dt.datetime | None:
        """During a rotation, the time after which no SVID from the outgoing issuer is valid."""
        if self.phase == "idle":
            return None
        known = parse_time(self.state.issued.get(self.current.fingerprint))
        started = parse_time(self.state.started_at) or now()
        return max(known, started) if known else started

    def start_rotation(self, *, bundle_generation: int | None = None) -> None:
        """Phase 1: the new root joins the bundle; SVIDs still come from the current issuer."""
        with self._lock:
            if self.phase != "idle":
                raise RotationRefused(f"a root rotation is already {self.phase}: see GET /api/v1/identity/rotation")
            try:
                next_, _ = load_authority(self.directory, "next-", self.trust_domain, create=True)
            except CaError as e:
                raise RotationRefused(f"the new root cannot be used: {e}") from None
            if fingerprint(next_.root) == fingerprint(self.current.root):
                raise RotationRefused("next-root.pem is the current root: a rotation needs a different one")
            self.next = next_
            self.state.phase, self.state.started_at = "bundled", iso(now())
            self.state.activated_at, self.state.bundle_generation = None, bundle_generation
            self._save()
        log.info("root rotation started: bundle %s + %s", fingerprint(self.current.root), fingerprint(next_.root))

    def activate_rotation(self) -> None:
        """Phase 2: SVIDs come from the new issuer (peers already trust its root)."""
        with self._lock:
            if self.phase != "bundled":
                raise RotationRefused(self._not_now("activate"))
            self.state.phase, self.state.activated_at = "activated", iso(now())
            self._save()
        log.info("root rotation activated: SVIDs now from %s", self.signing.fingerprint)

    def finish_rotation(self, *, force: bool = False, bundle_generation: int | None = None) -> None:
        """Phase 3: the old root leaves the bundle and the new root and issuer become the current
        ones. Refused while an SVID from the old issuer may be valid, unless forced."""
        with self._lock:
            if self.phase != "activated" or self.next is None:
                raise RotationRefused(self._not_now("finish"))
            safe = self.finish_safe_after()
            if safe is not None and safe > now() and not force:
                raise RotationRefused(
                    f"SVIDs from the outgoing issuer may be valid until {when(safe)} "
                    f"({math.ceil((safe - now()).total_seconds())} s from now), and peers would no longer "
                    "trust them; finish after that, or force it"
                )
            old = self.current
            stamp = now().strftime("%Y%m%dT%H%M%SZ")
            (self.directory / "retired").mkdir(exist_ok=True, mode=0o700)
            retired = self.directory / "retired" / f"{stamp}-{fingerprint(old.root)[7:19]}"
            retired.mkdir(exist_ok=True, mode=0o700)
            for n in ("root.pem", "issuer.pem"):
                shutil.copyfile(self.directory / n, retired / n)
            self.state.phase = "finishing"
            self.state.next_root_key = (self.directory / "next-root.key").exists()
            self._save()
            complete_finish(self.directory, self.state)
            self.current, self.next = self.next, None
            self.state.bundle_generation = bundle_generation
            self._save()
        log.info(
            "root rotation finished%s: bundle %s; retired root %s (certificates kept in %s)",
            " (forced)" if force and safe is not None and safe > now() else "",
            fingerprint(self.current.root),
            fingerprint(old.root),
            retired,
        )

    def _not_now(self, step: str) -> str:
        if self.phase == "idle":
            return f"no root rotation is in progress: start one before you {step}"
        if step == "finish":
            return "the rotation is not activated yet: SVIDs still come from the old issuer; activate first"
        return f"the rotation is already {self.phase}"

    def status(self) -> dict[str, Any]:
        """The rotation as the API shows it: fingerprints and subjects, never a key."""
        signing = self.signing

        def root(a: Authority, role: str) -> dict[str, Any]:
            return {
                "fingerprint": fingerprint(a.root),
                "subject": describe(a.root),
                "not_after": a.root.not_valid_after_utc,
                "role": role,
                "issuing": a is signing,
            }

        roots = [root(self.current, "current")] + ([root(self.next, "next")] if self.next else [])
        return {
            "trust_domain": self.trust_domain,
            "phase": self.phase,
            "roots": roots,
            "issuer": {
                "fingerprint": signing.fingerprint,
                "subject": describe(signing.issuer),
                "not_after": signing.issuer.not_valid_after_utc,
                "root_fingerprint": fingerprint(signing.root),
            },
            "bundle_digest": self.bundle_digest(),
            "bundle_generation": self.state.bundle_generation,
            "started_at": parse_time(self.state.started_at),
            "activated_at": parse_time(self.state.activated_at),
            "finish_safe_after": self.finish_safe_after(),
        }
