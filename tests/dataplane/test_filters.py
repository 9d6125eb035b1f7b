"""Route filters end to end: query matches, request and response header edits,
URL rewrites, redirects, weighted TCP backends, and their validation."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest

from helpers import cluster, header_values, http_listener, route
from meshctl import ConfigError


def test_query_match_routes_to_the_right_cluster(backend, proxy) -> None:
    v1, v2, tagged = backend("v1"), backend("v2"), backend("tagged")
    routes = [
        route("v2", query={"version": "2"}),
        route("tagged", query={"tag": "a b", "team": "x&y"}),
        route("v1"),
    ]
    dp = proxy(
        {
            "listeners": [http_listener("web", routes)],
            "clusters": [cluster(b.name, [b.address]) for b in (v1, v2, tagged)],
        }
    )
    addr = dp.addresses()["web"]
    cases = [
        ("/items?version=2", "v2"),
        ("/items?version=1&version=2", "v2"),  # any occurrence counts
        ("/items?version=%32", "v2"),  # percent-decoded
        ("/items?version=22", "v1"),
        ("/items?version=1", "v1"),
        ("/items", "v1"),
        ("/x?tag=a%20b&team=x%26y", "tagged"),
        ("/x?tag=a%20b", "v1"),  # every listed parameter must match
    ]
    with httpx.Client() as c:
        for target, want in cases:
            r = c.get(f"http://{addr}{target}")
            assert r.headers["x-backend"] == want, target
            assert r.json()["path"] == target, "the query is forwarded untouched"


def test_request_headers_set_add_remove(http_backend, proxy) -> None:
    b = http_backend()
    r = route("c")
    r["request_headers"] = {
        "set": {"x-set": "new", "X-Request-Id": "fixed-id"},
        "add": {"x-add": "b"},
        "remove": ["x-remove"],
    }
    dp = proxy({"listeners": [http_listener("web", [r])], "clusters": [cluster("c", [b.address])]})
    addr = dp.addresses()["web"]
    sent = [("x-set", "old1"), ("x-set", "old2"), ("x-add", "a"), ("x-remove", "bye"), ("x-kept", "k")]
    with httpx.Client() as c:
        assert c.get(f"http://{addr}/h1", headers=sent).status_code == 200
    with httpx.Client(http1=False, http2=True) as c:
        assert c.get(f"http://{addr}/h2", headers=sent).status_code == 200
    assert [s["path"] for s in b.seen] == ["/h1", "/h2"]
    for seen in b.seen:
        assert header_values(seen, "x-set") == ["new"]
        assert header_values(seen, "x-add") == ["a", "b"]
        assert header_values(seen, "x-remove") == []
        assert header_values(seen, "x-kept") == ["k"]
        assert header_values(seen, "x-request-id") == ["fixed-id"], "set wins over the proxy's own"


def test_response_headers_set_add_remove(backend, proxy) -> None:
    b = backend("b1")
    r = route("c")
    r["response_headers"] = {
        "set": {"content-type": "text/x-test"},
        "add": {"x-backend": "extra", "x-added": "yes"},
        "remove": ["server"],
    }
    dp = proxy({"listeners": [http_listener("web", [r])], "clusters": [cluster("c", [b.address])]})
    addr = dp.addresses()["web"]
    with httpx.Client() as c:
        plain = httpx.get(f"http://{b.address}/")
        assert "server" in plain.headers, "the backend does send one"
        resp = c.get(f"http://{addr}/")
    assert resp.status_code == 200
    assert resp.headers.get_list("content-type") == ["text/x-test"]
    assert resp.headers.get_list("x-backend") == ["b1", "extra"]
    assert resp.headers["x-added"] == "yes"
    assert "server" not in resp.headers
    assert resp.json()["backend"] == "b1", "the body is untouched"


def test_rewrite_path_and_host(http_backend, proxy) -> None:
    b = http_backend()
    prefix = route("c", path_prefix="/api")
    prefix["rewrite"] = {"host": "internal.example:8080", "path_prefix": "/v2"}
    strip = route("c", path_prefix="/strip/")
    strip["rewrite"] = {"path_prefix": "/"}
    full = route("c", path="/old")
    full["rewrite"] = {"path": "/new/place"}
    dp = proxy(
        {
            "listeners": [http_listener("web", [prefix, strip, full, route("c")])],
            "clusters": [cluster("c", [b.address])],
        }
    )
    addr = dp.addresses()["web"]
    cases = [
        ("/api/items?q=1&r=a%20b", "/v2/items?q=1&r=a%20b", "internal.example:8080"),
        ("/api", "/v2", "internal.example:8080"),
        ("/api/", "/v2/", "internal.example:8080"),
        ("/apix", "/apix", addr),  # not under the prefix: the last route, untouched
        ("/strip/x/y?z", "/x/y?z", addr),
        ("/strip", "/", addr),
        ("/old?keep=1", "/new/place?keep=1", addr),
    ]
    with httpx.Client() as c:
        for target, _, _ in cases:
            assert c.get(f"http://{addr}{target}").status_code == 200, target
    with httpx.Client(http1=False, http2=True) as c:
        assert c.get(f"http://{addr}/api/h2?x=1").status_code == 200
    cases.append(("/api/h2?x=1", "/v2/h2?x=1", "internal.example:8080"))
    seen = b.seen
    assert len(seen) == len(cases)
    for (target, want_path, want_host), s in zip(cases, seen, strict=True):
        assert s["path"] == want_path, target
        assert header_values(s, "host") == [want_host], target


def test_redirect_answers_without_the_backend(http_backend, proxy) -> None:
    b = http_backend()
    to_https = {
        "match": {"path_prefix": "/old"},
        "redirect": {"scheme": "https", "host": "example.com", "path_prefix": "/new", "status": 301},
        "response_headers": {"add": {"x-moved": "yes"}},
        "request_headers": {"set": {"x-ignored": "1"}},  # allowed beside a redirect (Gateway API), no effect
    }
    same_host = {"match": {"path": "/here"}, "redirect": {"path": "/there"}}
    other_port = {"match": {"path": "/port"}, "redirect": {"port": 8443}}
    dp = proxy(
        {
            "listeners": [http_listener("web", [to_https, same_host, other_port, route("c")])],
            "clusters": [cluster("c", [b.address])],
        }
    )
    addr = dp.addresses()["web"]
    with httpx.Client(follow_redirects=False) as c:
        r1 = c.get(f"http://{addr}/old/x/y?q=1")
        r2 = c.get(f"http://{addr}/here?a=b")
        r3 = c.get(f"http://{addr}/port")
        r4 = c.head(f"http://{addr}/old")
    assert (r1.status_code, r1.headers["location"]) == (301, "https://example.com/new/x/y?q=1")
    assert r1.headers["x-moved"] == "yes"
    assert r1.content == b""
    assert (r2.status_code, r2.headers["location"]) == (302, f"http://{addr}/there?a=b")
    assert (r3.status_code, r3.headers["location"]) == (302, "http://127.0.0.1:8443/port")
    assert (r4.status_code, r4.headers["location"]) == (301, "https://example.com/new")
    assert b.seen == []
    web = dp.stats()["listeners"]["web"]
    assert web["redirects"] == 4
    assert web["responses"]["3xx"] == 4
    with httpx.Client() as c:
        assert c.get(f"http://{addr}/elsewhere").status_code == 200
    assert len(b.seen) == 1


@pytest.fixture
def named_tcp_servers() -> Iterator[Callable[[str], str]]:
    """TCP servers that send their name to each connection, then close it."""
    servers: list[socket.socket] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def make(name: str) -> str:
        srv = socket.create_server(("127.0.0.1", 0))
        srv.settimeout(0.2)
        servers.append(srv)

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.sendall(name.encode())

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        threads.append(t)
        return f"127.0.0.1:{srv.getsockname()[1]}"

    yield make
    stop.set()
    for t in threads:
        t.join(5)
    for s in servers:
        s.close()


def test_tcp_weighted_backends_split_connections(named_tcp_servers, proxy) -> None:
    big, small = named_tcp_servers("big"), named_tcp_servers("small")
    dp = proxy(
        {
            "listeners": [
                {
                    "name": "db",
                    "address": "127.0.0.1:0",
                    "protocol": "tcp",
                    "backends": [{"cluster": "big", "weight": 3}, {"cluster": "small", "weight": 1}],
                }
            ],
            "clusters": [cluster("big", [big]), cluster("small", [small])],
        }
    )
    host, port = dp.addresses()["db"].rsplit(":", 1)
    got: Counter[str] = Counter()
    for _ in range(100):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            data = b""
            while chunk := s.recv(64):
                data += chunk
            got[data.decode()] += 1
    # 3:1 over 100 connections: small > 0 and big > small fail together with odds below 1e-6.
    assert set(got) == {"big", "small"}, got
    assert got["big"] + got["small"] == 100
    assert got["big"] > got["small"], got
    clusters = dp.stats()["clusters"]
    assert clusters["big"]["connections"] == got["big"]
    assert clusters["small"]["connections"] == got["small"]


def test_invalid_filters_are_rejected_and_the_running_config_stays(http_backend, proxy) -> None:
    b = http_backend()
    good = {"listeners": [http_listener("web", [route("c")])], "clusters": [cluster("c", [b.address])]}
    dp = proxy(good)
    addr = dp.addresses()["web"]
    before = dp.config()
    bad_routes = [
        {"match": {"query": {"page": 2}}, "backends": [{"cluster": "c"}]},
        {"backends": [{"cluster": "c"}], "request_headers": {"set": {"host": "x"}, "remove": ["bad name"]}},
        {"backends": [{"cluster": "c"}], "response_headers": {"add": {"content-length": "1"}}},
        {"match": {"path": "/x"}, "backends": [{"cluster": "c"}], "rewrite": {"path_prefix": "/y"}},
        {"backends": [{"cluster": "c"}], "redirect": {"status": 200, "scheme": "https"}},
    ]
    bad = {
        "listeners": [
            http_listener("web", bad_routes, address=addr),
            {"name": "db", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "c", "backends": []},
        ],
        "clusters": good["clusters"],
    }
    with pytest.raises(ConfigError) as exc:
        dp.update(bad)
    errors = dict(exc.value.errors)
    r = "listeners[0].routes"
    assert errors[f"{r}[0].match.query.page"] == "expected a string, got a number"
    assert errors[f"{r}[1].request_headers.set.host"] == "'host' cannot be changed here; use rewrite.host"
    assert errors[f"{r}[1].request_headers.remove[0]"] == "'bad name' is not a valid header name"
    assert errors[f"{r}[2].response_headers.add.content-length"].startswith("'content-length' is managed by the proxy")
    assert errors[f"{r}[3].rewrite.path_prefix"].startswith("replaces what match.path_prefix matched")
    assert errors[f"{r}[4].backends"].startswith("not allowed with redirect")
    assert errors[f"{r}[4].redirect.status"] == "200 is not one of: 301, 302, 303, 307, 308"
    assert errors["listeners[1]"] == "give either cluster or backends, not both"
    assert errors["listeners[1].backends"] == "must name at least one backend"
    assert len(errors) == 9, errors
    assert dp.config() == before
    assert dp.stats()["version"] == 1
    with httpx.Client() as c:
        assert c.get(f"http://{addr}/still?x=1").status_code == 200
    assert b.seen[-1]["path"] == "/still?x=1"
