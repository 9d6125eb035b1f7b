"""End to end: a real control plane, real sidecars as processes, real apps
and real traffic. Route changes reach the sidecars, a refused snapshot is
reported while traffic keeps flowing, and the mesh survives its control plane."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from helpers import unused_port, wait_until
from meshctl.demo.backends import DemoBackend
from meshproc import ControlPlane, Sidecar, backends_seen, http_route, service

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def apps() -> Iterator[dict[str, DemoBackend]]:
    started = {name: DemoBackend(name).start() for name in ("pricing-v1", "pricing-v2")}
    yield started
    for b in started.values():
        b.stop()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[ControlPlane, list[Sidecar]]]:
    cp = ControlPlane(tmp_path / "cp")
    cp.data_dir.mkdir()
    cp.start()
    sidecars: list[Sidecar] = []
    yield cp, sidecars
    for s in sidecars:
        s.stop()
    cp.stop()


def port_of(b: DemoBackend) -> int:
    return int(b.address.rsplit(":", 1)[1])


def pricing_mesh(cp: ControlPlane, sidecars: list[Sidecar], apps: dict[str, DemoBackend], tmp: Path) -> Sidecar:
    """pricing v1 and v2 behind their sidecars; frontend's sidecar with a local port for pricing."""
    cp.apply(service("frontend"), service("pricing"))
    token = cp.join_token("pricing")
    for version in ("v1", "v2"):
        sc = Sidecar(cp, "pricing", port_of(apps[f"pricing-{version}"]), tmp, token, labels={"version": version})
        sidecars.append(sc.start())
    front = Sidecar(
        cp,
        "frontend",
        unused_port(),
        tmp,
        cp.join_token("frontend"),
        upstreams={"pricing": unused_port()},
        http_proxy_port=unused_port(),
    )
    sidecars.append(front.start())
    port = front.upstreams["pricing"]
    wait_until(
        lambda: set(backends_seen(port, 20)) == {"pricing-v1", "pricing-v2"},
        timeout=20,
        what="both pricing versions to serve through the frontend sidecar",
    )
    return front


def to_subset(version: str) -> dict:
    return http_route("pricing", "pricing", {"backendRefs": [{"name": "pricing", "subset": {"version": version}}]})


def test_route_changes_shift_traffic_and_a_regex_the_proxy_refuses_is_a_422(
    mesh: tuple[ControlPlane, list[Sidecar]], apps: dict[str, DemoBackend], tmp_path: Path
) -> None:
    cp, sidecars = mesh
    front = pricing_mesh(cp, sidecars, apps, tmp_path)
    port = front.upstreams["pricing"]

    cp.apply(to_subset("v1"))
    wait_until(lambda: set(backends_seen(port)) == {"pricing-v1"}, timeout=10, what="traffic on v1 only")
    # The HTTP proxy port routes by Host to any service, with the same rules.
    assert front.http_proxy_port is not None
    for host in ("pricing", "pricing.default", "pricing.default.svc"):
        assert set(backends_seen(front.http_proxy_port, 5, headers={"Host": host})) == {"pricing-v1"}
    # An unknown Host is passed on (the mesh is ALLOW_ANY): to a host that does not resolve here.
    assert backends_seen(front.http_proxy_port, 1, headers={"Host": "nowhere.invalid"})[0] in ("!502", "!503")
    cp.apply(to_subset("v2"))
    wait_until(lambda: set(backends_seen(port)) == {"pricing-v2"}, timeout=10, what="traffic on v2 only")

    # A regex that Python's `re` takes and the data plane's engine does not (look-ahead): the control
    # plane checks it with the data plane's engine, so apply refuses it and no sidecar gets it.
    bad = http_route(
        "pricing",
        "pricing",
        {
            "matches": [{"path": {"type": "RegularExpression", "value": "/(?=x).*"}}],
            "backendRefs": [{"name": "pricing", "subset": {"version": "v1"}}],
        },
    )
    generation = {s["mesh_generation"] for s in cp.sidecars()}
    refused = httpx.post(f"{cp.url}/api/v1/apply", json={"documents": [bad]}, headers=cp.admin)
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["detail"]
    assert error["loc"][-3:] == ["matches", 0, "path"], error
    assert "invalid regular expression: look-around" in error["msg"], error
    assert {s["mesh_generation"] for s in cp.sidecars()} == generation  # nothing written
    assert set(backends_seen(port)) == {"pricing-v2"}

    # Fixing the route is ACKed again.
    cp.apply(to_subset("v1"))
    wait_until(lambda: set(backends_seen(port)) == {"pricing-v1"}, timeout=10, what="traffic back on v1")
    wait_until(
        lambda: all(s["acked_version"] == s["mesh_generation"] and s["last_error"] is None for s in cp.sidecars()),
        timeout=10,
        what="every sidecar to ACK",
    )
    assert {s["service"] for s in cp.sidecars()} == {"frontend", "pricing"}


def test_traffic_survives_the_control_plane_and_a_sidecar_restarts_from_its_cache(
    mesh: tuple[ControlPlane, list[Sidecar]], apps: dict[str, DemoBackend], tmp_path: Path
) -> None:
    cp, sidecars = mesh
    front = pricing_mesh(cp, sidecars, apps, tmp_path)
    port = front.upstreams["pricing"]
    cp.apply(to_subset("v2"))
    wait_until(lambda: set(backends_seen(port)) == {"pricing-v2"}, timeout=10, what="traffic on v2 only")

    cp.stop(signal.SIGKILL)
    assert set(backends_seen(port, 50)) == {"pricing-v2"}
    front.stop()
    front.start()  # the control plane is down: it can only be serving from its cached snapshot
    assert set(backends_seen(port, 50)) == {"pricing-v2"}
    assert "starting from cached snapshot" in front.log.read_text()

    cp.start()  # same data dir: the sidecars find it again (with backoff) and ACK the current version
    wait_until(
        lambda: {s["service"] for s in cp.sidecars() if s["live"]} == {"frontend", "pricing"},
        timeout=20,
        what="sidecars to re-register",
    )
    cp.apply(to_subset("v1"))
    wait_until(lambda: set(backends_seen(port)) == {"pricing-v1"}, timeout=15, what="the change after reconnecting")


def readme_mesh_yaml() -> str:
    """The README's example `mesh.yaml`, exactly as written there."""
    text = README.read_text()
    start = text.index("```yaml\n", text.index("A `mesh.yaml` holds documents")) + len("```yaml\n")
    return text[start : text.index("```", start)]


def test_the_readme_canary_sends_x_canary_to_v2_and_the_rest_by_weight(
    mesh: tuple[ControlPlane, list[Sidecar]], apps: dict[str, DemoBackend], tmp_path: Path
) -> None:
    """The README's mesh.yaml applied as it stands: its header rule (no path, so `PathPrefix /`
    with one header) comes before its `PathPrefix /` rule, in the sidecars and in `explain`."""
    cp, sidecars = mesh
    front = pricing_mesh(cp, sidecars, apps, tmp_path)
    port = front.upstreams["pricing"]
    cp.apply(service("db", "tcp"), service("db-new", "tcp"))  # what the README's TCPRoute names
    example = tmp_path / "mesh.yaml"
    example.write_text(readme_mesh_yaml())
    assert "pricing-canary" in example.read_text()
    cli = tmp_path / "cli"
    cli.mkdir()
    cp.cli("apply", "-f", str(example), data_dir=cli)

    canary = {"x-canary": "true"}
    wait_until(lambda: set(backends_seen(port, headers=canary)) == {"pricing-v2"}, timeout=10, what="x-canary on v2")
    assert set(backends_seen(port, 50, headers=canary)) == {"pricing-v2"}
    rest = backends_seen(port, 200)
    assert set(rest) <= {"pricing-v1", "pricing-v2"} and rest.count("pricing-v1") >= 140  # 90 % expected

    out = cp.cli("explain", "--from", "frontend", "--to", "pricing", "-H", "x-canary: true", data_dir=cli).splitlines()
    first = "default/pricing-canary/rule0/match0"
    assert out[0] == f"{first} matched" and f"  ✓ {first}: matched" in out
    assert f"  ✗ default/pricing-canary/rule1/match0: not tried: {first} matched first" in out
    # The README's TrafficPolicy sets connectionPool limits: explain shows them for each backend, the
    # limit it leaves out as the data plane's default; and frontend's bucket in its RateLimitPolicy.
    limits = "    circuit breakers: max_connections 100, max_pending_requests 50, max_requests 200"
    limits += "; default: max_retries 1024"
    assert limits in out, out
    bucket = "total 1000/s, burst 100; this caller: overrides[0] 500/s, burst 500 (default)"
    assert f"    rate limit (default/pricing, requests per sidecar of default/pricing): {bucket}" in out, out
    out = cp.cli("explain", "--from", "frontend", "--to", "pricing", data_dir=cli).splitlines()
    assert out[0] == "default/pricing-canary/rule1/match0 matched"


def test_join_tokens_are_scoped_to_their_service(mesh: tuple[ControlPlane, list[Sidecar]]) -> None:
    cp, _ = mesh
    cp.apply(service("frontend"), service("pricing"))
    token = {"Authorization": f"Bearer {cp.join_token('pricing')}"}
    body = {"service": "frontend", "address": "127.0.0.1", "inbound_port": 15999, "app_port": 8080}
    r = httpx.put(f"{cp.url}/api/v1/sidecars", json=body, headers=token)
    assert r.status_code == 403 and "cannot join as default/frontend" in r.json()["detail"]
    assert httpx.get(f"{cp.url}/api/v1/services", headers=token).status_code == 403
    assert httpx.post(f"{cp.url}/api/v1/apply", json={"documents": []}, headers=token).status_code == 403
    assert cp.sidecars() == []  # nothing was written

    mine = httpx.put(f"{cp.url}/api/v1/sidecars", json={**body, "service": "pricing"}, headers=token)
    assert mine.status_code == 200, mine.text
    snap = httpx.get(f"{cp.url}/api/v1/sidecars/{mine.json()['id']}/snapshot", params={"wait": 0}, headers=token)
    assert snap.status_code == 200 and snap.json()["version"] >= 1
    held = snap.json()["version"]
    # Holding the current version: nothing newer within the wait.
    same = httpx.get(
        f"{cp.url}/api/v1/sidecars/{mine.json()['id']}/snapshot", params={"wait": 0.2, "version": held}, headers=token
    )
    assert same.status_code == 304
    assert httpx.put(f"{cp.url}/api/v1/sidecars", json=body).status_code == 401
    assert cp.call("POST", "/api/v1/services/default/ghost/join-tokens").status_code == 404

    # Listed without their secret; revoked, a token is refused from the next request on.
    listed = cp.ok("GET", "/api/v1/services/default/pricing/join-tokens")
    assert [t["service"] for t in listed] == ["default/pricing"] and "token" not in listed[0]
    assert httpx.get(f"{cp.url}/api/v1/services/default/pricing/join-tokens", headers=token).status_code == 403
    cp.ok("DELETE", f"/api/v1/services/default/pricing/join-tokens/{listed[0]['id']}")
    again = httpx.put(f"{cp.url}/api/v1/sidecars", json={**body, "service": "pricing"}, headers=token)
    assert again.status_code == 401
    assert cp.call("DELETE", f"/api/v1/services/default/pricing/join-tokens/{listed[0]['id']}").status_code == 404


def test_an_instance_that_stops_heartbeating_leaves_every_snapshot(
    mesh: tuple[ControlPlane, list[Sidecar]], apps: dict[str, DemoBackend], tmp_path: Path
) -> None:
    cp, sidecars = mesh
    front = pricing_mesh(cp, sidecars, apps, tmp_path)
    v2 = next(s for s in sidecars if s.labels.get("version") == "v2")
    assert v2.proc is not None
    v2.proc.kill()  # no goodbye: only its TTL (5 s here) tells the mesh

    def endpoints() -> list[str]:
        config = httpx.get(f"http://127.0.0.1:{front.admin_port}/config", timeout=5).json()
        cluster = next(c for c in config["clusters"] if c["name"] == "out/default/pricing")
        return [e["address"] for e in cluster["endpoints"]]

    wait_until(
        lambda: endpoints() == [f"127.0.0.1:{sidecars[0].inbound_port}"],
        timeout=15,
        what="the dead instance to leave the frontend's snapshot",
    )
    assert set(backends_seen(front.upstreams["pricing"], 30)) == {"pricing-v1"}
    row = next(s for s in cp.sidecars() if s["inbound_port"] == v2.inbound_port)
    assert row["live"] is False


def test_a_fleet_registering_at_once_is_served_and_every_join_counts(mesh: tuple[ControlPlane, list[Sidecar]]) -> None:
    """100 sidecars joining together: none waits forever for a database connection, and each
    join raises the generation exactly once (concurrent raises must not overwrite each other)."""
    cp, _ = mesh
    cp.apply(service("fleet"))
    start = cp.ok("POST", "/api/v1/apply", json={"documents": [], "dry_run": True})
    assert start == []
    token = {"Authorization": f"Bearer {cp.join_token('fleet')}"}

    def join(i: int) -> int:
        body = {"service": "fleet", "address": "127.0.0.1", "inbound_port": 20000 + i, "app_port": 30000 + i}
        return httpx.put(f"{cp.url}/api/v1/sidecars", json=body, headers=token, timeout=60).status_code

    with ThreadPoolExecutor(100) as pool:
        before = time.monotonic()
        codes = list(pool.map(join, range(100)))
    assert codes == [200] * 100 and time.monotonic() - before < 30
    rows = cp.sidecars()
    assert len(rows) == 100
    revisions = len(cp.ok("GET", "/api/v1/revisions"))
    # One raise per revision (the apply) and per endpoint that joined; the tick adds at most a few more.
    assert revisions + 100 <= rows[0]["mesh_generation"] <= revisions + 100 + 5
