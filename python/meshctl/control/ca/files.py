"""The CA directory on disk, where a CA comes in (see the package doc): reading
and checking an operator's (or an earlier release's) root and issuer files,
making what is missing in memory, ``state.json`` (an earlier release's rotation
state), and taking the files away once the database holds them."""

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
        data = path.read_bytes()
    except OSError:
        raise CaError(f"{path.name} cannot be read") from None
    return parse_key(data, path.name)


def parse_key(data: bytes, where: str) -> IssuerKey:
    """A private key from PEM; CaError naming `where`, never quoting the bytes."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CaError(f"{where} is encrypted: give it unencrypted (the file is kept 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        # Never the parser's message: it is about the key's bytes.
        raise CaError(f"{where} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise CaError(f"{where} is a {type(key).__name__}: {SUPPORTED_KEYS}")
    check_key_type(key.public_key(), where)
    return key


def private_pem(key: IssuerKey) -> str:
    return (
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
        .strip()
    )


def write_key(path: Path, key: IssuerKey) -> None:
    write_secret(path, private_pem(key))


def has_files(directory: Path, prefix: str) -> bool:
    """Whether an operator (or an earlier release) put a root or an issuer there with `prefix`."""
    return any((directory / f"{prefix}{n}").exists() for n in FILES)


def read_authority(directory: Path, prefix: str, trust_domain: str, *, create: bool) -> tuple[Authority, bool]:
    """The root and issuer in the files that start with `prefix`, validated; what is missing is made
    in memory when `create` (a root, then an issuer from its key), never written here: the database
    keeps the CA. Returns (authority, whether the issuer was made now)."""
    p = {n: directory / f"{prefix}{n}" for n in FILES}
    have = {n: path.exists() for n, path in p.items()}
    name = {n: f"{prefix}{n}" for n in p}
    if have["issuer.pem"] != have["issuer.key"]:
        one, other = ("issuer.pem", "issuer.key") if have["issuer.pem"] else ("issuer.key", "issuer.pem")
        raise CaError(
            f"{name[one]} without {name[other]}: give both (or neither, to have them made from {name['root.key']})"
        )
    root_key: IssuerKey | None = None
    if not have["root.pem"]:
        if have["issuer.pem"]:
            raise CaError(f"{name['issuer.pem']} without {name['root.pem']}: place the root CA's certificate there")
        if have["root.key"]:
            raise CaError(f"{name['root.key']} without {name['root.pem']}: give both, or neither to have them made")
        if not create:
            raise CaError(f"{name['root.pem']} is missing")
        root_key = new_key()
        root = ca_cert(f"{trust_domain} root", root_key, ROOT_DAYS, path_length=1)
    else:
        roots = read_certs(p["root.pem"])
        if len(roots) != 1:
            raise CaError(
                f"{name['root.pem']} holds {len(roots)} certificates: give the root alone "
                f"(intermediates go in {name['issuer.pem']}, after the issuer)"
            )
        root = roots[0]
        if have["root.key"]:
            root_key = read_key(p["root.key"])
            if spki(root_key.public_key()) != spki(root.public_key()):
                raise CaError(f"{name['root.key']} does not belong to {name['root.pem']}: their public keys differ")
    if not have["issuer.pem"]:
        if root_key is None:
            raise CaError(
                f"{name['root.pem']} has no {name['root.key']} beside it: place the root's key there to have the "
                f"issuer made from it, or your own intermediate as {name['issuer.pem']} + {name['issuer.key']}"
            )
        if not create:
            raise CaError(f"{name['issuer.pem']} is missing")
        issuer_key: IssuerKey = new_key()
        chain = [ca_cert(f"{trust_domain} issuer", issuer_key, ISSUER_DAYS, issuer=(root, root_key), path_length=0)]
    else:
        chain = read_certs(p["issuer.pem"])
        if chain[-1] == root:  # "up to the root" taken inclusively: the root is the bundle's, not the chain's
            chain.pop()
            if not chain:
                raise CaError(f"{name['issuer.pem']} holds only the root: give the issuer's certificate")
        issuer_key = read_key(p["issuer.key"])
    authority = Authority(root, tuple(chain), issuer_key, root_key)
    validate(authority, trust_domain, prefix)
    return authority, not have["issuer.pem"]


def consume(directory: Path, *prefixes: str) -> Path | None:
    """Files the database took in: their certificates (and an earlier release's ``state.json``)
    move to ``imported/<time>/`` (a record, 0700), their keys are removed (the database holds them,
    sealed). The directory, or None if nothing was there."""
    names = [f"{prefix}{n}" for prefix in prefixes for n in FILES]
    if "" in prefixes:
        names.append("state.json")
    present = [directory / n for n in names if (directory / n).exists()]
    if not present:
        return None
    kept = directory / "imported" / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    kept.parent.mkdir(exist_ok=True, mode=0o700)
    kept.mkdir(mode=0o700)
    for path in present:
        if path.name.endswith(".key"):
            path.unlink()
        else:
            os.replace(path, kept / path.name)
    return kept


# === state ===


@dataclass
class State:
    """The rotation's phase and the latest expiry of each issuer's SVIDs: what the database's
    ``castate`` row holds, and an earlier release's ``state.json`` ("finishing" only between a
    finish's first and last file move there)."""

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
