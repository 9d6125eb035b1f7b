"""The mesh across three hosts (issue 16, section 3): network namespaces with
their own addresses on a bridge (tests/netns.py), every part a real process
started inside its host with ``ip netns exec``.

- host A: the control plane, bound to A's address, so serving HTTPS (every
  member pins its CA with ``--ca-hash``); and a second instance of the
  Gateway, bound to 0.0.0.0;
- host B: two services' apps and sidecars, the frontend calling the backend
  through its sidecar over mTLS;
- host C: the Gateway's first instance, bound to 0.0.0.0, forwarding into
  the backend on B over mTLS.

The two gateway instances are two registrations (their instance ids, made
once and kept in their cache directories), both live and serving; one
restarted keeps its id and its row. The backend's sidecar counts the mTLS
handshakes of calls from the other hosts and refuses plaintext.

The control plane keeps its SQLite file, also in the PostgreSQL pass: that
server listens on the root namespace's loopback, which host A does not
reach. As root only (CI is)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import wait_until
from meshproc import ControlPlane
from netns import Host, Network, require_root

BODY = "hello from backend\n"
ADMIN = 15100


@dataclass
class Member:
    """`meshctl proxy` or `meshctl gateway` on a host, following the control plane on host A."""

    host: Host
    name: str
    argv: list[str]
    workdir: Path
    admin_port: int = ADMIN
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def cache(self) -> Path:
        return self.workdir / f"cache-{self.name}"

    def start(self) -> Member:
        cmd = [sys.executable, "-m", "meshctl", *self.argv, "--admin-port", str(self.admin_port)]
        cmd += ["--cache-dir", str(self.cache), "--workers", "1", "--grace", "1", "--ttl", "5"]
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(self.host.cmd(*cmd), stdout=out, stderr=subprocess.STDOUT)
        wait_until(self.ready, timeout=60, what=f"{self.name} on {self.host.name} to be ready")
        return self

    def admin(self, path: str) -> tuple[int, str]:
        """GET of its admin listener (loopback of its host)."""
        return self.host.curl(f"http://127.0.0.1:{self.admin_port}{path}")

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log.read_text()}")
        return self.admin("/ready")[0] == 200

    def stats(self) -> dict[str, Any]:
        return dict(json.loads(self.admin("/stats")[1]))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def documents() -> list[dict[str, Any]]:
    def service(name: str) -> dict[str, Any]:
        return {"kind": "Service", "metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}}

    edge = {"listeners": [{"name": "plain", "port": 8080, "protocol": "HTTP"}]}
    route = {"parentRefs": [{"kind": "Gateway", "name": "edge"}], "rules": [{"backendRefs": [{"name": "backend"}]}]}
    return [
        service("backend"),
        service("frontend"),
        service("edge"),
        {"kind": "Gateway", "metadata": {"name": "edge"}, "spec": edge},
        {"kind": "HTTPRoute", "metadata": {"name": "edge-backend"}, "spec": route},
    ]


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[dict[str, Any]]:
    require_root(tools=())
    with Network() as net:
        a, b, c = net.add("cpa"), net.add("apps"), net.add("edge")
        data = tmp_path / "cp"
        data.mkdir()
        cp = ControlPlane(
            data,
            args=("--host", a.address),
            scheme="https",
            host=a.address,
            wrap=tuple(a.cmd()),
            database_url=f"sqlite:///{data / 'mesh.db'}",
        )
        members: list[Member] = []
        app: subprocess.Popen[bytes] | None = None
        try:
            cp.start()
            cp.apply(*documents())
            pin = str(httpx.get(f"{cp.url}/api/v1/ca/serving", verify=False, timeout=5).json()["ca_hash"])

            def member(host: Host, name: str, service: str, *argv: str, admin: int = ADMIN) -> Member:
                token = tmp_path / f"{name}.token"
                token.write_text(cp.join_token(service))
                token.chmod(0o600)
                trust = ["--control-plane", cp.url, "--ca-hash", pin, "--token-file", str(token)]
                started = Member(host, name, [*argv, *trust], tmp_path, admin_port=admin).start()
                members.append(started)
                return started

            site = tmp_path / "site"
            site.mkdir()
            (site / "index.html").write_text(BODY)
            serve = [sys.executable, "-m", "http.server", "8080", "--bind", "127.0.0.1", "--directory", str(site)]
            app = subprocess.Popen(b.cmd(*serve), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            on_b = ("proxy", "--address", b.address, "--namespace", "default")
            backend_args = ("--service", "backend", "--app-port", "8080", "--inbound-port", "15006")
            backend = member(b, "backend", "backend", *on_b, *backend_args)
            frontend_args = ("--service", "frontend", "--app-port", "9", "--inbound-port", "15007")
            frontend_args += ("--upstream", "backend=15001")
            # (another admin port: the same host)
            frontend = member(b, "frontend", "frontend", *on_b, *frontend_args, admin=ADMIN + 1)
            certs = tmp_path / "certs"  # (its listener is plain HTTP: no certificate files)
            certs.mkdir()
            gateway = ("gateway", "--name", "edge", "--cert-dir", str(certs), "--address", "0.0.0.0")
            edge_c = member(c, "edge-c", "edge", *gateway)
            edge_a = member(a, "edge-a", "edge", *gateway)
            yield {
                "net": net,
                "a": a,
                "b": b,
                "c": c,
                "cp": cp,
                "backend": backend,
                "frontend": frontend,
                "edge_a": edge_a,
                "edge_c": edge_c,
            }
        finally:
            for m in reversed(members):
                m.stop()
            if app is not None:
                app.kill()
                app.wait(10)
            cp.stop()


def curl(host: Host, url: str) -> str:
    """The body `url` answers from `host` ("" when nothing answers)."""
    return host.curl(url)[1]


def gateways(cp: ControlPlane) -> dict[str, dict[str, Any]]:
    """The registrations of the Gateway edge, by instance id."""
    return {s["instance"]: s for s in cp.sidecars() if s["service"] == "edge"}


def test_the_mesh_across_three_hosts(hosts: dict[str, Any]) -> None:
    a, b, c, cp = hosts["a"], hosts["b"], hosts["c"], hosts["cp"]
    backend: Member = hosts["backend"]
    edge_a: Member = hosts["edge_a"]
    edge_c: Member = hosts["edge_c"]

    # The frontend on B calls the backend through its sidecar (over mTLS to the backend's inbound).
    wait_until(lambda: curl(b, "http://127.0.0.1:15001/") == BODY, timeout=30, what="frontend -> backend")

    # Both gateway instances serve, from hosts A and C, into host B.
    for host in (c, a):
        wait_until(lambda h=host: curl(h, f"http://{h.address}:8080/") == BODY, timeout=30, what=f"{host.name}")
        assert httpx.get(f"http://{host.address}:8080/", timeout=5).text == BODY  # (from outside: the root namespace)

    # mTLS across hosts: the backend's inbound took TLS handshakes (frontend, the gateways on A and
    # C) and no plaintext; a plaintext call from C to it is refused.
    inbound = backend.stats()["listeners"]["inbound"]
    assert inbound["tls"]["handshakes"] >= 3 and inbound["tls"]["plaintext_accepted"] == 0
    assert BODY not in curl(c, f"http://{b.address}:15006/")
    tls = backend.stats()["listeners"]["inbound"]["tls"]
    assert tls["plaintext_rejected"] >= 1 and tls["plaintext_accepted"] == 0  # (it reached B, and was refused)

    # Two instances of one Gateway, both at 0.0.0.0: two registrations, both live, keyed by the ids
    # each made once and kept in its cache directory; both heartbeat.
    ids = {m.name: next(m.cache.glob("*/instance-id")).read_text().strip() for m in (edge_a, edge_c)}
    first = gateways(cp)
    assert set(first) == set(ids.values()) and len(first) == 2
    assert all(g["live"] and g["gateway"] and g["address"] == "0.0.0.0" for g in first.values())
    wait_until(
        lambda: all(g["last_seen"] > first[i]["last_seen"] for i, g in gateways(cp).items()),
        timeout=30,
        what="both gateway instances to heartbeat",
    )

    # One stopped deregisters only itself, and the other serves meanwhile; restarted, it comes
    # back as the same instance.
    edge_c.stop()
    assert set(gateways(cp)) == {ids["edge-a"]}
    assert curl(a, f"http://{a.address}:8080/") == BODY
    edge_c.start()
    assert set(gateways(cp)) == set(first)
    wait_until(lambda: curl(c, f"http://{c.address}:8080/") == BODY, timeout=30, what="the restarted gateway")
    assert all(g["live"] for g in gateways(cp).values())
