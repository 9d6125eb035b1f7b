"""Egress through an http listener used as a forward proxy (``curl -x``): absolute-form requests
routed by their authority, ``allow_any`` passing unknown hosts through and ``registry_only``
refusing them with a counted, logged 403; CONNECT tunnels by allow-list; deny routes; deny tcp
listeners."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from helpers import cluster, header_values, wait_until
from pki import TestPki, openssl_server


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-s", "-S", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def status_and_body(r: subprocess.CompletedProcess[str]) -> tuple[int, str]:
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def proxy_listener(egress: dict[str, Any], routes: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": "egress", "address": "127.0.0.1:0", "routes": routes or [], "egress": egress, **extra}


def egress_stats(dp: Any, listener: str = "egress") -> dict[str, int]:
    stats: dict[str, int] = dp.stats()["listeners"][listener]["egress"]
    return stats


def test_allow_any_forwards_absolute_form_to_the_authority(proxy, http_backend) -> None:
    b = http_backend("outside")
    dp = proxy({"listeners": [proxy_listener({"policy": "allow_any"})]})
    r = curl("-x", f"http://{dp.addresses()['egress']}", f"http://{b.address}/x?y=1", "-H", "X-Test: 1")
    assert status_and_body(r)[0] == 200, r
    seen = b.seen[-1]
    assert seen["path"] == "/x?y=1", "sent upstream in origin form"
    assert header_values(seen, "host") == [b.address]
    assert egress_stats(dp) == {"denied": 0, "passthrough": 1, "tunnelled": 0}


def test_registry_only_refuses_unknown_hosts_and_passes_listed_ones(proxy, http_backend, tmp_path: Path) -> None:
    b = http_backend("api")
    log = tmp_path / "access.log"
    dp = proxy(
        {
            "listeners": [
                proxy_listener(
                    {"policy": "registry_only"},
                    routes=[{"match": {"host": "api.example.test"}, "backends": [{"cluster": "api"}]}],
                    access_log={"path": str(log)},
                )
            ],
            "clusters": [cluster("api", [b.address])],
        }
    )
    via = ("-x", f"http://{dp.addresses()['egress']}")
    code, body = status_and_body(curl(*via, f"http://{b.address}/secret"))
    assert code == 403 and "egress denied" in body
    assert not b.seen, "nothing reached the unknown host"
    # The listed host is routed by the authority of the absolute-form target, not by the Host header.
    code, _ = status_and_body(curl(*via, "-H", "Host: other.test", "http://api.example.test/ok"))
    assert code == 200
    assert b.seen[-1]["path"] == "/ok"
    assert header_values(b.seen[-1], "host") == ["api.example.test"]
    assert egress_stats(dp) == {"denied": 1, "passthrough": 0, "tunnelled": 0}
    lines = wait_until(lambda: (log.read_text().splitlines() if log.exists() else None) or None, what="log lines")
    wait_until(lambda: len(log.read_text().splitlines()) == 2, what="two log lines")
    first = json.loads(log.read_text().splitlines()[0])
    assert first["status"] == 403, lines
    denied = [
        line
        for line in dp.metrics().splitlines()
        if line.startswith("meshctl_egress_total{") and 'listener="egress"' in line and 'result="denied"' in line
    ]
    assert [float(line.rsplit(" ", 1)[1]) for line in denied] == [1.0], denied


def test_connect_tunnels_by_allow_list(proxy, tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    with (
        openssl_server(pki.server("localhost"), "-www") as allowed,
        openssl_server(pki.server("localhost"), "-www") as other,
    ):
        allowed_port, other_port = allowed.rsplit(":", 1)[1], other.rsplit(":", 1)[1]
        dp = proxy(
            {
                "listeners": [
                    proxy_listener(
                        {"policy": "registry_only", "connect": [{"host": "localhost", "port": int(allowed_port)}]}
                    )
                ]
            }
        )
        via = ("-p", "-x", f"http://{dp.addresses()['egress']}", "--cacert", str(pki.roots))
        code, body = status_and_body(curl(*via, f"https://localhost:{allowed_port}/"))
        assert code == 200, body
        r = curl(*via, f"https://localhost:{other_port}/")
        assert r.returncode != 0 and "403" in r.stderr, r
        assert egress_stats(dp) == {"denied": 1, "passthrough": 0, "tunnelled": 1}
        # allow_any tunnels anywhere.
        dp.update({"listeners": [proxy_listener({"policy": "allow_any"}, address=dp.addresses()["egress"])]})
        code, _ = status_and_body(curl(*via, f"https://localhost:{other_port}/"))
        assert code == 200
        assert egress_stats(dp)["tunnelled"] == 2
        # A denied target is refused under allow_any too (a host this caller may not reach).
        deny = {"policy": "allow_any", "connect": [{"host": "localhost", "port": int(other_port), "deny": True}]}
        dp.update({"listeners": [proxy_listener(deny, address=dp.addresses()["egress"])]})
        r = curl(*via, f"https://localhost:{other_port}/")
        assert r.returncode != 0 and "403" in r.stderr, r
        assert status_and_body(curl(*via, f"https://localhost:{allowed_port}/"))[0] == 200
        assert egress_stats(dp) == {"denied": 2, "passthrough": 0, "tunnelled": 3}


def test_deny_routes_and_deny_tcp_listeners(proxy, http_backend) -> None:
    b = http_backend("api")
    dp = proxy(
        {
            "listeners": [
                proxy_listener(
                    {"policy": "allow_any"},
                    routes=[
                        {"match": {"host": "blocked.test"}, "deny": True},
                        {"match": {"host": "api.test"}, "backends": [{"cluster": "api"}]},
                    ],
                ),
                {"name": "db", "address": "127.0.0.1:0", "protocol": "tcp", "deny": True},
            ],
            "clusters": [cluster("api", [b.address])],
        }
    )
    via = ("-x", f"http://{dp.addresses()['egress']}")
    code, body = status_and_body(curl(*via, "http://blocked.test/"))
    assert code == 403 and "egress denied" in body
    assert status_and_body(curl(*via, "http://api.test/"))[0] == 200
    assert egress_stats(dp) == {"denied": 1, "passthrough": 0, "tunnelled": 0}
    host, port = dp.addresses()["db"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.settimeout(10)
        assert s.recv(1) == b"", "closed at once"
    wait_until(lambda: egress_stats(dp, "db")["denied"] == 1, what="the tcp denial counted")
