"""A gateway's certificate files: its snapshots name them relative to
``--cert-dir`` (keys never travel); they are resolved, and checked, here
(``meshctl.sidecar.mesh`` refuses to start on a missing one)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

from meshctl.dataplane_config import CertificateConfig, DataPlaneConfig, ListenerConfig

CERT_FILE_KEYS: tuple[Literal["cert_chain_file", "private_key_file"], ...] = ("cert_chain_file", "private_key_file")


def certificate_files(config: DataPlaneConfig) -> list[tuple[str, str, str]]:
    """(listener, key, path) of every certificate file the listeners' TLS names."""
    return [
        (listener.get("name", "?"), k, cert[k])
        for listener in config.get("listeners", [])
        for cert in _certificates(listener)
        for k in CERT_FILE_KEYS
        if isinstance(cert.get(k), str)
    ]


def _certificates(listener: ListenerConfig) -> list[CertificateConfig]:
    tls = listener.get("tls")
    return (tls.get("certificates") or []) if tls else []


def _under(cert: CertificateConfig, cert_dir: Path) -> CertificateConfig:
    """`cert` with its relative file paths under `cert_dir`."""
    out = cert.copy()
    for k in CERT_FILE_KEYS:
        if k in cert and not Path(cert[k]).is_absolute():
            out[k] = str(cert_dir / cert[k])
    return out


def resolve_certificates(config: DataPlaneConfig, cert_dir: Path) -> DataPlaneConfig:
    """`config` with the relative certificate paths of its listeners under `cert_dir`."""
    if "listeners" not in config:
        return config
    listeners = []
    for listener in config["listeners"]:
        tls = listener.get("tls")
        if tls is not None and tls.get("certificates"):
            listener = listener.copy()
            listener["tls"] = tls | {"certificates": [_under(c, cert_dir) for c in tls["certificates"]]}
        listeners.append(listener)
    return config | {"listeners": listeners}


def certificate_problems(config: DataPlaneConfig) -> tuple[list[str], list[str]]:
    """(errors, warnings) about the certificate files of a resolved `config`: a file that is
    missing or unreadable is an error; a key that others may read, a warning."""
    errors: list[str] = []
    warnings: list[str] = []
    for listener, k, path in certificate_files(config):
        try:
            mode = os.stat(path).st_mode
            with open(path, "rb"):
                pass
        except OSError as e:
            what = "certificate chain" if k == "cert_chain_file" else "private key"
            errors.append(f"listener {listener}: cannot read the {what} {path}: {e.strerror or e}")
            continue
        if k == "private_key_file" and mode & 0o077:
            warnings.append(
                f"the private key {path} may be read by group or others (mode {stat.S_IMODE(mode):04o}): chmod 600 it"
            )
    return errors, warnings
