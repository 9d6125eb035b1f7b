"""Endpoint host names resolved through the data plane's cache: one lookup serves every connect
within the cluster's `dns_refresh_ms`, the next connect after it starts a refresh, a name that
does not resolve is a 503 and a counted failure, and (as root, in a host of tests/netns.py with
its own /etc/hosts) a changed address is picked up by new connections after the refresh."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from typing import Any

import httpx

from helpers import HttpBackend, cluster, http_listener, route, wait_until
from netns import Network, require_root


def tcp_proxy(endpoint: str, refresh_ms: int) -> dict[str, Any]:
    """A TCP listener: every downstream connection opens an upstream one (no pooling)."""
    return {
        "listeners": [{"name": "db", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "c"}],
        "clusters": [cluster("c", [endpoint], dns_refresh_ms=refresh_ms)],
    }


def fetch(address: str) -> httpx.Response:
    """One request on a new connection."""
    with httpx.Client(timeout=10) as c:
        return c.get(f"http://{address}/", headers={"connection": "close"})


def test_one_lookup_serves_every_connect_within_the_refresh(proxy, http_backend) -> None:
    b: HttpBackend = http_backend("named")
    port = b.address.rsplit(":", 1)[1]
    dp = proxy(tcp_proxy(f"localhost:{port}", refresh_ms=600_000))
    addr = dp.addresses()["db"]
    for _ in range(20):
        assert fetch(addr).status_code == 200
    assert dp.stats()["dns"] == {"lookups": 1, "failures": 0, "cache_hits": 19}
    metrics = dp.metrics()
    assert re.search(r'^meshctl_dns_lookups_total\{[^}]*result="resolved"\} 1\.0$', metrics, flags=re.M)
    assert re.search(r'^meshctl_dns_lookups_total\{[^}]*result="cached"\} 19\.0$', metrics, flags=re.M)
    assert dp.effective_config()["clusters"][0]["dns_refresh_ms"] == 600_000


def test_the_next_connect_after_the_refresh_looks_up_again(proxy, http_backend) -> None:
    b: HttpBackend = http_backend("named")
    port = b.address.rsplit(":", 1)[1]
    dp = proxy(tcp_proxy(f"localhost:{port}", refresh_ms=300))
    addr = dp.addresses()["db"]
    assert fetch(addr).status_code == 200
    assert dp.stats()["dns"]["lookups"] == 1

    def refreshed() -> bool:
        # Served from the (stale) cache while the refresh runs behind it.
        assert fetch(addr).status_code == 200
        return bool(dp.stats()["dns"]["lookups"] >= 2)

    wait_until(refreshed, timeout=30, what="a refresh after dns_refresh_ms")
    assert dp.stats()["dns"]["failures"] == 0


def test_a_name_that_does_not_resolve_is_a_503_and_counted(proxy) -> None:
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("c")])],
            "clusters": [cluster("c", ["does-not-exist.invalid:80"])],
        }
    )
    r = httpx.get(f"http://{dp.addresses()['web']}/", timeout=10)
    assert r.status_code == 503
    assert r.headers["x-meshctl-error"] == "dns_failure"
    dns = dp.stats()["dns"]
    assert dns["failures"] >= 1 and dns["lookups"] == dns["failures"], dns
    assert re.search(r'^meshctl_dns_lookups_total\{[^}]*result="failed"\} [1-9]', dp.metrics(), flags=re.M)


# === a changed address, in a network namespace ===

#: Runs inside a host of tests/netns.py (its own /etc/hosts): two backends on the same port of
#: 127.0.0.2 and 127.0.0.3, a TCP proxy to backend.test:PORT. Prints which one answered, waits
#: for "go" on stdin (the test has changed the hosts file), then connects until the other one
#: answers, and prints the stats.
INNER = textwrap.dedent(
    """
    import json, sys, threading, time, urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from meshctl import DataPlane

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = self.server.server_address[0].encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    port = 18080
    for host in ("127.0.0.2", "127.0.0.3"):
        server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    dp = DataPlane({
        "listeners": [{"name": "db", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "c"}],
        "clusters": [{"name": "c", "dns_refresh_ms": 500, "endpoints": [{"address": f"backend.test:{port}"}]}],
    }, workers=1)
    dp.start()
    url = f"http://{dp.addresses()['db']}/"

    def fetch():
        req = urllib.request.Request(url, headers={"connection": "close"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read().decode()

    print(json.dumps({"first": fetch()}), flush=True)
    sys.stdin.readline()
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen.append(fetch())
        if seen[-1] == "127.0.0.3":
            break
        time.sleep(0.05)
    print(json.dumps({"seen": seen, "dns": dp.stats()["dns"]}), flush=True)
    dp.stop(0.5)
    """
)


def test_a_changed_address_is_used_after_the_refresh() -> None:
    require_root(tools=())
    with Network() as net:
        host = net.add("dns")
        hosts = host.etc("hosts")
        hosts.write_text("127.0.0.1 localhost\n127.0.0.2 backend.test\n")
        inode = hosts.stat().st_ino
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        with subprocess.Popen(
            host.cmd(sys.executable, "-c", INNER), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        ) as inner:
            assert inner.stdin is not None and inner.stdout is not None
            first = json.loads(inner.stdout.readline() or "{}")
            assert first == {"first": "127.0.0.2"}
            # In place: `ip netns exec` bind-mounted this very file over /etc/hosts.
            with hosts.open("r+") as f:
                f.write("127.0.0.1 localhost\n127.0.0.3 backend.test\n")
                f.truncate()
            assert hosts.stat().st_ino == inode
            inner.stdin.write("go\n")
            inner.stdin.flush()
            result = json.loads(inner.stdout.readline() or "{}")
            assert inner.wait(timeout=30) == 0
    assert result["seen"][-1] == "127.0.0.3", result
    assert result["dns"]["lookups"] >= 2 and result["dns"]["failures"] == 0, result
