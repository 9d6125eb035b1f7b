"""Access logs and the tracing wiring of real `meshctl proxy` processes: the
file-fed proxy's --access-log and --trace-sample-percent; sidecars writing
where a Telemetry says or where --access-log overrides it, one line per
request with the contract's fields on each hop; logrotate (rename, SIGHUP,
a new file); and spans reaching the control plane's trace store with the
sidecar's token, which stays out of /config."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from helpers import HttpBackend, cluster, http_listener, route, unused_port, wait_until
from meshctl.cli.proxy import parser as proxy_parser
from meshctl.sidecar.telemetry import (
    TOKEN_FILE,
    ControlPlaneCollector,
    access_log_option,
    file_edits,
    with_access_log,
)
from meshproc import ControlPlane, Sidecar, get, service

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
#: Sampled (flags 01): every hop keeps the caller's decision and exports its span.
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
WAIT = 30.0  # generous: a loaded two-core machine
TEXT_LINE = re.compile(r'^\S+ (?P<direction>\S+) "(?P<method>\S+) (?P<target>\S+) \S+" (?P<status>\d{3}) ')


def lines(path: Path, n: int) -> list[str]:
    """The first `n` lines of `path`, once it has them."""

    def ready() -> list[str] | None:
        text = path.read_text() if path.exists() else ""
        return text.splitlines() if len(text.splitlines()) >= n and text.endswith("\n") else None

    return wait_until(ready, timeout=WAIT, what=f"{n} lines in {path}")[:n]


def first(log: Path, parse: Callable[[str], Any], /, **want: Any) -> Any:
    """The first line of `log`, parsed (json.loads, or a pattern's match), that has the values
    `want`, once there is one."""

    def found() -> Any:
        text = log.read_text() if log.exists() else ""
        parsed = (parse(line) for line in text.splitlines())
        return next((x for x in parsed if x is not None and all(x[k] == v for k, v in want.items())), None)

    return wait_until(found, timeout=WAIT, what=f"a line with {want} in {log}")


def admin_config(port: int) -> dict[str, Any]:
    return dict(httpx.get(f"http://127.0.0.1:{port}/config", timeout=5).json())


# === what the sidecar adds (no processes) ===

SNAPSHOT: dict[str, Any] = {
    "listeners": [
        {"name": "inbound", "address": "127.0.0.1:1", "access_log": {"path": "/var/log/x.log", "format": "text"}},
        {"name": "outbound/default/b", "address": "127.0.0.1:2"},
    ],
    "clusters": [],
    "telemetry": {
        "service": "a",
        "namespace": "default",
        "workload": "a-127.0.0.1:1",
        "tracing": {"sample_percent": 1},
    },
}


def test_spans_go_to_the_control_plane_with_a_token_file_unless_a_collector_is_named(tmp_path: Path) -> None:
    token_path = tmp_path / "identity" / TOKEN_FILE
    collector = ControlPlaneCollector("http://cp.example:7070/", "s3cret", token_path)
    local = collector.apply(SNAPSHOT)
    assert local["telemetry"]["tracing"] == {
        "sample_percent": 1,
        "collector": "http://cp.example:7070/v1/traces",
        "token_file": str(token_path),
    }
    assert token_path.read_text().strip() == "s3cret" and (token_path.stat().st_mode & 0o777) == 0o600
    assert "s3cret" not in json.dumps(local)
    assert "collector" not in SNAPSHOT["telemetry"]["tracing"], "the control plane's config is kept as sent"
    # A collector the Telemetry names gets no mesh token; a config without tracing is left alone.
    named = SNAPSHOT | {"telemetry": {"tracing": {"sample_percent": 5, "collector": "https://otel.example/v1/traces"}}}
    assert collector.apply(named) == named
    assert collector.apply({"listeners": []}) == {"listeners": []}
    # Without a token (a control plane without auth): the URL alone.
    tokenless = ControlPlaneCollector("http://cp.example:7070", None, tmp_path / "never")
    assert "token_file" not in tokenless.apply(SNAPSHOT)["telemetry"]["tracing"]
    assert not (tmp_path / "never").exists()


def test_the_access_log_flags_override_every_listeners_log(tmp_path: Path) -> None:
    p = proxy_parser()
    args = p.parse_args(["--config", "x.yaml", "--access-log", "logs/access.log", "--access-log-format", "text"])
    log = access_log_option(p, args)
    assert log == {"path": str(Path("logs/access.log").resolve()), "format": "text"}
    local = with_access_log(SNAPSHOT, log)
    assert [x["access_log"] for x in local["listeners"]] == [log, log]
    assert with_access_log(SNAPSHOT, None) is SNAPSHOT
    assert access_log_option(p, p.parse_args(["--config", "x", "--access-log", "-"])) == {"path": "-", "format": "json"}
    assert access_log_option(p, p.parse_args(["--config", "x"])) is None
    edit = file_edits(None, 25)
    assert edit is not None and edit({"listeners": []})["telemetry"] == {"tracing": {"sample_percent": 25}}
    assert file_edits(None, None) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--access-log-format", "text"],
        ["--access-log", "-", "--access-log-format", "xml"],
        ["--trace-sample-percent", "101"],
        ["--trace-sample-percent", "nan"],
    ],
)
def test_bad_telemetry_flags_exit_2(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "meshctl", "proxy", "--config", "none.yaml", *argv], capture_output=True, text=True
    )
    assert out.returncode == 2 and "error:" in out.stderr.lower(), out.stderr


# === the file-fed proxy ===


def answering(proc: subprocess.Popen[bytes], out: Path, port: int, path: str) -> bool:
    """Whether the proxy answers 200 on `port`; an AssertionError with its output when it exited."""
    if proc.poll() is not None:
        raise AssertionError(f"the proxy exited {proc.returncode}:\n{out.read_text()}")
    return get("127.0.0.1", port, path)[0] == 200


@pytest.fixture
def file_proxy(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.wait(15)


def test_the_file_fed_proxy_logs_where_the_flags_say_and_reopens_on_sighup(
    tmp_path: Path, http_backend: Any, file_proxy: list[subprocess.Popen[bytes]]
) -> None:
    app: HttpBackend = http_backend()
    web, admin = f"127.0.0.1:{unused_port()}", unused_port()
    config = tmp_path / "mesh.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "admin": {"address": f"127.0.0.1:{admin}"},
                "listeners": [http_listener("web", [route("c")], address=web)],
                "clusters": [cluster("c", [app.address])],
            }
        )
    )
    log, out = tmp_path / "access.log", tmp_path / "proxy.out"
    cmd = [sys.executable, "-m", "meshctl", "proxy", "--config", str(config), "--workers", "1", "--grace", "1"]
    cmd += ["--access-log", str(log), "--trace-sample-percent", "50"]
    with out.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path)
    file_proxy.append(proc)
    wait_until(lambda: answering(proc, out, admin, "/ready"), timeout=WAIT, what="the proxy to be ready")
    running = admin_config(admin)
    assert running["listeners"][0]["access_log"] == {"path": str(log), "format": "json"}
    assert running["telemetry"]["tracing"]["sample_percent"] == 50

    assert get("127.0.0.1", int(web.rsplit(":", 1)[1]), "/one", {"x-request-id": "r-1"})[0] == 200
    (first,) = (json.loads(line) for line in lines(log, 1))
    assert (first["method"], first["path"], first["status"], first["request_id"]) == ("GET", "/one", 200, "r-1")
    assert first["upstream"] == app.address and first["listener"] == "web"

    # logrotate: the file is moved away, then SIGHUP (its postrotate) makes the proxy start a new one.
    rotated = log.rename(tmp_path / "access.log.1")
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "access logs reopened" in out.read_text(), timeout=WAIT, what="the reopen to be logged")
    assert get("127.0.0.1", int(web.rsplit(":", 1)[1]), "/two")[0] == 200
    assert [json.loads(line)["path"] for line in lines(log, 1)] == ["/two"]
    assert [json.loads(line)["path"] for line in lines(rotated, 1)] == ["/one"]
    assert proc.poll() is None


def test_the_file_fed_proxy_writes_text_lines_to_stderr(
    tmp_path: Path, http_backend: Any, file_proxy: list[subprocess.Popen[bytes]]
) -> None:
    app: HttpBackend = http_backend()
    web = f"127.0.0.1:{unused_port()}"
    config = tmp_path / "mesh.json"
    config.write_text(
        json.dumps(
            {"listeners": [http_listener("web", [route("c")], address=web)], "clusters": [cluster("c", [app.address])]}
        )
    )
    out = tmp_path / "proxy.out"
    cmd = [sys.executable, "-m", "meshctl", "proxy", "--config", str(config), "--workers", "1", "--grace", "1"]
    cmd += ["--access-log", "-", "--access-log-format", "text"]
    with out.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    file_proxy.append(proc)
    port = int(web.rsplit(":", 1)[1])
    wait_until(lambda: answering(proc, out, port, "/text"), timeout=WAIT, what="the proxy to answer")

    line = first(out, TEXT_LINE.match, status="200")
    assert (line["direction"], line["method"], line["target"], line["status"]) == (
        "outbound",
        "GET",
        f"{web}/text",
        "200",
    )


# === sidecars ===


def test_sidecars_log_each_hop_rotate_on_sighup_and_send_spans_to_the_control_plane(
    cp: ControlPlane, tmp_path: Path, http_backend: Any
) -> None:
    app: HttpBackend = http_backend()
    catalog_log, frontend_log, mesh_log = tmp_path / "catalog.log", tmp_path / "frontend.log", tmp_path / "mesh.log"
    telemetry = [
        # Everyone: every request traced, JSON lines into mesh.log...
        {
            "kind": "Telemetry",
            "metadata": {"name": "mesh"},
            "spec": {"tracing": {"samplingPercent": 100}, "accessLog": {"path": str(mesh_log)}},
        },
        # ...but frontend writes text lines of its own.
        {
            "kind": "Telemetry",
            "metadata": {"name": "frontend"},
            "spec": {"targetRefs": [{"name": "frontend"}], "accessLog": {"format": "text", "path": str(frontend_log)}},
        },
    ]
    cp.apply(service("catalog"), service("frontend"), *telemetry)
    port = int(app.address.rsplit(":", 1)[1])
    # catalog's operator puts its log elsewhere on its host: --access-log overrides the Telemetry's path.
    catalog = Sidecar(cp, "catalog", port, tmp_path, cp.join_token("catalog"), args=("--access-log", str(catalog_log)))
    frontend = Sidecar(
        cp, "frontend", unused_port(), tmp_path, cp.join_token("frontend"), upstreams={"catalog": unused_port()}
    )
    sidecars = [catalog.start(), frontend.start()]
    try:
        out_port = frontend.upstreams["catalog"]
        headers = {"x-request-id": "hop-1", "traceparent": TRACEPARENT}
        wait_until(lambda: get("127.0.0.1", out_port, "/items", headers)[0] == 200, timeout=WAIT, what="a call")

        # The caller's hop: a text line; the callee's: a JSON line naming the caller's identity.
        outbound = first(frontend_log, TEXT_LINE.match, status="200")
        assert (outbound["direction"], outbound["method"]) == ("outbound", "GET")
        inbound = first(catalog_log, json.loads, request_id="hop-1", status=200)
        assert (inbound["direction"], inbound["path"], inbound["status"]) == ("inbound", "/items", 200)
        assert inbound["identity"] == "spiffe://cluster.local/ns/default/sa/frontend"
        assert (inbound["request_id"], inbound["trace_id"]) == ("hop-1", TRACE_ID)
        assert inbound["upstream"] == app.address
        assert not mesh_log.exists(), "both sidecars write where they were told to instead"

        # Spans went to the control plane's trace store, with the sidecar's token from a 0600 file.
        config = admin_config(catalog.admin_port)
        tracing = config["telemetry"]["tracing"]
        assert tracing["collector"] == f"{cp.url}/v1/traces" and tracing["sample_percent"] == 100
        token_file = Path(tracing["token_file"])
        assert token_file.read_text().strip() == catalog.token
        assert (token_file.stat().st_mode & 0o777) == 0o600
        assert catalog.token not in json.dumps(config), "the token stays out of /config"

        def traced() -> set[str] | None:
            r = cp.call("GET", f"/api/v1/traces/{TRACE_ID}", role="reader")
            services = {s["service"] for s in r.json()["spans"]} if r.status_code == 200 else set()
            return services if {"frontend", "catalog"} <= services else None

        wait_until(traced, timeout=WAIT, what="both sidecars' spans in the trace store")

        # logrotate on catalog's host: move the file, SIGHUP; the sidecar lives on and starts a new file.
        rotated = catalog_log.rename(tmp_path / "catalog.log.1")
        assert catalog.proc is not None
        catalog.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "access logs reopened" in catalog.log.read_text(), timeout=WAIT, what="the reopen")
        assert get("127.0.0.1", out_port, "/after-rotation")[0] == 200
        first(catalog_log, json.loads, path="/after-rotation")
        assert all(json.loads(line)["path"] != "/after-rotation" for line in rotated.read_text().splitlines())
        assert catalog.proc.poll() is None and catalog.ready()
    finally:
        for s in sidecars:
            s.stop()
