"""A mesh member's instance id: the key of its registration (``SidecarRegister.instance``).

A gateway always sends one, so that two instances of one Gateway bound to 0.0.0.0 on
different hosts are two registrations. Unless ``--instance-id`` names it, the id is made
once (this host's name and 8 random hex digits, e.g. ``edge-1-3f2a9c1b``) and kept in the
member's cache directory beside its snapshot and SVID: the same instance restarting sends
the same id; another host (another cache directory) another. A sidecar sends one only when
given ``--instance-id``: its endpoint (address and inbound port) already tells it apart."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

#: What the control plane takes (`meshctl.control.models.INSTANCE`).
VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
FILE = "instance-id"


def check(value: str) -> str:
    """`value` if it is a valid instance id (`--instance-id`'s argparse type)."""
    if not VALID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r}: letters, digits, '.', '_', '-' and ':' (at most 128)")
    return value


def generated() -> str:
    """A new id: this host's name (its first label, what the pattern takes of it) and 8 hex digits."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", os.uname().nodename.split(".")[0])[:40].strip("-_") or "host"
    # os.urandom, as `secrets` reads it: importing `secrets` loads OpenSSL (hmac, hashlib), 4.5 MB
    # of every proxy's memory for these 8 digits.
    return f"{host}-{os.urandom(4).hex()}"


def kept(directory: Path) -> str:
    """The id kept in `directory`, made and written there the first time."""
    path = directory / FILE
    try:
        found = path.read_text().strip()
        if VALID.fullmatch(found):
            return found
    except OSError:
        pass
    value = generated()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(value + "\n")
    return value
