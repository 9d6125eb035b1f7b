"""Access logs in the data plane (a DataPlane in this process, real sockets):
one JSON line per request with the documented fields, the response flags of
the proxy's own answers (no route, upstream failure and timeout, overflow,
rate-limited, faults, denied, no healthy upstream, retried), a line per TCP
connection, the text format, stderr ("-"), the peer's identity over mTLS,
and reopening the file after logrotate moved it."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from helpers import HttpBackend, cluster, http_listener, route, unused_port, wait_until
from meshctl import DataPlane
from pki import TestPki

MakeProxy = Callable[..., DataPlane]

#: Every key of an HTTP line (the contract's, in its order).
HTTP_KEYS = [
    "ts",
    "direction",
    "listener",
    "route",
    "client",
    "identity",
    "method",
    "authority",
    "path",
    "protocol",
    "status",
    "grpc_status",
    "flags",
    "request_bytes",
    "response_bytes",
    "duration_ms",
    "upstream_ms",
    "upstream",
    "request_id",
    "trace_id",
]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
#: Generous: a loaded two-core machine.
WAIT = 20.0


def lines(path: Path, n: int) -> list[str]:
    """The first `n` lines of the access log at `path`, once it has them (written off the request
    path, so a moment after the answer)."""

    def ready() -> list[str] | None:
        text = path.read_text() if path.exists() else ""
        done = text.splitlines()
        return done if len(done) >= n and text.endswith("\n") else None

    return wait_until(ready, timeout=WAIT, what=f"{n} lines in {path}")[:n]


def records(path: Path, n: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(path, n)]


def request(
    addr: str, path: str = "/", method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, int]:
    """(status, body, local port) of one request on its own connection."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        local = conn.sock.getsockname()[1]
        resp = conn.getresponse()
        return resp.status, resp.read(), local
    finally:
        conn.close()


def logged_listener(log: Path | str, routes: list[dict[str, Any]], fmt: str = "json", **extra: Any) -> dict[str, Any]:
    listener = http_listener("web", routes)
    listener["access_log"] = {"path": str(log), "format": fmt}
    return listener | extra


# === the JSON line ===


def test_one_json_line_per_request_with_every_field(
    tmp_path: Path, http_backend: Callable[..., HttpBackend], proxy: MakeProxy
) -> None:
    app = http_backend()
    log = tmp_path / "access.log"
    dp = proxy(
        {
            "listeners": [logged_listener(log, [route("c") | {"name": "api"}], direction="outbound")],
            "clusters": [cluster("c", [app.address], service="shop/catalog")],
        }
    )
    addr = dp.addresses()["web"]
    headers = {"x-request-id": "req-1", "traceparent": TRACEPARENT, "content-type": "text/plain"}
    status, body, local_port = request(addr, "/items/42", "POST", b"hello", headers)
    assert status == 200
    (line,) = records(log, 1)
    assert list(line) == HTTP_KEYS
    assert datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).tzinfo is not None
    assert line["ts"].endswith(("Z", "+00:00")), "RFC 3339 in UTC"
    assert abs((datetime.now(UTC) - datetime.fromisoformat(line["ts"].replace("Z", "+00:00"))).total_seconds()) < 60
    assert {k: line[k] for k in HTTP_KEYS if k not in ("ts", "duration_ms", "upstream_ms")} == {
        "direction": "outbound",
        "listener": "web",
        "route": "api",
        "client": f"127.0.0.1:{local_port}",
        "identity": None,  # plaintext: no peer certificate
        "method": "POST",
        "authority": addr,
        "path": "/items/42",
        "protocol": "HTTP/1.1",
        "status": 200,
        "grpc_status": None,
        "flags": [],
        "request_bytes": 5,
        "response_bytes": len(body),
        "upstream": app.address,
        "request_id": "req-1",
        "trace_id": TRACE_ID,
    }
    assert 0 <= line["upstream_ms"] <= line["duration_ms"] < 10_000


def test_lines_come_in_request_order_and_a_request_without_ids_gets_a_request_id(
    tmp_path: Path, http_backend: Callable[..., HttpBackend], proxy: MakeProxy
) -> None:
    app = http_backend()
    log = tmp_path / "access.log"
    dp = proxy({"listeners": [logged_listener(log, [route("c")])], "clusters": [cluster("c", [app.address])]})
    for i in range(5):
        assert request(dp.addresses()["web"], f"/n/{i}")[0] == 200
    got = records(log, 5)
    assert [r["path"] for r in got] == [f"/n/{i}" for i in range(5)]
    ids = [r["request_id"] for r in got]
    assert all(ids) and len(set(ids)) == 5, "the proxy makes one when the client sent none"
    assert {r["direction"] for r in got} == {"outbound"}  # the default without mesh TLS


# === response flags ===


@dataclass(frozen=True)
class Case:
    """A request the proxy answers (or marks) itself, and the flag its line must carry."""

    flag: str
    route: dict[str, Any] = field(default_factory=dict)
    listener: dict[str, Any] = field(default_factory=dict)
    path: str = "/"
    status: int = 200
    app_status: int = 200
    app_delay: float = 0.0


CASES = [
    Case("no_route", route={"match": {"path_prefix": "/api"}}, path="/elsewhere", status=404),
    Case("fault_abort", route={"fault": {"abort": {"percent": 100, "http_status": 503}}}, status=503),
    Case("fault_delay", route={"fault": {"delay": {"percent": 100, "fixed_ms": 20}}}),
    Case("denied", listener={"authorization": {"default": "deny"}}, status=403),
    Case("upstream_timeout", route={"timeout_ms": 100, "retry": {"attempts": 0}}, status=504, app_delay=1.0),
    Case("retried", route={"retry": {"attempts": 1, "codes": [500]}}, status=500, app_status=500),
]


@pytest.mark.parametrize("case", CASES, ids=[c.flag for c in CASES])
def test_the_proxys_own_answers_carry_their_flags(
    case: Case, tmp_path: Path, http_backend: Callable[..., HttpBackend], proxy: MakeProxy
) -> None:
    app = http_backend(status=case.app_status, delay=case.app_delay)
    log = tmp_path / "access.log"
    dp = proxy(
        {
            "listeners": [logged_listener(log, [route("c") | case.route], **case.listener)],
            "clusters": [cluster("c", [app.address])],
        }
    )
    assert request(dp.addresses()["web"], case.path)[0] == case.status
    (line,) = records(log, 1)
    assert line["status"] == case.status and case.flag in line["flags"], line
    if case.flag == "no_route":
        assert (line["route"], line["upstream"], line["upstream_ms"]) == ("", None, None)
    if case.flag in ("fault_abort", "denied"):
        assert line["upstream"] is None and line["upstream_ms"] is None  # answered before any upstream
    if case.flag == "fault_delay":
        assert line["duration_ms"] >= 20


def test_an_unreachable_upstream_and_an_empty_cluster(tmp_path: Path, proxy: MakeProxy) -> None:
    log = tmp_path / "access.log"
    dead = f"127.0.0.1:{unused_port()}"
    dp = proxy(
        {
            "listeners": [
                logged_listener(
                    log,
                    [
                        route("dead", path_prefix="/dead") | {"retry": {"attempts": 0}},
                        route("empty", path_prefix="/empty"),
                    ],
                )
            ],
            "clusters": [cluster("dead", [dead], connect_timeout_ms=500), cluster("empty", [])],
        }
    )
    assert request(dp.addresses()["web"], "/dead")[0] == 502  # connect failure: the proxy says 502
    assert request(dp.addresses()["web"], "/empty")[0] == 503
    failed, empty = records(log, 2)
    assert "upstream_failure" in failed["flags"] and failed["upstream"] == dead
    assert "no_healthy_upstream" in empty["flags"] and empty["upstream"] is None


def test_overflow(tmp_path: Path, http_backend: Callable[..., HttpBackend], proxy: MakeProxy) -> None:
    app = http_backend(delay=1.0)
    log = tmp_path / "access.log"
    dp = proxy(
        {
            "listeners": [logged_listener(log, [route("c")])],
            "clusters": [cluster("c", [app.address], circuit_breakers={"max_requests": 1})],
        }
    )
    addr = dp.addresses()["web"]
    # One request holds the only slot (the app takes a second) while another comes.
    first = threading.Thread(target=request, args=(addr, "/first"))
    first.start()
    wait_until(lambda: len(app.seen) == 1, timeout=WAIT, what="the first request to reach the app")
    assert request(addr, "/second")[0] == 503
    first.join()
    got = {r["path"]: r for r in records(log, 2)}
    assert got["/second"]["flags"] == ["overflow"] and got["/second"]["upstream"] is None
    assert got["/first"]["flags"] == [] and got["/first"]["upstream"] == app.address


def test_rate_limited(tmp_path: Path, http_backend: Callable[..., HttpBackend], proxy: MakeProxy) -> None:
    app = http_backend()
    log = tmp_path / "access.log"
    limit = {"total": {"rps": 0.001, "burst": 1}}
    dp = proxy(
        {"listeners": [logged_listener(log, [route("c")], rate_limit=limit)], "clusters": [cluster("c", [app.address])]}
    )
    assert [request(dp.addresses()["web"], "/")[0] for _ in range(2)] == [200, 429]
    ok, refused = records(log, 2)
    assert ok["flags"] == [] and refused["flags"] == ["rate_limited"] and refused["upstream"] is None


# === TCP ===


def test_a_tcp_listener_logs_one_line_per_connection(
    tmp_path: Path, http_backend: Callable[..., HttpBackend], proxy: MakeProxy
) -> None:
    app = http_backend()
    log = tmp_path / "tcp.log"
    listener = {
        "name": "db",
        "address": "127.0.0.1:0",
        "protocol": "tcp",
        "cluster": "c",
        "access_log": {"path": str(log)},
    }
    dp = proxy({"listeners": [listener], "clusters": [cluster("c", [app.address])]})
    host, port = dp.addresses()["db"].rsplit(":", 1)
    sent = b"GET /over-tcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as s:
        local_port = s.getsockname()[1]
        s.sendall(sent)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200")
    (line,) = records(log, 1)
    assert {"client", "identity", "upstream", "request_bytes", "response_bytes", "duration_ms", "flags"} <= set(line)
    assert line["client"] == f"127.0.0.1:{local_port}" and line["identity"] is None
    assert line["upstream"] == app.address and line["flags"] == []
    assert (line["request_bytes"], line["response_bytes"]) == (len(sent), len(received))
    assert line["duration_ms"] >= 0


# === the peer's identity, HTTP/2 between proxies ===


def test_an_inbound_line_names_the_callers_spiffe_id(
    tmp_path: Path, http_backend: Callable[..., HttpBackend], proxy: MakeProxy
) -> None:
    pki = TestPki(tmp_path / "pki")
    caller, callee = "spiffe://cluster.local/ns/shop/sa/frontend", "spiffe://cluster.local/ns/shop/sa/catalog"
    app = http_backend()
    log = tmp_path / "inbound.log"
    inbound = http_listener("inbound", [route("app")])
    inbound |= {"tls": {"mode": "strict"}, "access_log": {"path": str(log)}}
    server = proxy(
        {
            "identity": pki.svid(callee).identity(pki.roots),
            "listeners": [inbound],
            "clusters": [cluster("app", [app.address])],
        }
    )
    peer = cluster("peer", [server.addresses()["inbound"]], tls={"peer_ids": [callee]}, protocol="http2")
    client = proxy(
        {
            "identity": pki.svid(caller).identity(pki.roots),
            "listeners": [http_listener("out", [route("peer")])],
            "clusters": [peer],
        }
    )
    assert request(client.addresses()["out"], "/via-mtls", headers={"traceparent": TRACEPARENT})[0] == 200
    (line,) = records(log, 1)
    assert (line["direction"], line["identity"], line["protocol"]) == ("inbound", caller, "HTTP/2")
    assert line["trace_id"] == TRACE_ID and line["upstream"] == app.address


# === text, stderr, reopening ===

TEXT = re.compile(
    r"^(?P<ts>\S+) (?P<direction>\S+) \"(?P<method>\S+) (?P<target>\S+) (?P<protocol>\S+)\" (?P<status>\d{3}) "
    r"(?P<flags>\S+) (?P<request_bytes>\d+) (?P<response_bytes>\d+) (?P<duration_ms>[\d.]+) (?P<upstream>\S+) "
    r"(?P<client>\S+) (?P<request_id>\S+) (?P<trace_id>\S+)$"
)


def test_the_text_format(tmp_path: Path, http_backend: Callable[..., HttpBackend], proxy: MakeProxy) -> None:
    app = http_backend()
    log = tmp_path / "access.txt"
    dp = proxy(
        {
            "listeners": [logged_listener(log, [route("c", path_prefix="/ok")], fmt="text", direction="gateway")],
            "clusters": [cluster("c", [app.address])],
        }
    )
    addr = dp.addresses()["web"]
    _, body, ok_port = request(addr, "/ok", headers={"x-request-id": "r-ok", "traceparent": TRACEPARENT})
    _, _, missed_port = request(addr, "/missing", headers={"x-request-id": "r-404"})
    ok, missed = (TEXT.match(line) for line in lines(log, 2))
    assert ok is not None and missed is not None, lines(log, 2)
    assert ok.groupdict() | {"ts": "", "duration_ms": ""} == {
        "ts": "",
        "direction": "gateway",
        "method": "GET",
        "target": f"{addr}/ok",
        "protocol": "HTTP/1.1",
        "status": "200",
        "flags": "-",
        "request_bytes": "0",
        "response_bytes": str(len(body)),
        "duration_ms": "",
        "upstream": app.address,
        "client": f"127.0.0.1:{ok_port}",
        "request_id": "r-ok",
        "trace_id": TRACE_ID,
    }
    assert (missed["status"], missed["flags"], missed["upstream"]) == ("404", "no_route", "-")
    assert missed["client"] == f"127.0.0.1:{missed_port}" and missed["request_id"] == "r-404"
    assert missed["trace_id"] != TRACE_ID  # its own trace (or "-" when it has none)
    datetime.fromisoformat(ok["ts"].replace("Z", "+00:00"))


def test_dash_writes_to_stderr(
    capfd: pytest.CaptureFixture[str], http_backend: Callable[..., HttpBackend], proxy: MakeProxy
) -> None:
    app = http_backend()
    dp = proxy({"listeners": [logged_listener("-", [route("c")])], "clusters": [cluster("c", [app.address])]})
    assert request(dp.addresses()["web"], "/to-stderr", headers={"x-request-id": "on-stderr"})[0] == 200
    seen: list[str] = []

    def logged() -> dict[str, Any] | None:
        seen.extend(capfd.readouterr().err.splitlines())
        found = [json.loads(s) for s in seen if s.startswith("{") and "on-stderr" in s]
        return found[0] if found else None

    line = wait_until(logged, timeout=WAIT, what="the access log line on stderr")
    assert (line["path"], line["status"]) == ("/to-stderr", 200)


def test_reopen_logs_starts_a_new_file_after_logrotate_moved_the_old_one(
    tmp_path: Path, http_backend: Callable[..., HttpBackend], proxy: MakeProxy
) -> None:
    app = http_backend()
    log = tmp_path / "access.log"
    dp = proxy({"listeners": [logged_listener(log, [route("c")])], "clusters": [cluster("c", [app.address])]})
    addr = dp.addresses()["web"]
    assert request(addr, "/before")[0] == 200
    assert [r["path"] for r in records(log, 1)] == ["/before"]
    rotated = log.rename(tmp_path / "access.log.1")
    assert request(addr, "/still-old")[0] == 200  # the open file follows the rename until reopened
    assert [r["path"] for r in records(rotated, 2)] == ["/before", "/still-old"]
    dp.reopen_logs()
    assert request(addr, "/after")[0] == 200
    assert [r["path"] for r in records(log, 1)] == ["/after"]
    assert [r["path"] for r in records(rotated, 2)] == ["/before", "/still-old"]
    assert (log.stat().st_mode & 0o777) == 0o600, "request lines are for the owner only"
