"""The `meshctl` command as a user runs it: version, proxy with reloads and
signals, and the demo."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

import meshctl
from helpers import cluster, http_listener, route, unused_port, wait_until

MESHCTL = [sys.executable, "-m", "meshctl"]


def test_version() -> None:
    out = subprocess.run([*MESHCTL, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"meshctl {meshctl.__version__}"


@pytest.mark.parametrize(
    ("verb", "offered", "other"),
    [
        (["status"], ["table", "wide", "json", "yaml"], "text"),
        (["ca", "status"], ["table", "json", "yaml"], "text"),
        (["history"], ["table", "json", "yaml"], "text"),
        (["explain", "--from", "web"], ["text", "json", "yaml"], "table"),
        (["get", "svc"], ["table", "wide", "yaml", "json"], "text"),
    ],
)
def test_each_verb_offers_the_output_formats_it_can_print(verb: list[str], offered: list[str], other: str) -> None:
    """One output-format enum for the CLI; each verb lists and accepts only its own share of it
    (and refuses another verb's before connecting to anything)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    shown = subprocess.run([*MESHCTL, *verb, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert f"-o, --output {'|'.join(offered)}" in shown.stdout, shown.stdout
    refused = subprocess.run([*MESHCTL, *verb, "-o", other], capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 2
    assert f"{other!r} is not one of {', '.join(map(repr, offered))}." in refused.stderr, refused.stderr


class ProxyProcess:
    def __init__(self, config_path: Path, log_path: Path):
        self.log_path = log_path
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(
            [*MESHCTL, "proxy", "--config", str(config_path), "--workers", "1", "--grace", "5"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_exit(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout)


@pytest.fixture
def run_proxy(tmp_path: Path) -> Iterator:
    procs: list[ProxyProcess] = []

    def start(config: dict) -> tuple[ProxyProcess, Path]:
        path = tmp_path / "mesh.yaml"
        path.write_text(yaml.safe_dump(config))
        p = ProxyProcess(path, tmp_path / f"proxy-{len(procs)}.log")
        procs.append(p)
        return p, path

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(5)
        p.log.close()


def mesh(web: str, admin: str, target: str, backends: dict[str, str]) -> dict:
    return {
        "admin": {"address": admin},
        "listeners": [http_listener("web", [route(target)], address=web)],
        "clusters": [cluster(n, [a]) for n, a in backends.items()],
    }


def test_proxy_reloads_and_drains_on_signals(backend, run_proxy) -> None:
    a, b = backend("a"), backend("b")
    web, admin = f"127.0.0.1:{unused_port()}", f"127.0.0.1:{unused_port()}"
    backends = {"a": a.address, "b": b.address}
    proc, path = run_proxy(mesh(web, admin, "a", backends))

    def ready() -> bool:
        try:
            return httpx.get(f"http://{admin}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=20, what="the proxy to be ready")
    assert httpx.get(f"http://{web}/").headers["x-backend"] == "a"

    # A broken file is reported and ignored; traffic stays on the old config.
    path.write_text("listeners: [{name: web, address: nowhere}]\n")
    proc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "rejected" in proc.output(), what="the rejection to be logged")
    assert "listeners[0].address" in proc.output()
    assert httpx.get(f"http://{web}/").headers["x-backend"] == "a"

    # A good file is picked up by the watcher, no signal needed.
    path.write_text(yaml.safe_dump(mesh(web, admin, "b", backends)))
    wait_until(lambda: httpx.get(f"http://{web}/").headers["x-backend"] == "b", what="the watched file to apply")

    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
    assert "stopped" in proc.output()


def test_sigint_finishes_in_flight_requests(backend, run_proxy) -> None:
    slow = backend("slow")
    web, admin = f"127.0.0.1:{unused_port()}", f"127.0.0.1:{unused_port()}"
    proc, _ = run_proxy(mesh(web, admin, "slow", {"slow": slow.address}))
    wait_until(lambda: "config applied" in proc.output(), timeout=20, what="the proxy to start")
    with httpx.Client(timeout=10) as c:
        result: dict[str, int] = {}
        t = threading.Thread(target=lambda: result.update(status=c.get(f"http://{web}/?ms=700").status_code))
        t.start()
        wait_until(lambda: slow.requests == 1, what="the request in flight")
        proc.proc.send_signal(signal.SIGINT)
        t.join(10)
    assert result["status"] == 200
    assert proc.wait_exit() == 0


def test_bad_initial_config_exits_2_with_paths(run_proxy) -> None:
    proc, _ = run_proxy({"listeners": [{"name": "web", "address": "127.0.0.1:1", "routes": [route("ghost")]}]})
    assert proc.wait_exit() == 2
    assert "listeners[0].routes[0].backends[0].cluster: unknown cluster 'ghost'" in proc.output()


def test_demo_runs_a_whole_mesh_end_to_end() -> None:
    env = {**os.environ, "COLUMNS": "120"}
    out = subprocess.run([*MESHCTL, "demo", "--requests", "1000"], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {m[1]: (int(m[2]), m[3]) for m in re.finditer(r"│ (\S+)\s*│\s*(\d+) │\s*([\d.]+%)", out.stdout)}
    assert set(rows) == {"frontend", "catalog", "pricing-v1", "pricing-v2"}, out.stdout
    assert all(success == "100.0%" for _, success in rows.values()), out.stdout
    assert rows["frontend"][0] >= 1000 and rows["catalog"][0] >= 1000
    split = re.search(r"v1 ([\d.]+)%\s+v2 ([\d.]+)%", out.stdout)
    assert split and 5 <= float(split[2]) <= 16, out.stdout  # the 90/10 canary, within sampling noise
    # The resilience step (tests/e2e/test_demo_resilience.py checks its numbers closely).
    assert re.search(r"an instance killed mid-load: \d{4,} requests, 0 failed", out.stdout), out.stdout
    fault = re.search(r"with the fault: \d+ requests, ([\d.]+)% ok", out.stdout)
    assert fault and 87 <= float(fault[1]) <= 93, out.stdout
    assert re.search(r"after the rollback: \d+ requests, 100\.0% ok", out.stdout), out.stdout
    assert "stopping the mesh" in out.stdout


def test_the_file_fed_proxy_loads_no_http_client_or_cli_stack() -> None:
    """Every sidecar pays for what `meshctl proxy` imports: the memory target counts on this
    (secrets and hashlib load OpenSSL, 4.5 MB; dataclasses imports inspect; shutil bz2 and lzma,
    which argparse's help formatter asks for the terminal width on each `add_argument`; typing
    0.4 MB for annotations; the data plane's TypedDicts are for annotations). Its flags are parsed
    too, as a proxy starting does."""
    heavy = ("ssl", "urllib.request", "typer", "rich", "fastapi", "secrets", "hashlib", "dataclasses", "shutil")
    heavy += ("meshctl.dataplane_config", "typing")
    parsed = "meshctl.cli.proxy.parser().parse_args(['--config', 'mesh.yaml'])"
    assert loaded_by("meshctl.cli.proxy", heavy, then=parsed) == "[]"


def test_the_control_plane_fed_sidecar_loads_no_second_tls_library() -> None:
    """A sidecar fed by a control plane needs Python's ssl for the API; its key, CSR and the
    certificates it reads are the data plane's (`cryptography` was ~10 MB more of each sidecar),
    and its version is read without importlib.metadata (~2.4 MB)."""
    heavy = ("cryptography", "importlib.metadata", "typer", "rich", "fastapi", "pydantic", "httpx")
    assert loaded_by("meshctl.sidecar.mesh", heavy) == "[]"


def loaded_by(module: str, modules: tuple[str, ...], *, then: str = "None") -> str:
    """Which of `modules` a fresh interpreter has loaded once it imported `module` and evaluated
    `then` (printed list)."""
    probe = f"import sys, {module}; {then}; print(sorted(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()
