"""The real data plane's verdict on a compiled snapshot, once the process that receives it has
added what it adds: a sidecar its SVID files (and the roots, when the mesh has no CA bundle
yet), a gateway its certificate files from --cert-dir."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

from meshctl import validate_config
from meshctl.sidecar.mesh import resolve_certificates
from pki import TestPki


@functools.cache
def _svid_files() -> dict[str, str]:
    pki = TestPki(Path(tempfile.mkdtemp(prefix="meshctl-pki-")))
    return pki.svid("spiffe://cluster.local/ns/default/sa/frontend").identity(pki.roots)


def validate(config: dict[str, Any], cert_dir: Path | None = None) -> None:
    """The real data plane accepts `config` once the sidecar has added its SVID files (and, for a
    gateway, found its certificates in `cert_dir`); else ConfigError."""
    if cert_dir is not None:
        config = dict(resolve_certificates(config, cert_dir))  # type: ignore[arg-type]
    files = _svid_files()
    section = {**config.get("identity", {}), "cert_chain_file": files["cert_chain_file"]}
    section["private_key_file"] = files["private_key_file"]
    section.setdefault("roots", Path(files["roots_file"]).read_text())
    validate_config({**config, "identity": section})


def certificate_dir(**hosts: str) -> Path:
    """A fresh --cert-dir holding `<ref>.pem` and `<ref>.key` for each ref=host name given."""
    directory = Path(tempfile.mkdtemp(prefix="meshctl-certs-"))
    pki = TestPki(directory / "pki")
    for ref, host in hosts.items():
        issued = pki.server(host)
        (directory / f"{ref}.pem").write_bytes(issued.chain.read_bytes())
        (directory / f"{ref}.key").write_bytes(issued.key.read_bytes())
    return directory
