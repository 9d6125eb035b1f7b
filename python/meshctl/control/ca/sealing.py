"""The CA's keys at rest: AES-256-GCM under a key-encryption key (KEK) read
from a file, never from the database.

The KEK file (``--ca-kek-file``, ``MESHCTL_CA_KEK_FILE``; ``<data-dir>/ca-kek``
by default) holds 32 random bytes as one line of base64, mode 0600. It is made
on the first start that finds no CA in the database; every other replica must
be given a copy of the same file (a secret, as a Kubernetes Secret mounted with
``defaultMode: 0400`` would be). The database keeps only a key id (an HMAC of a
fixed label under the KEK) so that a wrong file is told apart from a damaged
row; neither the id nor a ciphertext opens anything without the file.

A sealed value is ``v1:`` + base64(nonce || ciphertext+tag); its associated data
names the slot, the kind of key and the certificate it belongs to, so a
ciphertext moved to another row (the next root's key as the current issuer's)
fails to open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meshctl.control.ca.errors import CaError

KEK_BYTES = 32
NONCE_BYTES = 12
PREFIX = "v1:"


@dataclass(frozen=True)
class Kek:
    """A key-encryption key and the file it came from (named in errors; the key never is)."""

    key: bytes
    path: Path

    def __repr__(self) -> str:
        return f"Kek({self.path}, id={self.key_id})"

    @property
    def key_id(self) -> str:
        """What the database records: tells this KEK from another, and opens nothing."""
        return "kek:" + hmac.new(self.key, b"meshctl ca key-encryption key id", hashlib.sha256).hexdigest()[:16]

    def seal(self, plaintext: str, aad: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.key).encrypt(nonce, plaintext.encode(), aad.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str, aad: str, *, what: str) -> str:
        """The plaintext; CaError naming `what` (never the bytes) when it does not authenticate."""
        try:
            if not sealed.startswith(PREFIX):
                raise ValueError
            raw = base64.b64decode(sealed[len(PREFIX) :], validate=True)
            return AESGCM(self.key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad.encode()).decode()
        except (ValueError, binascii.Error, InvalidTag, UnicodeDecodeError):
            raise CaError(
                f"{what} in the database does not open under the key-encryption key in {self.path}: "
                "the row was altered or moved from another role"
            ) from None


def load_kek(path: Path, *, create: bool) -> Kek:
    """The KEK in `path`, made there (0600) when missing and `create`. CaError naming the file when it
    is missing, unreadable, readable by others or not a KEK."""
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # made before, or by a replica sharing the file a moment ago: read it
        else:
            with os.fdopen(fd, "w") as f:
                f.write(base64.b64encode(os.urandom(KEK_BYTES)).decode() + "\n")
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except FileNotFoundError:
        raise CaError(
            f"the CA key-encryption key {path} is missing, and the CA in the database is sealed under one: "
            "copy the file from the replica that made the CA (every replica needs the same file; "
            "--ca-kek-file or MESHCTL_CA_KEK_FILE names it)"
        ) from None
    except OSError as e:
        raise CaError(f"the CA key-encryption key {path} cannot be read: {e.strerror}") from None
    if mode & 0o077:
        raise CaError(f"the CA key-encryption key {path} may be read by group or others: chmod 600 it")
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != KEK_BYTES:
        raise CaError(f"{path} is not a CA key-encryption key (one line: {KEK_BYTES} random bytes in base64)")
    return Kek(key, path)


def aad(slot: str, kind: str, fingerprint: str) -> str:
    """What a sealed key is bound to: its slot ("current", "next"), its kind ("root", "issuer") and
    its certificate's fingerprint."""
    return f"meshctl-ca-key:v1:{slot}:{kind}:{fingerprint}"
