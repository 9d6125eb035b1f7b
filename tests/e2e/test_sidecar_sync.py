"""`meshctl apply --wait`, `meshctl status`'s exit code and `meshctl
proxy-config` end to end: a real control plane, pricing and frontend behind
real sidecars (mTLS), an ingress gateway that NACKs a config its data plane
cannot bind, and the `meshctl` binary as a process. A sidecar that never
answers is a registration made through the API (as a hung sidecar looks)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from helpers import unused_port, wait_until
from meshctl.demo.backends import DemoBackend
from meshproc import ControlPlane, Gateway, Sidecar, get, run_meshctl, service

FRONTEND_ID = "spiffe://cluster.local/ns/default/sa/frontend"


@dataclass
class Mesh:
    cp: ControlPlane
    pricing: Sidecar
    frontend: Sidecar
    workdir: Path

    def meshctl(self, *args: str, token: str = "admin") -> subprocess.CompletedProcess[str]:
        return run_meshctl(self.cp, *args, data_dir=self.workdir / "cli", token=token, timeout=120)

    def ok(self, *args: str) -> str:
        out = self.meshctl(*args)
        assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def id_of(self, service: str) -> int:
        (row,) = [r for r in self.cp.sidecars() if r["service"] == service and r["live"]]
        return int(row["id"])

    def hung(self, name: str, port: int, ttl: int = 120) -> int:
        """A sidecar of `name` registered through the API that never ACKs nor answers."""
        body = {"service": name, "address": "127.0.0.1", "inbound_port": port, "app_port": 9, "ttl_seconds": ttl}
        return int(self.cp.ok("PUT", "/api/v1/sidecars", json=body)["id"])

    def in_sync(self) -> bool:
        generation = self.cp.ok("GET", "/api/v1/mesh")["generation"]
        return all(r["acked_version"] == generation for r in self.cp.sidecars() if r["live"])


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp_path = tmp_path_factory.mktemp("sync")
    cp = ControlPlane(tmp_path / "cp")
    cp.data_dir.mkdir()
    cp.start()
    app = DemoBackend("pricing").start()
    started: list[Sidecar] = []
    try:
        cp.apply(service("frontend"), service("pricing"), service("ghost"))
        pricing = Sidecar(cp, "pricing", app.port, tmp_path, cp.join_token("pricing")).start()
        started.append(pricing)
        frontend = Sidecar(
            cp, "frontend", unused_port(), tmp_path, cp.join_token("frontend"), upstreams={"pricing": unused_port()}
        ).start()
        started.append(frontend)
        port = frontend.upstreams["pricing"]
        wait_until(lambda: get("127.0.0.1", port, "/")[0] == 200, timeout=60, what="pricing through the frontend")
        mesh = Mesh(cp, pricing, frontend, tmp_path)
        wait_until(mesh.in_sync, timeout=30, what="both sidecars in sync")
        yield mesh
    finally:
        for s in started:
            s.stop()
        app.stop()
        cp.stop()


def route_doc(weight: int) -> dict[str, Any]:
    return {
        "kind": "HTTPRoute",
        "metadata": {"name": "pricing"},
        "spec": {
            "parentRefs": [{"name": "pricing"}],
            "rules": [{"backendRefs": [{"name": "pricing", "weight": weight}]}],
        },
    }


def write(path: Path, *docs: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(path)


# === apply --wait and status ===


def test_apply_wait_returns_once_every_sidecar_acked(mesh: Mesh) -> None:
    out = mesh.ok("apply", "-f", write(mesh.workdir / "route.yaml", route_doc(7)), "--wait", "--timeout", "60")
    generation = mesh.cp.ok("GET", "/api/v1/mesh")["generation"]
    lines = out.splitlines()
    assert lines[0] == "httproute/default/pricing created"
    assert lines[-1] == f"generation {generation}: ACKed by 2 sidecars"
    # It returned after the ACKs, not before: both run that generation (or a newer one) now.
    assert all(r["acked_version"] >= generation for r in mesh.cp.sidecars())

    assert mesh.meshctl("apply", "-f", "-", "--wait", "--dry-run").returncode == 2


def test_status_exits_0_in_sync_and_1_naming_a_sidecar_behind(mesh: Mesh) -> None:
    wait_until(mesh.in_sync, timeout=30, what="both sidecars in sync")
    out = mesh.meshctl("status")
    assert out.returncode == 0, out.stderr
    assert ": 2 sidecars, 2 in sync" in out.stdout.splitlines()[0]

    hung = mesh.hung("ghost", unused_port())
    try:
        started = time.monotonic()
        out = mesh.meshctl("status", "--grace", "1")
        assert out.returncode == 1
        assert time.monotonic() - started >= 1.0  # it gave the sidecar its grace first
        assert f"error: sidecar {hung} (default/ghost) is behind generation" in out.stderr
        assert "no ACK yet" in out.stderr
        assert "waiting" in out.stdout  # the table is shown all the same
        assert mesh.meshctl("status", "-o", "json", "--grace", "0").returncode == 1

        # Behind, then caught up within the grace: exit 0.
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshctl", "status", "--grace", "60", "-o", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")},
                "MESHCTL_SERVER": mesh.cp.url,
                "MESHCTL_TOKEN": mesh.cp.token("admin"),
            },
        )
        wait_until(lambda: mesh.in_sync() is False and _others_in_sync(mesh, hung), timeout=30, what="the others")
        generation = mesh.cp.ok("GET", "/api/v1/mesh")["generation"]
        mesh.cp.ok("POST", f"/api/v1/sidecars/{hung}/status", json={"version": generation})
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        mesh.cp.ok("DELETE", f"/api/v1/sidecars/{hung}")


def _others_in_sync(mesh: Mesh, but: int) -> bool:
    generation = mesh.cp.ok("GET", "/api/v1/mesh")["generation"]
    return all(r["acked_version"] == generation for r in mesh.cp.sidecars() if r["live"] and r["id"] != but)


def test_apply_wait_times_out_naming_the_sidecars_behind(mesh: Mesh) -> None:
    hung = mesh.hung("ghost", unused_port())
    try:
        started = time.monotonic()
        out = mesh.meshctl("apply", "-f", write(mesh.workdir / "r.yaml", route_doc(8)), "--wait", "--timeout", "2")
        assert out.returncode == 1
        assert time.monotonic() - started >= 2.0
        generation = mesh.cp.ok("GET", "/api/v1/mesh")["generation"]
        assert f"error: timed out after 2s waiting for generation {generation}: " in out.stderr
        assert f"sidecar {hung} (default/ghost): no ACK yet" in out.stderr
        # The real sidecars are not named: they ACKed.
        assert f"sidecar {mesh.id_of('pricing')} " not in out.stderr
    finally:
        mesh.cp.ok("DELETE", f"/api/v1/sidecars/{hung}")


def test_a_sidecar_that_nacks_fails_apply_wait_and_status(mesh: Mesh) -> None:
    """A gateway told to listen on a port that is taken: its data plane refuses the config."""
    cert_dir = mesh.workdir / "certs"
    cert_dir.mkdir(exist_ok=True, mode=0o700)
    free = unused_port()
    gw = {"kind": "Gateway", "metadata": {"name": "edge"}, "spec": {"listeners": [_http("web", free)]}}
    mesh.cp.apply(service("edge"), gw)
    gateway = Gateway(mesh.cp, "edge", cert_dir, mesh.workdir, mesh.cp.join_token("edge"))
    taken = socket.socket()
    try:
        gateway.start()
        edge = mesh.id_of("edge")
        wait_until(mesh.in_sync, timeout=30, what="the gateway in sync")
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        gw["spec"]["listeners"].append(_http("more", busy))

        out = mesh.meshctl("apply", "-f", write(mesh.workdir / "gw.yaml", gw), "--wait", "--timeout", "60")
        assert out.returncode == 1, out.stdout + out.stderr
        assert out.stdout.splitlines() == ["gateway/default/edge configured"]
        generation = mesh.cp.ok("GET", "/api/v1/mesh")["generation"]
        (line,) = out.stderr.splitlines()
        assert line.startswith(f"error: sidecar {edge} (default/edge) refused generation {generation}: ")
        assert f"127.0.0.1:{busy}" in line and "in use" in line  # the data plane's own words

        out = mesh.meshctl("status")
        assert out.returncode == 1
        assert f"error: sidecar {edge} (default/edge) refused generation {generation}: " in out.stderr
        assert f"NACK v{generation}" in out.stdout
    finally:
        gateway.stop()  # it deregisters: the mesh is in sync again
        taken.close()
    wait_until(lambda: mesh.meshctl("status").returncode == 0, timeout=30, what="status to exit 0 again")


def _http(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "port": port, "protocol": "HTTP"}


# === proxy-config ===


def test_proxy_config_table_shows_every_section(mesh: Mesh) -> None:
    out = mesh.ok("proxy-config", "default/frontend")
    frontend = mesh.id_of("frontend")
    assert out.splitlines()[0].startswith(f"sidecar {frontend} (default/frontend), snapshot ")
    for heading in ("LISTENERS", "ROUTES", "CLUSTERS", "ENDPOINTS", "IDENTITY"):
        assert f"\n{heading}\n" in out
    port = mesh.frontend.upstreams["pricing"]
    (listener,) = [line for line in out.splitlines() if f"127.0.0.1:{port}" in line]
    assert "http" in listener.split() and "outbound" in listener.split()
    (endpoint,) = [line for line in out.splitlines() if f"127.0.0.1:{mesh.pricing.inbound_port}" in line]
    assert "healthy" in endpoint.split()
    assert f"SPIFFE ID     {FRONTEND_ID}" in out
    assert "trust bundle  1 root, sha256 " in out
    assert "PRIVATE KEY" not in out

    # By id, one section.
    routes = mesh.ok("proxy-config", str(frontend), "routes")
    assert routes.splitlines()[2] == "ROUTES"
    assert routes.splitlines()[3].split() == ["LISTENER", "#", "NAME", "MATCH", "BACKENDS"]
    assert "\nLISTENERS\n" not in routes


def test_proxy_config_json_and_yaml(mesh: Mesh) -> None:
    wait_until(mesh.in_sync, timeout=30, what="both sidecars in sync")
    generation = mesh.cp.ok("GET", "/api/v1/mesh")["generation"]
    dump = json.loads(mesh.ok("proxy-config", "frontend", "-n", "default", "-o", "json"))
    assert dump["sidecar"] == mesh.id_of("frontend") and dump["service"] == "frontend"
    # A sidecar's version is the generation its own config last changed at (control/fanout.py):
    # the one the control plane serves it now, at most the mesh's.
    served = mesh.cp.ok("GET", f"/api/v1/sidecars/{dump['sidecar']}/snapshot", params={"wait": 0})["version"]
    assert dump["version"] == served <= generation
    assert {"listeners", "routes", "clusters", "endpoints", "identity"} <= set(dump)
    port = mesh.frontend.upstreams["pricing"]
    (listener,) = [li for li in dump["listeners"] if li["bound"] == f"127.0.0.1:{port}"]
    assert "routes" not in listener
    assert all(r["listener"] and isinstance(r["index"], int) for r in dump["routes"])
    (ep,) = [e for e in dump["endpoints"] if e["address"] == f"127.0.0.1:{mesh.pricing.inbound_port}"]
    assert ep["health"]["healthy"] is True and ep["health"]["ejected"] is False
    assert any(c["name"] == ep["cluster"] for c in dump["clusters"])
    assert all("endpoints" not in c for c in dump["clusters"])
    text = json.dumps(dump)
    assert "PRIVATE KEY" not in text and 'private_key"' not in text.replace('"<redacted>"', "")

    # The identity: the SVID's validity and a digest of the CA's roots, as the control plane has them.
    identity = yaml.safe_load(mesh.ok("proxy-config", "default/frontend", "identity", "-o", "yaml"))
    assert identity["spiffe_id"] == FRONTEND_ID
    assert identity["not_after"] > identity["not_before"]
    roots = "".join(mesh.cp.ok("GET", "/api/v1/identity/bundle")["roots"])
    der = b"".join(c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(roots.encode()))
    assert identity["trust_bundle"] == {"roots": 1, "sha256": hashlib.sha256(der).hexdigest()}

    endpoints = json.loads(mesh.ok("proxy-config", "default/pricing", "endpoints", "-o", "json"))
    assert isinstance(endpoints, list)  # a section alone: its entries

    # A reader token may look (it is config), not only the admin token.
    assert mesh.meshctl("proxy-config", "default/frontend", "identity", token="reader").returncode == 0


def test_proxy_config_errors(mesh: Mesh) -> None:
    out = mesh.meshctl("proxy-config", "999999")
    assert out.returncode == 1 and "404 sidecar 999999 not found" in out.stderr
    out = mesh.meshctl("proxy-config", "default/nope")
    assert out.returncode == 1 and "404 service default/nope not found" in out.stderr
    out = mesh.meshctl("proxy-config", "ghost")
    assert out.returncode == 1 and "default/ghost has no live sidecar" in out.stderr
    out = mesh.meshctl("proxy-config", "frontend", "bogus")
    assert out.returncode == 2

    a, b = mesh.hung("ghost", unused_port()), mesh.hung("ghost", unused_port(), ttl=6)
    try:
        out = mesh.meshctl("proxy-config", "default/ghost")
        assert out.returncode == 1
        assert f"default/ghost has 2 live sidecars ({a}, {b}): give one of these ids" in out.stderr

        # Registered but not answering (stopped without deregistering, or hung).
        started = time.monotonic()
        out = mesh.meshctl("proxy-config", str(a), "--timeout", "1")
        assert out.returncode == 1 and time.monotonic() - started >= 1.0
        assert f"504 sidecar {a} (default/ghost) did not answer within 1s" in out.stderr

        # Its registration expired: gone, said at once.
        wait_until(lambda: not next(r for r in mesh.cp.sidecars() if r["id"] == b)["live"], timeout=30, what="expiry")
        out = mesh.meshctl("proxy-config", str(b))
        assert out.returncode == 1 and f"410 sidecar {b} (default/ghost) is gone: no heartbeat since " in out.stderr
    finally:
        mesh.cp.ok("DELETE", f"/api/v1/sidecars/{a}")
        mesh.cp.ok("DELETE", f"/api/v1/sidecars/{b}")
