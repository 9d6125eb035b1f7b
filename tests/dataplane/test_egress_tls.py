"""TLS origination: a cluster with ``tls: {server_name, ca_file}`` reaches an HTTPS server
outside the mesh whose certificate is signed by its own CA; a wrong name or a wrong CA fails
the call and is counted."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from meshctl import ConfigError, validate_config
from pki import TestPki, openssl_server


def config(upstream: str, tls: dict[str, Any]) -> dict[str, Any]:
    return {
        "listeners": [
            {
                "name": "out",
                "address": "127.0.0.1:0",
                "routes": [{"backends": [{"cluster": "api"}], "retry": {"attempts": 0}}],
            }
        ],
        "clusters": [{"name": "api", "endpoints": [{"address": upstream}], "tls": tls}],
    }


def get(dp: Any) -> int:
    r = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", f"http://{dp.addresses()['out']}/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return int(r.stdout or 0)


def test_tls_origination_reaches_a_server_signed_by_its_own_ca(proxy, tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    stranger = TestPki(tmp_path / "other", name="other root")
    with openssl_server(pki.server("api.example.test"), "-www") as upstream:
        dp = proxy(config(upstream, {"server_name": "api.example.test", "ca_file": str(pki.roots)}))
        assert get(dp) == 200
        failures = dp.stats()["clusters"]["api"]["tls_failures"]
        assert sum(failures.values()) == 0

        dp.update(config(upstream, {"server_name": "wrong.example.test", "ca": pki.roots.read_text()}))
        assert get(dp) in (502, 503)
        dp.update(config(upstream, {"server_name": "api.example.test", "ca_file": str(stranger.roots)}))
        assert get(dp) in (502, 503)
        failures = dp.stats()["clusters"]["api"]["tls_failures"]
        assert failures["untrusted"] >= 1 and sum(failures.values()) >= 2, failures


def test_cluster_tls_takes_exactly_one_form(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        validate_config(
            {
                "clusters": [
                    {"name": "a", "endpoints": [], "tls": {"server_name": "x.test", "peer_ids": ["spiffe://td/x"]}},
                    {"name": "b", "endpoints": [], "tls": {"server_name": "x.test", "ca_file": str(tmp_path / "none")}},
                    {"name": "c", "original_destination": True, "endpoints": []},
                ]
            }
        )
    errors = dict(exc.value.errors)
    assert errors["clusters[0].tls.peer_ids"].startswith("give peer_ids (mesh mTLS) or server_name")
    assert errors["clusters[1].tls.ca_file"].startswith("cannot read")
    assert errors["clusters[2].endpoints"].startswith("not allowed with original_destination")
