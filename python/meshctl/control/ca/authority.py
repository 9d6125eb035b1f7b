"""The ``CertificateAuthority``: signs SVIDs for CSRs, serves the trust bundle,
and takes a root rotation through its three steps (see the package doc).

Its state is the database's (``store``), shared by every replica; each keeps a
view of it in memory, made again when the state's version moves (``sync``,
called where freshness matters, and on the ``ca`` announcement). A rotation
step holds the state row (FOR UPDATE) and decides on what the database says,
not on the view. An SVID's expiry is recorded by compare-and-set on the
version before the SVID leaves: if a step came between signing and
recording, the SVID is dropped and signed again by what signs now, so a
recorded expiry never straddles a step, whichever replica took it."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography import x509
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from meshctl.control import notify
from meshctl.control.ca import store
from meshctl.control.ca.certs import CLOCK_SKEW, Authority, describe, fingerprint, now, pem, when
from meshctl.control.ca.checks import validate
from meshctl.control.ca.errors import CaError, CsrRefused, RotationRefused
from meshctl.control.ca.files import Phase, State, complete_finish, consume, has_files, iso, parse_time, read_authority
from meshctl.control.ca.sealing import Kek, load_kek

log = logging.getLogger("meshctl.control.ca")

#: The longest SVID a sidecar may ask for (models.SvidRequest).
MAX_SVID_TTL = dt.timedelta(days=30)
#: Recorded expiries are rounded up to this: at most one state write per issuer a minute,
#: and never a "safe" time earlier than the truth.
RECORD_STEP_SECONDS = 60
#: An issuer expiring sooner than this is worth a warning at start.
EXPIRY_WARNING = dt.timedelta(days=30)
#: Signing attempts when other replicas keep writing the state in between.
SIGN_ATTEMPTS = 8


@dataclass(frozen=True)
class View:
    """The CA state at one version, with the keys opened."""

    version: int
    state: State
    current: Authority
    next: Authority | None


def import_files(directory: Path, trust_domain: str) -> tuple[State, Authority, Authority | None]:
    """The CA an earlier release (or an operator) left in `directory`: its state, the current root
    and issuer, and during a rotation the next ones; what is missing is made (in memory). CaError
    naming the file when something there cannot be used. Reads only: nothing is written."""
    state_path = directory / "state.json"
    tracked = state_path.exists()
    state = State.read(state_path) if tracked else State()
    if state.phase == "finishing":
        complete_finish(directory, state)  # a finish an earlier release cut short: its files, completed
    legacy = not tracked and (directory / "issuer.pem").exists() and (directory / "root.key").exists()
    current, _ = read_authority(directory, "", trust_domain, create=state.phase == "idle")
    next_ = None
    if state.phase in ("bundled", "activated"):
        try:
            next_, _ = read_authority(directory, "next-", trust_domain, create=False)
        except CaError as e:
            raise CaError(f"a root rotation is {state.phase} but its new root is unusable: {e}") from None
    if legacy and current.fingerprint not in state.issued:
        # Made before SVIDs were tracked: assume the longest one it could have signed, just now.
        bound = min(current.not_after, now() + MAX_SVID_TTL)
        state.issued[current.fingerprint] = iso(bound)
        log.info("SVIDs from the issuer before tracking began are assumed valid until %s", when(bound))
    return state, current, next_


def _consume_import(directory: Path) -> None:
    kept = consume(directory, "", "next-")
    log.info(
        "imported the CA files of %s into the database (keys sealed); their certificates are kept in %s, "
        "their keys removed",
        directory,
        kept,
    )


def _safe_after(state: State, current: Authority) -> dt.datetime | None:
    """During a rotation, the time after which no SVID from the outgoing issuer is valid."""
    if state.phase == "idle":
        return None
    known = parse_time(state.issued.get(current.fingerprint))
    started = parse_time(state.started_at) or now()
    return max(known, started) if known else started


class CertificateAuthority:
    """The current root and issuer, and during a rotation the next ones; thread-safe, and shared with
    every replica on the same database."""

    def __init__(self, engine: Engine, trust_domain: str, kek: Kek, import_dir: Path, view: View) -> None:
        self.engine, self.trust_domain, self.kek, self.import_dir = engine, trust_domain, kek, import_dir
        self._view = view
        self._lock = threading.Lock()  # signing and recording, in this process
        self._reload_lock = threading.Lock()

    @property
    def view(self) -> View:
        return self._view

    @property
    def state(self) -> State:
        return self._view.state

    @property
    def current(self) -> Authority:
        return self._view.current

    @property
    def next(self) -> Authority | None:
        return self._view.next

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
        return _signing(self._view)

    @classmethod
    def open(cls, engine: Engine, trust_domain: str, *, kek_file: Path, import_dir: Path) -> CertificateAuthority:
        """The CA in the database, made on first use: imported from the files in `import_dir` (an
        earlier release's CA directory, or an operator's root and issuer placed there), else new;
        its keys sealed under the key-encryption key in `kek_file` (made when there is no CA yet).
        Raises CaError, naming the file or row and the reason, when what is there cannot be used."""
        with Session(engine) as session:
            row = store.read_state(session)
        made = False
        if row is None:
            made = cls._create(engine, trust_domain, kek_file, import_dir)
        kek = load_kek(kek_file, create=False)
        ca = cls(engine, trust_domain, kek, import_dir, _load(engine, kek, trust_domain, check=True))
        if not made and has_files(import_dir, ""):
            log.warning(
                "the CA files in %s are ignored: the database holds the CA (root %s); to use other roots, "
                "rotate (meshctl ca rotate start takes next-root.pem and next-root.key from there)",
                import_dir,
                fingerprint(ca.root),
            )
        signing = ca.signing
        log.info(
            "CA: issuing SVIDs for %s from %s (%s), root %s; rotation %s; keys sealed in the database under %s",
            trust_domain,
            describe(signing.issuer),
            signing.fingerprint,
            fingerprint(signing.root),
            ca.phase,
            kek_file,
        )
        if signing.not_after - now() < EXPIRY_WARNING:
            log.warning("the CA chain expires on %s: SVIDs will not outlive it", when(signing.not_after))
        return ca

    @staticmethod
    def _create(engine: Engine, trust_domain: str, kek_file: Path, import_dir: Path) -> bool:
        """Put a CA in the empty database; False when another replica's came first."""
        imported = has_files(import_dir, "") or (import_dir / "state.json").exists()
        if imported:
            state, current, next_ = import_files(import_dir, trust_domain)
        else:
            state, (current, _), next_ = State(), read_authority(import_dir, "", trust_domain, create=True), None
        kek = load_kek(kek_file, create=True)
        authorities = {store.CURRENT: current} | ({store.NEXT: next_} if next_ is not None else {})
        with Session(engine) as session:
            try:
                store.insert(session, state, kek, authorities, since=iso(now()))
                session.commit()
            except IntegrityError:
                log.info("another replica made the CA first: using it")
                return False
        log.info("made the CA in the database; its keys are sealed under the key-encryption key in %s", kek_file)
        if imported:
            _consume_import(import_dir)
        return True

    # --- the view ---

    def sync(self) -> None:
        """Catch up with the database if the CA state moved since this view (one cheap query)."""
        with Session(self.engine) as session:
            seen = store.version(session)
        if seen != self._view.version:
            self.reload()

    def reload(self) -> None:
        """The view made again from the database, keeping the opened keys of slots that did not change."""
        with self._reload_lock:
            self._view = _load(self.engine, self.kek, self.trust_domain, known=self._view)

    def on_announcement(self, _payload: str | None) -> None:
        """The ``ca`` topic's callback (also after a reconnect): reload, logging what fails."""
        try:
            self.reload()
        except Exception:
            log.exception("reloading the CA state after an announcement failed; the view stays as it was")

    # --- the bundle ---

    def bundle(self) -> list[str]:
        """The trust anchors sidecars verify peers against (PEM): during a rotation the current
        root then the new one."""
        view = self._view
        roots = [view.current.root] + ([view.next.root] if view.next else [])
        return [pem(r) for r in roots]

    def synced_bundle(self) -> list[str]:
        """`bundle` after `sync`: what the Hub puts in a new generation's snapshots, so that a bundle
        another replica changed in that generation is in them. A CA state that no longer loads is
        logged, and the bundle this view has is served (the database's own errors propagate)."""
        try:
            self.sync()
        except CaError:
            log.exception("the CA state in the database cannot be loaded; serving the bundle as it was")
        return self.bundle()

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
        with self._lock:
            for _ in range(SIGN_ATTEMPTS):
                view = self._view
                authority = _signing(view)
                at = now()
                not_after = min(at + ttl, authority.not_after)
                leaf = authority.sign_leaf(csr.public_key(), expected, at - CLOCK_SKEW, not_after)
                if self._record(view, authority, not_after):
                    return pem(leaf) + authority.chain_pem(), not_after
                self.reload()  # a step (or another replica's record) came between: sign again
        raise RotationRefused("the CA state kept changing while signing (a rotation step on another replica?): retry")

    def _record(self, view: View, authority: Authority, not_after: dt.datetime) -> bool:
        """Make sure the database records this issuer's SVIDs as valid until at least `not_after`, at
        the version `view` was read at; False when the state moved in between (lock held)."""
        known = parse_time(view.state.issued.get(authority.fingerprint))
        with Session(self.engine) as session:
            if known is not None and known >= not_after:
                return store.version(session) == view.version
            step = RECORD_STEP_SECONDS
            rounded = dt.datetime.fromtimestamp(math.ceil(not_after.timestamp() / step) * step, dt.UTC)
            issued = {**view.state.issued, authority.fingerprint: iso(rounded)}
            if not store.record_expiry(session, seen=view.version, issued=issued):
                return False
            session.commit()
        recorded = View(view.version + 1, dataclasses.replace(view.state, issued=issued), view.current, view.next)
        with self._reload_lock:
            if self._view.version == view.version:  # unless a reload already went further
                self._view = recorded
        return True

    # --- rotation ---

    def finish_safe_after(self) -> dt.datetime | None:
        """During a rotation, the time after which no SVID from the outgoing issuer is valid."""
        view = self._view
        return _safe_after(view.state, view.current)

    @contextlib.contextmanager
    def _step(self, session: Session | None) -> Iterator[Session]:
        """The transaction a step writes in: the caller's (which commits it with the generation it
        raised, then calls `sync`), or one of its own, committed here."""
        if session is not None:
            yield session
            return
        with Session(self.engine) as own:
            yield own
            own.commit()
        self.reload()

    def _locked(self, session: Session) -> tuple[store.CaState, State, dict[str, store.CaAuthority]]:
        row = store.read_state(session, lock=True)
        if row is None:
            raise CaError("the CA state is missing from the database")
        return row, store.state_of(row), store.slots(session)

    def start_rotation(self, session: Session | None = None, *, bundle_generation: int | None = None) -> None:
        """Phase 1: the new root joins the bundle; SVIDs still come from the current issuer. The new
        root and issuer are the operator's ``next-*`` files in the CA directory of the replica
        taking the step (consumed once committed), else made."""
        with self._step(session) as s:
            row, state, rows = self._locked(s)
            if state.phase != "idle":
                raise RotationRefused(f"a root rotation is already {state.phase}: see GET /api/v1/identity/rotation")
            try:
                next_, _ = read_authority(self.import_dir, "next-", self.trust_domain, create=True)
            except CaError as e:
                raise RotationRefused(f"the new root cannot be used: {e}") from None
            current_root = rows[store.CURRENT].root_fingerprint
            if fingerprint(next_.root) == current_root:
                raise RotationRefused("next-root.pem is the current root: a rotation needs a different one")
            at = iso(now())
            store.put(s, store.NEXT, next_, self.kek, since=at)
            state.phase, state.started_at = "bundled", at
            state.activated_at, state.bundle_generation = None, bundle_generation
            store.write_state(s, row, state)
            notify.announce(s, "ca")
            if has_files(self.import_dir, "next-"):
                _after_commit(s, lambda: consume(self.import_dir, "next-"))
        log.info("root rotation started: bundle %s + %s", current_root, fingerprint(next_.root))

    def activate_rotation(self, session: Session | None = None) -> None:
        """Phase 2: SVIDs come from the new issuer (peers already trust its root)."""
        with self._step(session) as s:
            row, state, _ = self._locked(s)
            if state.phase != "bundled":
                raise RotationRefused(_not_now("activate", state.phase))
            state.phase, state.activated_at = "activated", iso(now())
            store.write_state(s, row, state)
            notify.announce(s, "ca")
        log.info("root rotation activated: SVIDs now from the new issuer")

    def finish_rotation(
        self, session: Session | None = None, *, force: bool = False, bundle_generation: int | None = None
    ) -> None:
        """Phase 3: the old root leaves the bundle and the new root and issuer become the current
        ones (their certificates kept as a retired slot, without keys). Refused while an SVID from
        the old issuer may be valid, unless forced."""
        with self._step(session) as s:
            row, state, rows = self._locked(s)
            if state.phase != "activated" or store.NEXT not in rows:
                raise RotationRefused(_not_now("finish", state.phase))
            old = rows[store.CURRENT]
            old_root = old.root_fingerprint
            known = parse_time(state.issued.get(old.issuer_fingerprint))
            started = parse_time(state.started_at) or now()
            safe = max(known, started) if known else started
            if safe > now() and not force:
                raise RotationRefused(
                    f"SVIDs from the outgoing issuer may be valid until {when(safe)} "
                    f"({math.ceil((safe - now()).total_seconds())} s from now), and peers would no longer "
                    "trust them; finish after that, or force it"
                )
            new = store.authority_of(rows[store.NEXT], self.kek)
            stamp = now().strftime("%Y%m%dT%H%M%S.%fZ")
            retired = f"retired:{stamp}:{old_root[7:19]}"
            store.retire(s, old, retired)
            s.delete(rows[store.NEXT])
            s.flush()
            store.put(s, store.CURRENT, new, self.kek, since=iso(now()))
            state.phase, state.started_at, state.activated_at = "idle", None, None
            state.bundle_generation = bundle_generation
            state.issued = {fp: t for fp, t in state.issued.items() if fp == new.fingerprint}
            store.write_state(s, row, state)
            notify.announce(s, "ca")
        log.info(
            "root rotation finished%s: bundle %s; retired root %s (certificates kept as %s)",
            " (forced)" if force and safe > now() else "",
            fingerprint(new.root),
            old_root,
            retired,
        )

    def status(self) -> dict[str, Any]:
        """The rotation as the API shows it: fingerprints and subjects, never a key."""
        view = self._view
        signing, state = _signing(view), view.state

        bundle = [view.current.root] + ([view.next.root] if view.next else [])

        def root(a: Authority, role: str) -> dict[str, Any]:
            return {
                "fingerprint": fingerprint(a.root),
                "subject": describe(a.root),
                "not_after": a.root.not_valid_after_utc,
                "role": role,
                "issuing": a is signing,
            }

        roots = [root(view.current, "current")] + ([root(view.next, "next")] if view.next else [])
        return {
            "trust_domain": self.trust_domain,
            "phase": state.phase,
            "roots": roots,
            "issuer": {
                "fingerprint": signing.fingerprint,
                "subject": describe(signing.issuer),
                "not_after": signing.issuer.not_valid_after_utc,
                "root_fingerprint": fingerprint(signing.root),
            },
            "bundle_digest": "sha256:" + hashlib.sha256("".join(pem(r) for r in bundle).encode()).hexdigest(),
            "bundle_generation": state.bundle_generation,
            "started_at": parse_time(state.started_at),
            "activated_at": parse_time(state.activated_at),
            "finish_safe_after": _safe_after(state, view.current),
        }


def _signing(view: View) -> Authority:
    return view.next if view.state.phase == "activated" and view.next else view.current


def _not_now(step: str, phase: str) -> str:
    if phase == "idle":
        return f"no root rotation is in progress: start one before you {step}"
    if step == "finish":
        return "the rotation is not activated yet: SVIDs still come from the old issuer; activate first"
    return f"the rotation is already {phase}"


def _after_commit(session: Session, action: Callable[[], object]) -> None:
    """Run `action` once the session's transaction commits (never if it rolls back)."""
    sa.event.listen(session, "after_commit", lambda _s: action(), once=True)


def _load(engine: Engine, kek: Kek, trust_domain: str, *, known: View | None = None, check: bool = False) -> View:
    """The CA state from the database with its keys opened (those of `known` reused for slots whose
    certificates did not change); `check` validates each authority as at start. CaError naming the
    key-encryption key file when it is not the one the CA was sealed with."""
    with Session(engine) as session:
        row = store.read_state(session)
        if row is None:
            raise CaError("the CA state is missing from the database")
        rows = store.slots(session)
    if row.kek_id != kek.key_id:
        raise CaError(
            f"the CA key-encryption key in {kek.path} is not the one the CA in the database was sealed with "
            f"({kek.key_id}, the database's is {row.kek_id}): give this replica a copy of the file the first "
            "replica made (--ca-kek-file / MESHCTL_CA_KEK_FILE)"
        )
    state = store.state_of(row)
    reuse = {} if known is None else {store.CURRENT: known.current, store.NEXT: known.next}

    def opened(slot: str) -> Authority:
        r = rows[slot]
        had = reuse.get(slot)
        if had is not None and had.fingerprint == r.issuer_fingerprint and fingerprint(had.root) == r.root_fingerprint:
            return had
        authority = store.authority_of(r, kek)
        if check:
            validate(authority, trust_domain, "" if slot == store.CURRENT else "next-")
        return authority

    if store.CURRENT not in rows:
        raise CaError("the CA in the database has no current root")
    next_ = None
    if state.phase in ("bundled", "activated"):
        if store.NEXT not in rows:
            raise CaError(f"a root rotation is {state.phase} but its new root is missing from the database")
        next_ = opened(store.NEXT)
    return View(row.version, state, opened(store.CURRENT), next_)
