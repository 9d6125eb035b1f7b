"""`meshctl bench` end to end: request counts, report fields, errors counted,
coordinated omission corrected under open loop, plots, TCP modes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import unused_port
from meshctl import BenchBackend
from meshctl.loadgen import run_bench


@pytest.fixture
def fast_backend() -> Iterator[BenchBackend]:
    b = BenchBackend(http="127.0.0.1:0", tcp_echo="127.0.0.1:0", tcp_sink="127.0.0.1:0")
    yield b
    b.stop()


def bench_json(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "meshctl", "bench", "--json", *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_request_count_and_report_fields(fast_backend) -> None:
    r = bench_json(f"http://{fast_backend.addresses['http']}/", "-c", "4", "-n", "500", "--threads", "1")
    assert r["requests"] == 500
    assert r["statuses"]["2xx"] == 500
    assert r["errors"]["total"] == 0
    assert r["bytes"] == 500 * len("ok\n")
    assert r["loop"] == "closed" and r["protocol"] == "http1"
    lat = r["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert r["rps"] > 0


def test_http2(fast_backend) -> None:
    r = bench_json(f"h2c://{fast_backend.addresses['http']}/", "-c", "2", "-n", "200")
    assert r["protocol"] == "http2"
    assert r["statuses"]["2xx"] == 200


def test_refused_connections_are_counted() -> None:
    r = bench_json(f"http://127.0.0.1:{unused_port()}/", "-c", "2", "-d", "0.5")
    assert r["requests"] == 0
    assert r["errors"]["connect"] > 0
    assert r["errors"]["total"] == r["errors"]["connect"]


def test_status_classes_are_errors(backend) -> None:
    b = backend("b")
    r = bench_json(f"http://{b.address}/status/503", "-c", "1", "-n", "20")
    assert r["errors"]["status_5xx"] == 20
    assert r["statuses"]["5xx"] == 20


class _StallOnce(BaseHTTPRequestHandler):
    """Answers at once, except that the first request after 0.5 s waits 1 s."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    started = 0.0
    stalled = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if time.monotonic() - self.started > 0.5 and not self.stalled.is_set():
            self.stalled.set()
            time.sleep(1.0)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def stalling_server() -> Iterator[str]:
    _StallOnce.started = time.monotonic()
    _StallOnce.stalled = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StallOnce)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_open_loop_shows_a_stall_in_p99(stalling_server) -> None:
    r = run_bench(
        {"url": f"http://{stalling_server}/", "connections": 1, "rps": 200, "duration": 3, "threads": 1},
        show_progress=False,
    )
    # ~200 requests were due during the 1 s stall: timed from when they were due, they fill the tail.
    assert r["latency_ms"]["p99"] > 500, r["latency_ms"]
    assert r["loop"] == "open"
    assert 450 <= r["requests"] <= 600


def test_closed_loop_hides_the_same_stall(stalling_server) -> None:
    r = run_bench(
        {"url": f"http://{stalling_server}/", "connections": 1, "duration": 2, "threads": 1}, show_progress=False
    )
    assert r["latency_ms"]["max"] > 900  # the one slow sample
    assert r["latency_ms"]["p99"] < 500, "one sample among many: this is what open loop corrects"


def test_plot_writes_a_png(fast_backend, tmp_path: Path) -> None:
    png = tmp_path / "latency.png"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshctl",
            "bench",
            f"http://{fast_backend.addresses['http']}/",
            "-n",
            "300",
            "--plot",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "p99 ms" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tcp_echo_and_bulk(fast_backend) -> None:
    echo = bench_json(f"tcp://{fast_backend.addresses['tcp_echo']}", "-c", "2", "-n", "300", "--size", "128")
    assert echo["requests"] == 300
    assert echo["bytes"] == 300 * 2 * 128
    bulk = bench_json(f"tcp://{fast_backend.addresses['tcp_sink']}", "--tcp-mode", "bulk", "-c", "1", "-d", "0.5")
    assert bulk["throughput_mbps"] > 100
    assert bulk["errors"]["total"] == 0


def test_bad_options_exit_2_naming_the_option() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "meshctl", "bench", "ftp://x", "--json"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2
    assert "url:" in out.stderr
