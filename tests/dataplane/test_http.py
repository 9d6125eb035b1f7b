"""HTTP/1.1 and HTTP/2 through the proxy, with real clients and real backends."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import threading
import time

import httpx
import pytest

from helpers import cluster, http_listener, route, unused_port


@pytest.fixture
def simple(backend, proxy):
    """One backend behind one HTTP listener; returns (dataplane, address, backend)."""
    b = backend("b1")
    dp = proxy({"listeners": [http_listener("web", [route("c")])], "clusters": [cluster("c", [b.address])]})
    return dp, dp.addresses()["web"], b


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, check=False)


def test_http1_with_curl_and_forwarding_headers(simple) -> None:
    dp, addr, _ = simple
    out = curl("-w", "\n%{http_code} %{http_version}", f"http://{addr}/hello?x=1")
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200 1.1"
    seen = json.loads(body)
    assert seen["path"] == "/hello?x=1"
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        seen["headers"]["x-request-id"],
    )
    assert seen["headers"]["host"] == addr

    with httpx.Client() as c:
        r = c.get(f"http://{addr}/", headers={"x-request-id": "given-id", "x-forwarded-for": "10.1.2.3"})
    assert r.json()["headers"]["x-request-id"] == "given-id"
    assert r.json()["headers"]["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    stats = dp.stats()
    assert stats["listeners"]["web"]["requests"] == 2
    assert stats["listeners"]["web"]["responses"]["2xx"] == 2
    assert stats["clusters"]["c"]["requests"] == 2
    assert stats["listeners"]["web"]["bytes_out"] > 0


def test_hop_by_hop_headers_stay_on_their_hop(simple) -> None:
    _, addr, _ = simple
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request(
        "GET",
        "/",
        headers={
            "Connection": "keep-alive, x-hop",
            "x-hop": "secret",
            "Keep-Alive": "timeout=5",
            "x-end": "1",
        },
    )
    seen = json.loads(conn.getresponse().read())["headers"]
    assert "x-hop" not in seen
    assert "keep-alive" not in seen
    assert seen["x-end"] == "1"
    assert seen.get("connection", "keep-alive").lower() == "keep-alive"  # hyper's own, not the client's list


def test_http2_prior_knowledge(simple) -> None:
    _, addr, _ = simple
    out = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", f"http://{addr}/")
    assert out.stdout == "200 2"
    body = b"x" * (1 << 20)
    with httpx.Client(http1=False, http2=True) as c:
        replies = [c.post(f"http://{addr}/upload/{i}", content=body) for i in range(3)]
    for r in replies:
        assert r.http_version == "HTTP/2"
        assert r.status_code == 200
        assert len(r.json()["body"]) == len(body)


def test_large_bodies_over_http1(simple) -> None:
    dp, addr, _ = simple
    body = bytes(range(256)) * 4096
    with httpx.Client() as c:
        r = c.post(f"http://{addr}/echo", content=body)
    assert r.status_code == 200
    assert r.json()["body"] == body.decode("utf-8", "replace")
    assert dp.stats()["listeners"]["web"]["bytes_in"] >= len(body)


def test_routing_on_path_method_headers_and_host(backend, proxy) -> None:
    names = ["exact", "prefix", "regex", "post", "canary", "host", "rest"]
    bs = {n: backend(n) for n in names}
    routes = [
        route("exact", path="/exact"),
        route("prefix", path_prefix="/api"),
        route("regex", path_regex="/users/[0-9]+"),
        route("post", method="POST"),
        route("canary", headers={"x-canary": "true"}),
        route("host", host="*.example.com"),
        route("rest", path_prefix="/"),
    ]
    dp = proxy(
        {
            "listeners": [http_listener("web", routes)],
            "clusters": [cluster(n, [bs[n].address]) for n in names],
        }
    )
    addr = dp.addresses()["web"]
    cases = [
        ("GET", "/exact", {}, "exact"),
        ("GET", "/exact/more", {}, "rest"),
        ("GET", "/api/v1/items", {}, "prefix"),
        ("GET", "/apix", {}, "rest"),
        ("GET", "/users/42", {}, "regex"),
        ("GET", "/users/42/x", {}, "rest"),
        ("POST", "/other", {}, "post"),
        ("GET", "/other", {"x-canary": "true"}, "canary"),
        ("GET", "/other", {"host": "shop.example.com"}, "host"),
        ("GET", "/other", {}, "rest"),
    ]
    with httpx.Client() as c:
        for method, path, headers, want in cases:
            r = c.request(method, f"http://{addr}{path}", headers=headers)
            assert r.headers["x-backend"] == want, (method, path, headers)


def test_no_route_is_404_naming_the_listener(backend, proxy) -> None:
    b = backend("b")
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("c", path_prefix="/api")])],
            "clusters": [cluster("c", [b.address])],
        }
    )
    r = httpx.get(f"http://{dp.addresses()['web']}/nope")
    assert r.status_code == 404
    assert "no route on listener 'web'" in r.text
    assert b.requests == 0
    assert dp.stats()["listeners"]["web"]["no_route"] == 1


def test_upstream_down_is_502_promptly(proxy) -> None:
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("down")])],
            "clusters": [cluster("down", [f"127.0.0.1:{unused_port()}"])],
        }
    )
    start = time.monotonic()
    r = httpx.get(f"http://{dp.addresses()['web']}/", timeout=5)
    assert r.status_code == 502
    assert time.monotonic() - start < 2
    assert "connect failure in cluster 'down'" in r.text
    stats = dp.stats()["clusters"]["down"]
    # The first try and the default policy's 2 retries (with back-off), then the 502.
    assert (stats["connect_failures"], stats["retries"], stats["retries_exhausted"]) == (3, 2, 1)


def test_no_endpoint_is_503(proxy) -> None:
    dp = proxy({"listeners": [http_listener("web", [route("empty")])], "clusters": [cluster("empty", [])]})
    r = httpx.get(f"http://{dp.addresses()['web']}/")
    assert r.status_code == 503
    assert "no healthy endpoint in cluster 'empty'" in r.text


def test_failing_endpoint_is_ejected_and_its_requests_go_elsewhere(backend, proxy) -> None:
    good = backend("good")
    down = f"127.0.0.1:{unused_port()}"
    c = cluster(
        "c", [good.address, down], outlier_detection={"consecutive_gateway_errors": 2, "base_ejection_ms": 60000}
    )
    dp = proxy({"listeners": [http_listener("web", [route("c")])], "clusters": [c]})
    with httpx.Client() as client:
        statuses = [client.get(f"http://{dp.addresses()['web']}/").status_code for _ in range(20)]
    # Each try on the dead endpoint is retried on the good one, until the dead one is ejected.
    assert statuses == [200] * 20, statuses
    assert dp.stats()["clusters"]["c"]["retries"] == 2
    eps = dp.stats()["clusters"]["c"]["endpoints"]
    assert eps[down]["healthy"] is False and eps[down]["ejections"] == 1
    assert eps[good.address]["healthy"] is True


def test_route_timeout_is_504(backend, proxy) -> None:
    b = backend("slow")
    r = route("c")
    r["timeout_ms"] = 200
    dp = proxy({"listeners": [http_listener("web", [r])], "clusters": [cluster("c", [b.address])]})
    start = time.monotonic()
    resp = httpx.get(f"http://{dp.addresses()['web']}/?ms=3000", timeout=5)
    assert resp.status_code == 504
    assert time.monotonic() - start < 2
    assert dp.stats()["clusters"]["c"]["timeouts"] == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
    ],
)
def test_malformed_requests_are_refused_and_not_forwarded(simple, raw: bytes) -> None:
    _, addr, b = simple
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(raw)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply[:100]
    assert b.requests == 0


def test_status_codes_pass_through(simple) -> None:
    dp, addr, _ = simple
    with httpx.Client() as c:
        codes = [c.get(f"http://{addr}/status/{code}").status_code for code in (201, 302, 404, 500, 503)]
    assert codes == [201, 302, 404, 500, 503]
    responses = dp.stats()["clusters"]["c"]["responses"]
    assert responses == {"1xx": 0, "2xx": 1, "3xx": 1, "4xx": 1, "5xx": 2}


def test_admin_endpoints(proxy) -> None:
    dp = proxy(
        {
            "admin": {"address": "127.0.0.1:0"},
            "listeners": [http_listener("web", [route("c")])],
            "clusters": [cluster("c", ["127.0.0.1:9"])],
        }
    )
    admin = dp.addresses()["admin"]
    with httpx.Client() as c:
        assert c.get(f"http://{admin}/ready").text == "ready\n"
        stats = c.get(f"http://{admin}/stats").json()
        assert set(stats["listeners"]) == {"web"}
        assert "c" in stats["clusters"]
        assert c.get(f"http://{admin}/config").json()["clusters"][0]["name"] == "c"
        assert c.post(f"http://{admin}/stats").status_code == 405
        assert c.get(f"http://{admin}/nope").status_code == 404


def test_a_response_head_is_not_held_back_waiting_for_its_body(proxy) -> None:
    """The proxy reads a response's first bytes ahead only when they are already there: a server
    that sends its head and then waits (SSE, long polls) has the head forwarded at once."""
    release = threading.Event()

    def serve(sock: socket.socket) -> None:
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            release.wait(10)
            conn.sendall(b"6\r\ndata:1\r\n0\r\n\r\n")

    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    port = listener.getsockname()[1]
    dp = proxy(
        {"listeners": [http_listener("web", [route("sse")])], "clusters": [cluster("sse", [f"127.0.0.1:{port}"])]}
    )
    host, web_port = dp.addresses()["web"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(web_port), timeout=5)
    try:
        conn.request("GET", "/events")
        resp = conn.getresponse()  # the head arrives while the server still holds the body
        assert resp.status == 200 and resp.getheader("content-type") == "text/event-stream"
        release.set()
        assert resp.read() == b"data:1"
    finally:
        release.set()
        conn.close()
        listener.close()
