"""The CA directory on disk: reading and making the root and issuer files, and
``state.json`` (the rotation phase and the latest expiry of each issuer's
SVIDs). Keys are written 0600; the module doc of ``meshctl.control.ca`` lists
the files."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from meshctl.control.ca.certs import (
    ISSUER_DAYS,
    ROOT_DAYS,
    Authority,
    IssuerKey,
    ca_cert,
    fingerprint,
    new_key,
    pem,
    spki,
)
from meshctl.control.ca.checks import SUPPORTED_KEYS, check_key_type, validate
from meshctl.control.ca.errors import CaError
from meshctl.secretfile import write_secret

log = logging.getLogger("meshctl.control.ca")

Phase = Literal["idle", "bundled", "activated"]
PHASES: tuple[str, ...] = ("idle", "bundled", "activated", "finishing")
#: The files of one root and its issuer; a rotation's next ones carry the prefix "next-".
FILES = ("root.pem", "root.key", "issuer.pem", "issuer.key")


# === certificates and keys ===


def read_certs(path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (ValueError, OSError) as e:
        raise CaError(f"{path.name} holds no PEM certificate ({e})") from None
    if not certs:
        raise CaError(f"{path.name} holds no PEM certificate")
    return certs


def read_key(path: Path) -> IssuerKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except TypeError:
        raise CaError(f"{path.name} is encrypted: give it unencrypted (the file is kept 0600)") from None
    except (ValueError, OSError, UnsupportedAlgorithm):
        # Never the parser's message: it is about the key's bytes.
        raise CaError(f"{path.name} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise CaError(f"{path.name} is a {type(key).__name__}: {SUPPORTED_KEYS}")
    check_key_type(key.public_key(), path.name)
    return key


def write_key(path: Path, key: IssuerKey) -> None:
    text = (
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
        .strip()
    )
    write_secret(path, text)


def load_authority(directory: Path, prefix: str, trust_domain: str, *, create: bool) -> tuple[Authority, bool]:
    """The root and issuer whose files start with `prefix`; what is missing is made when `create`
    (a root, then an issuer from its key). Returns (authority, whether the issuer was made now)."""
    p = {n: directory / f"{prefix}{n}" for n in FILES}
    have = {n: path.exists() for n, path in p.items()}
    name = {n: f"{prefix}{n}" for n in p}
    made: set[str] = set()
    if have["issuer.pem"] != have["issuer.key"]:
        one, other = ("issuer.pem", "issuer.key") if have["issuer.pem"] else ("issuer.key", "issuer.pem")
        raise CaError(
            f"{name[one]} without {name[other]}: give both (or neither, to have them made from {name['root.key']})"
        )
    if not have["root.pem"]:
        if have["issuer.pem"]:
            raise CaError(f"{name['issuer.pem']} without {name['root.pem']}: place the root CA's certificate there")
        if have["root.key"]:
            raise CaError(f"{name['root.key']} without {name['root.pem']}: give both, or neither to have them made")
        if not create:
            raise CaError(f"{name['root.pem']} is missing")
        root_key = new_key()
        write_key(p["root.key"], root_key)
        p["root.pem"].write_text(pem(ca_cert(f"{trust_domain} root", root_key, ROOT_DAYS, path_length=1)))
        have["root.key"] = True
        made.update(("root.pem", "root.key"))
    roots = read_certs(p["root.pem"])
    if len(roots) != 1:
        raise CaError(
            f"{name['root.pem']} holds {len(roots)} certificates: give the root alone "
            f"(intermediates go in {name['issuer.pem']}, after the issuer)"
        )
    root = roots[0]
    if not have["issuer.pem"]:
        if not have["root.key"]:
            raise CaError(
                f"{name['root.pem']} has no {name['root.key']} beside it: place the root's key there to have the "
                f"issuer made from it, or your own intermediate as {name['issuer.pem']} + {name['issuer.key']}"
            )
        if not create:
            raise CaError(f"{name['issuer.pem']} is missing")
        signer = read_key(p["root.key"])
        if spki(signer.public_key()) != spki(root.public_key()):
            raise CaError(f"{name['root.key']} does not belong to {name['root.pem']}: their public keys differ")
        issuer_key = new_key()
        issuer = ca_cert(f"{trust_domain} issuer", issuer_key, ISSUER_DAYS, issuer=(root, signer), path_length=0)
        write_key(p["issuer.key"], issuer_key)
        p["issuer.pem"].write_text(pem(issuer))
        made.update(("issuer.pem", "issuer.key"))
    chain = read_certs(p["issuer.pem"])
    if chain[-1] == root:  # "up to the root" taken inclusively: the root is the bundle's, not the chain's
        chain.pop()
        if not chain:
            raise CaError(f"{name['issuer.pem']} holds only the root: give the issuer's certificate")
    for n in ("root.key", "issuer.key"):
        if p[n].exists() and p[n].stat().st_mode & 0o077:
            os.chmod(p[n], 0o600)
            log.warning("%s was readable by others; made it 0600", p[n])
    try:
        authority = Authority(root, tuple(chain), read_key(p["issuer.key"]))
        validate(authority, trust_domain, prefix)
    except CaError:
        for n in made:  # made under a root that turned out unusable: a fixed root gets fresh ones
            p[n].unlink(missing_ok=True)
        raise
    return authority, "issuer.pem" in made


# === state ===


@dataclass
class State:
    """state.json: the rotation's phase ("finishing" only between a finish's first and last file
    move), and the latest expiry of each issuer's SVIDs. Written whole (atomically), 0600."""

    phase: str = "idle"
    started_at: str | None = None
    activated_at: str | None = None
    #: The mesh generation that first carried the current bundle (sidecars that ACKed it have it).
    bundle_generation: int | None = None
    #: Finishing: whether the new root came with its key (so root.key is the new one's, or none).
    next_root_key: bool | None = None
    #: Issuer fingerprint -> latest expiry (ISO) of an SVID it signed, rounded up.
    issued: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> State:
        try:
            raw = json.loads(path.read_text())
            state = cls(**raw)
        except (OSError, ValueError, TypeError) as e:
            raise CaError(f"{path.name} is unreadable ({e}); it is the rotation state, restore or remove it") from None
        if state.phase not in PHASES:
            raise CaError(f"{path.name} names an unknown rotation phase {state.phase!r}")
        return state

    def write(self, path: Path) -> None:
        write_secret(path, json.dumps(self.__dict__, indent=2, sort_keys=True))


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat()


def parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def complete_finish(directory: Path, state: State) -> None:
    """The new files take the current ones' names; idempotent, so a crash midway is completed
    on the next start."""
    for n in FILES:
        new, cur = directory / f"next-{n}", directory / n
        if new.exists():
            os.replace(new, cur)
        elif n == "root.key" and not state.next_root_key:
            cur.unlink(missing_ok=True)  # the old root's key; the new root came without one
    missing = [n for n in ("root.pem", "issuer.pem", "issuer.key") if not (directory / n).exists()]
    if missing:
        raise CaError(f"finishing a root rotation: {', '.join(missing)} and next-{missing[0]} are missing")
    issuer = fingerprint(read_certs(directory / "issuer.pem")[0])
    current = {fp: t for fp, t in state.issued.items() if fp == issuer}
    state.phase, state.started_at, state.activated_at, state.next_root_key = "idle", None, None, None
    state.issued = current
    state.write(directory / "state.json")
