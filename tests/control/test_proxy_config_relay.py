"""The proxy-config relay (``control.proxy_config``, ``sidecar.proxy_config``)
against a real control plane: an operator's request reaches the sidecar's
long-poll, its dump comes back (keys redacted again), several operators at
once share one dump, and the errors (no answer, an answer nobody waits for,
tokens of the wrong kind). The sidecar's dump here is a literal document of
the contract's shape; tests/e2e/test_sidecar_sync.py runs the real one."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from helpers import unused_port
from meshctl.client import ApiClient
from meshctl.control.proxy_config import ConfigDumps, ProxyConfigReport
from meshctl.control.relay import Heard
from meshctl.sidecar.proxy_config import ConfigDumpRelay, sections
from meshproc import ControlPlane, module_control_plane, service

cp = module_control_plane()

DUMP: dict[str, Any] = {
    "version": 7,
    "listeners": [
        {
            "name": "edge",
            "address": "0.0.0.0:8443",
            "bound": "0.0.0.0:8443",
            "tls": {"mode": "simple", "certificates": [{"cert_chain": "CHAIN", "private_key": "-----BEGIN KEY"}]},
        }
    ],
    "routes": [{"listener": "edge", "index": 0, "backends": [{"cluster": "a"}]}],
    "clusters": [{"name": "a"}],
    "endpoints": [{"cluster": "a", "address": "10.0.0.1:80", "health": {"healthy": True}}],
    "identity": None,
}


def join(cp: ControlPlane, name: str) -> tuple[int, str]:
    """A sidecar of `name` registered with its join token: (id, token)."""
    token = cp.join_token(name)
    body = {"service": name, "address": "127.0.0.1", "inbound_port": unused_port(), "app_port": 9, "ttl_seconds": 60}
    r = httpx.put(f"{cp.url}/api/v1/sidecars", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    return int(r.json()["id"]), token


def ask(cp: ControlPlane, sidecar: int, role: str = "reader", timeout: float = 10) -> httpx.Response:
    return cp.call("GET", f"/api/v1/sidecars/{sidecar}/proxy-config?timeout={timeout:g}", role=role)


def test_an_operator_gets_the_sidecars_dump_with_keys_redacted(cp: ControlPlane) -> None:
    cp.apply(service("dumped"))
    sidecar, token = join(cp, "dumped")
    built = []

    def dump() -> dict[str, Any]:
        built.append(threading.get_ident())
        return DUMP

    relay = ConfigDumpRelay(ApiClient(cp.url, token), sidecar_id=lambda: sidecar, dump=dump)
    relay.start()
    try:
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: ask(cp, sidecar), range(3)))
    finally:
        relay.stop()
    for r in answers:
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["sidecar"], body["namespace"], body["service"], body["version"]) == (
            sidecar,
            "default",
            "dumped",
            7,
        )
        (cert,) = body["listeners"][0]["tls"]["certificates"]
        assert cert == {"cert_chain": "CHAIN", "private_key": "<redacted>"}
        assert body["endpoints"] == DUMP["endpoints"]
    assert 1 <= len(built) <= 3  # operators waiting at once share a dump


def test_no_answer_is_a_504_and_an_unwaited_answer_a_410(cp: ControlPlane) -> None:
    cp.apply(service("silent"))
    sidecar, token = join(cp, "silent")
    r = ask(cp, sidecar, timeout=0.5)
    assert r.status_code == 504
    assert f"sidecar {sidecar} (default/silent) did not answer within 0.5s" in r.json()["detail"]

    headers = {"Authorization": f"Bearer {token}"}
    late = httpx.post(f"{cp.url}/api/v1/sidecars/{sidecar}/config-dumps/abc", json=DUMP, headers=headers, timeout=10)
    assert late.status_code == 410
    idle = httpx.get(f"{cp.url}/api/v1/sidecars/{sidecar}/config-dumps?wait=0", headers=headers, timeout=10)
    assert idle.status_code == 204


def test_who_may_ask_and_answer(cp: ControlPlane) -> None:
    cp.apply(service("guarded"), service("other"))
    sidecar, _ = join(cp, "guarded")
    _, other = join(cp, "other")
    headers = {"Authorization": f"Bearer {other}"}
    r = httpx.get(f"{cp.url}/api/v1/sidecars/{sidecar}/config-dumps?wait=0", headers=headers, timeout=10)
    assert r.status_code == 403  # another service's join token cannot answer for it
    r = httpx.get(f"{cp.url}/api/v1/sidecars/{sidecar}/proxy-config", headers=headers, timeout=10)
    assert r.status_code == 403  # nor read it: reader or admin only
    assert ask(cp, 999999).status_code == 404
    assert ask(cp, sidecar, timeout=0).status_code == 422


def test_sections_cut_the_config_and_join_endpoint_health() -> None:
    config = {
        "admin": {"address": "127.0.0.1:15000"},
        "listeners": [
            {"name": "in", "address": "0.0.0.0:0", "routes": [{"backends": [{"cluster": "a"}]}, {"name": "r2"}]},
            {"name": "db", "address": "127.0.0.1:5432", "protocol": "tcp", "cluster": "b"},
        ],
        "clusters": [
            {"name": "a", "lb": "ring_hash", "endpoints": [{"address": "10.0.0.1:80", "weight": 2}]},
            {"name": "b", "endpoints": [{"address": "10.0.0.2:5432"}]},
        ],
    }
    stats = {"clusters": {"a": {"endpoints": {"10.0.0.1:80": {"healthy": False, "ejected": True, "requests": 5}}}}}
    out = sections(config, stats, {"in": "0.0.0.0:4000"})
    assert out["listeners"] == [
        {"name": "in", "address": "0.0.0.0:0", "bound": "0.0.0.0:4000"},
        {"name": "db", "address": "127.0.0.1:5432", "protocol": "tcp", "cluster": "b", "bound": None},
    ]
    assert out["routes"] == [
        {"listener": "in", "index": 0, "backends": [{"cluster": "a"}]},
        {"listener": "in", "index": 1, "name": "r2"},
    ]
    assert out["clusters"] == [{"name": "a", "lb": "ring_hash"}, {"name": "b"}]
    assert out["endpoints"] == [
        {
            "cluster": "a",
            "address": "10.0.0.1:80",
            "weight": 2,
            "health": {"healthy": False, "ejected": True, "requests": 5},
        },
        {"cluster": "b", "address": "10.0.0.2:5432", "health": {}},
    ]


class _Unheard:
    """The announcements' sender (PostgreSQL's NOTIFY, tested with replicas in test_replicas.py):
    here nothing is sent, and what is heard is handed in by the test."""

    def ask(self, *_: Any) -> None: ...

    def done(self, *_: Any) -> None: ...


def test_a_replicas_own_ask_heard_after_the_answer_is_not_taken_for_another_operator() -> None:
    """Every replica hears its own announcements, some after the request they announce was
    answered here: such an echo must not be listed to the sidecar as a request of another
    replica's operator (the sidecar built a dump nobody read: 5 dumps for 3 operators once)."""

    async def scenario() -> list[str]:
        dumps = ConfigDumps()
        dumps.relay = _Unheard()  # type: ignore[assignment]
        waiting = asyncio.create_task(dumps.ask(7, timeout=5))
        await asyncio.sleep(0)
        (request,) = dumps.pending(7)
        assert await dumps.answer(7, request, ProxyConfigReport(version=1))
        assert await waiting is not None
        dumps._heard(Heard("ask", 7, request, seconds=5))  # the echo of its own ask
        return dumps.pending(7)

    assert asyncio.run(scenario()) == []
