"""Replicas and failover (issue 16): three control-plane processes on one
PostgreSQL database and twenty real sidecars (``meshctl proxy``), each given
the three URLs in a rotated order, so that each replica is the first choice
of some. A route change is applied (``meshctl apply`` given the URLs too,
the dead one first) the moment the replica a third of the sidecars watch is
killed with SIGKILL. Every sidecar runs the change within 2 s, requests
through every sidecar keep succeeding before, during and after, no sidecar
joins again as a new instance, and no revision is duplicated."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import pg
from helpers import unused_port, wait_until
from meshctl.demo.backends import DemoBackend
from meshctl.trust import ca_pin
from meshproc import ControlPlane, Sidecar, get, http_route, service

SIDECARS = 20
#: The budget for the change, from the apply's answer to the sidecar running it.
CHANGE_SECONDS = 2.0


def to_subset(version: str) -> dict[str, object]:
    return http_route("pricing", "pricing", {"backendRefs": [{"name": "pricing", "subset": {"version": version}}]})


def join(first: ControlPlane, data_dir: Path) -> Path:
    """Another replica's data dir, as an operator provisions one: the first's key-encryption key
    (the CA is in the database, sealed under it) and the API tokens it made (the database keeps
    their hashes; the tests read the files)."""
    data_dir.mkdir()
    for f in [first.data_dir / "ca-kek", *first.data_dir.glob("*.token")]:
        shutil.copy(f, data_dir / f.name)
    return data_dir


def pin(plane: ControlPlane) -> str:
    """The pin of the serving CA every replica's certificate is issued by."""
    return ca_pin((plane.data_dir / "tls" / "ca.pem").read_text())


def member(plane: ControlPlane) -> tuple[str, ...]:
    """A sidecar's flags to trust the replicas' serving CA."""
    return ("--ca-hash", pin(plane))


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[ControlPlane]]:
    """Three replicas serving HTTPS on loopback, one database, one serving CA."""
    url = pg.database("failover")
    first = ControlPlane(tmp_path / "cp0", database_url=url, args=("--tls",), scheme="https")
    first.data_dir.mkdir()
    first.start()
    planes = [first]
    for i in (1, 2):
        plane = ControlPlane(join(first, tmp_path / f"cp{i}"), database_url=url, args=("--tls",), scheme="https")
        plane.verify = str(first.data_dir / "tls" / "ca.pem")  # (the first's CA file trusts them all)
        planes.append(plane.start())
    yield planes
    for plane in planes:
        plane.stop(signal.SIGKILL)


@dataclass
class Watch:
    """Requests through every sidecar's HTTP proxy (Host: pricing), round after round, on a
    thread: which app answered each, when, and every failure."""

    sidecars: list[Sidecar]
    #: Per sidecar, when it first answered from pricing-v2 (monotonic).
    switched: dict[int, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            for i, sc in enumerate(self.sidecars):
                assert sc.http_proxy_port is not None
                status, headers = get("127.0.0.1", sc.http_proxy_port, "/", {"Host": "pricing"})
                self.requests += 1
                if status != 200:
                    self.failures.append(f"sidecar {i}: {status} at {time.monotonic():.3f}")
                elif headers.get("x-backend") == "pricing-v2":
                    self.switched.setdefault(i, time.monotonic())


def meshctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshctl", *args], capture_output=True, text=True, env=env, timeout=60)


def test_sidecars_fail_over_to_another_replica_during_a_route_change(
    replicas: list[ControlPlane], tmp_path: Path
) -> None:
    cp0, cp1, _ = replicas
    urls = [p.url for p in replicas]
    v1, v2 = DemoBackend("pricing-v1").start(), DemoBackend("pricing-v2").start()
    sidecars: list[Sidecar] = []
    try:
        cp1.apply(service("frontend"), service("pricing"), to_subset("v1"))
        tokens = {name: cp1.join_token(name) for name in ("frontend", "pricing")}

        def make(i: int) -> Sidecar:
            """Sidecar i, its URLs rotated by i: replica i % 3 is its first choice."""
            first, *others = urls[i % 3 :] + urls[: i % 3]
            plane = replicas[i % 3]
            assert plane.url == first
            workdir = tmp_path / f"sc{i}"
            workdir.mkdir()
            common = {"workdir": workdir, "http_proxy_port": unused_port()}
            # The flag repeated (one list); one pin for every replica.
            common |= {"args": ("--control-plane", ",".join(others), *member(cp0))}
            if i < 2:
                app = (v1, v2)[i]
                port = int(app.address.rsplit(":", 1)[1])
                version = {"version": f"v{i + 1}"}
                return Sidecar(plane, "pricing", port, token=tokens["pricing"], labels=version, **common)
            return Sidecar(plane, "frontend", unused_port(), token=tokens["frontend"], **common)

        sidecars += [make(i) for i in range(SIDECARS)]
        # 20 processes on 2 shared cores: a few at a time, with generous deadlines.
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda sc: sc.start(), sidecars))
        ids = {r["id"] for r in cp1.sidecars()}
        assert len(ids) == SIDECARS

        def all_on_v1() -> bool:
            return all(
                get("127.0.0.1", sc.http_proxy_port or 0, "/", {"Host": "pricing"})[1].get("x-backend") == "pricing-v1"
                for sc in sidecars
            )

        wait_until(all_on_v1, timeout=60, what="every sidecar to route pricing to v1")
        revisions_before = cp1.ok("GET", "/api/v1/revisions")
        generation_before = cp1.ok("GET", "/api/v1/mesh")["generation"]

        watch = Watch(sidecars)
        watcher = threading.Thread(target=watch.run, name="watch", daemon=True)
        watcher.start()
        wait_until(lambda: watch.requests >= 3 * SIDECARS, timeout=30, what="traffic through every sidecar")

        change = tmp_path / "v2.yaml"
        change.write_text(
            "kind: HTTPRoute\nmetadata: {name: pricing}\nspec:\n  parentRefs: [{name: pricing}]\n"
            "  rules: [{backendRefs: [{name: pricing, subset: {version: v2}}]}]\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
        env |= {"MESHCTL_TOKEN": cp0.token("admin"), "MESHCTL_DATA_DIR": str(tmp_path / "cli")}
        env["MESHCTL_CA_HASH"] = pin(cp0)
        # The replica a third of the sidecars watch dies as the change is made; the CLI is given it first.
        assert cp0.proc is not None
        cp0.proc.kill()
        out = meshctl("apply", "-f", str(change), "--server", ",".join(urls), env=env)
        applied = time.monotonic()
        assert out.returncode == 0, out.stderr
        cp0.proc.wait(10)

        deadline = applied + CHANGE_SECONDS
        while len(watch.switched) < SIDECARS and time.monotonic() < deadline + 0.5:
            time.sleep(0.02)
        late = {i: round(t - applied, 3) for i, t in watch.switched.items() if t - applied > CHANGE_SECONDS}
        missing = sorted(set(range(SIDECARS)) - set(watch.switched))
        assert not missing and not late, (
            f"not switched within {CHANGE_SECONDS}s: missing {missing}, late {late}\n"
            + "\n".join(sidecars[i].log.read_text()[-3000:] for i in missing[:2])
        )
        took = sorted(round(t - applied, 3) for t in watch.switched.values())
        print(f"switched after the apply answered: min {took[0]}s, max {took[-1]}s")
        # The sidecars that watched the killed replica moved to another one without joining again.
        moved = [sc for i, sc in enumerate(sidecars) if i % 3 == 0]
        assert all(
            f"watching {cp1.url}" in sc.log.read_text() or f"watching {replicas[2].url}" in sc.log.read_text()
            for sc in moved
        )
        # Traffic goes on after the change too, then the record is read.
        rounds = watch.requests
        wait_until(lambda: watch.requests >= rounds + 2 * SIDECARS, timeout=30, what="traffic after the change")
        watch.stop.set()
        watcher.join(30)
        assert watch.failures == [], watch.failures[:20]
        assert all(sc.proc is not None and sc.proc.poll() is None for sc in sidecars)

        # Nobody joined again as a new instance: the same 20 rows, each live.
        rows = cp1.sidecars()
        assert {r["id"] for r in rows} == ids
        assert all(r["live"] for r in rows)
        # One revision for the change; ids distinct and increasing; one new generation at least.
        revisions = cp1.ok("GET", "/api/v1/revisions")
        assert len(revisions) == len(revisions_before) + 1
        numbers = [r["id"] for r in revisions]
        assert numbers == sorted(set(numbers))
        generation = cp1.ok("GET", "/api/v1/mesh")["generation"]
        assert generation > generation_before
        assert replicas[2].ok("GET", "/api/v1/mesh")["generation"] == generation
        # And every sidecar ACKs that generation, through the replica it moved to.
        wait_until(
            lambda: all(r["acked_version"] == generation for r in cp1.sidecars()),
            timeout=30,
            what="every sidecar to ACK the change",
        )
    finally:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda sc: sc.stop(), sidecars))
        v1.stop()
        v2.stop()


def test_a_cli_with_several_urls_reaches_a_live_replica(replicas: list[ControlPlane], tmp_path: Path) -> None:
    """The CLI given the URLs of the replicas, a dead one first, answers from the next."""
    cp0, cp1, cp2 = replicas
    cp0.stop(signal.SIGKILL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
    env |= {"MESHCTL_TOKEN": cp1.token("admin"), "MESHCTL_DATA_DIR": str(tmp_path / "cli")}
    env["MESHCTL_CA_HASH"] = pin(cp1)  # asked of the first URL that answers
    env["MESHCTL_SERVER"] = f"{cp0.url},{cp1.url}"
    out = meshctl("get", "services", "-o", "json", "--server", cp0.url, "--server", cp2.url, env=env)
    assert out.returncode == 0, out.stderr
    env["MESHCTL_SERVER"] = f"{cp0.url},{cp1.url}"
    out = meshctl("get", "services", "-o", "json", env=env)
    assert out.returncode == 0, out.stderr
    bad = meshctl("get", "services", "--server", f"{cp1.url},ftp://nowhere", env=env)
    assert bad.returncode == 2 and "ftp://nowhere" in bad.stderr, bad.stderr
    assert cp2.healthy()


def test_proxy_config_through_a_replica_the_sidecar_does_not_poll(replicas: list[ControlPlane], tmp_path: Path) -> None:
    """`meshctl proxy-config` asked of one replica reaches a sidecar that long-polls another:
    the request and the dump travel as announcements (control.relay), a dump larger than one
    notification included."""
    _, cp1, cp2 = replicas
    app = DemoBackend("pricing-v1").start()
    cp1.apply(service("pricing"), service("frontend"))
    # Enough upstreams that the dump takes several notifications (each holds < 8,000 bytes).
    cp1.apply(*(service(f"shop{i}") for i in range(40)))
    upstreams = {f"shop{i}": unused_port() for i in range(40)}
    port = int(app.address.rsplit(":", 1)[1])
    workdir = tmp_path / "sc"
    workdir.mkdir()
    sc = Sidecar(cp2, "pricing", port, workdir, cp1.join_token("pricing"), upstreams=upstreams, args=member(cp2))
    try:
        sc.start()  # follows cp2 only
        (row,) = cp1.sidecars()
        out = httpx.get(
            f"{cp1.url}/api/v1/sidecars/{row['id']}/proxy-config?timeout=8",
            headers=cp1.reader,
            timeout=30,
            verify=cp1._verify,
        )
        assert out.status_code == 200, out.text
        dump = out.json()
        assert dump["sidecar"] == row["id"] and dump["service"] == "pricing"
        assert len(out.content) > 8000
        assert len(dump["clusters"]) >= 40 and dump["identity"]["spiffe_id"].endswith("/sa/pricing")
        # Nobody waits for it: a dump posted to another replica is refused as before (410).
        late = cp1.call("POST", f"/api/v1/sidecars/{row['id']}/config-dumps/nobody", json={"version": 1})
        assert late.status_code == 410, late.text
    finally:
        sc.stop()
        app.stop()


def test_tap_through_a_replica_the_sidecars_do_not_poll(replicas: list[ControlPlane], tmp_path: Path) -> None:
    """A tap opened on one replica reaches sidecars that long-poll another: the session is
    announced to it, and the events the sidecar sends there are relayed back."""
    _, cp1, cp2 = replicas
    app = DemoBackend("pricing-v1").start()
    cp1.apply(service("pricing"), service("frontend"))
    workdir = tmp_path / "sc"
    workdir.mkdir()
    port = int(app.address.rsplit(":", 1)[1])
    backend = Sidecar(cp2, "pricing", port, workdir, cp1.join_token("pricing"), args=member(cp2))
    front = Sidecar(
        cp2,
        "frontend",
        unused_port(),
        workdir,
        cp1.join_token("frontend"),
        upstreams={"pricing": unused_port()},
        args=member(cp2),
    )
    lines: list[dict[str, object]] = []

    def tap() -> None:
        url = f"{cp1.url}/api/v1/tap/default/frontend?limit=5&seconds=60"
        with httpx.stream("GET", url, headers=cp1.admin, timeout=90, verify=cp1._verify) as r:
            assert r.status_code == 200, r.read()
            lines.extend(json.loads(line) for line in r.iter_lines() if line.strip())

    try:
        backend.start()
        front.start()
        frontend_id = next(r["id"] for r in cp1.sidecars() if r["service"] == "frontend")
        tapping = threading.Thread(target=tap, daemon=True)
        tapping.start()

        def events() -> bool:
            get("127.0.0.1", front.upstreams["pricing"], "/tapped")
            return not tapping.is_alive()

        wait_until(events, timeout=60, what="five tapped requests relayed from the other replica")
        *seen, end = lines
        assert end == {"end": {"reason": "limit", "events": 5, "dropped": 0}}
        assert len(seen) == 5 and all(e["sidecar"] == frontend_id and e["path"] == "/tapped" for e in seen)
    finally:
        front.stop()
        backend.stop()
        app.stop()
