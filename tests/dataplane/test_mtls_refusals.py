"""mTLS refusals, each counted by its reason. Real clients (Python's ssl, openssl s_client, curl)
knock on a STRICT mesh inbound with an expired or not-yet-valid SVID, one from a foreign CA, one
from our CA naming another trust domain, no certificate at all, and plaintext; an outbound
cluster reaches an `openssl s_server` presenting the wrong SPIFFE ID, another trust domain's, an
expired one, a foreign CA's. Each is refused (nothing reaches the app, the caller gets no answer
or a 502/503) and counted: the listener's `tls.failures.<reason>` or `tls.plaintext_rejected`,
the cluster's `tls_failures.<reason>`, and their Prometheus families."""

from __future__ import annotations

import datetime as dt
import http.client
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import HttpBackend, cluster, http_listener, route, wait_until
from meshctl import DataPlane
from pki import Issued, TestPki, openssl_server

MakeProxy = Callable[..., DataPlane]
REASONS = ("expired", "untrusted", "identity", "no_certificate", "timeout", "other")
REQUEST = b"GET /forged HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n"


def sid(service: str, td: str = "cluster.local") -> str:
    return f"spiffe://{td}/ns/shop/sa/{service}"


def expired(pki: TestPki, spiffe_id: str) -> Issued:
    return pki.svid(spiffe_id, valid_from=dt.timedelta(hours=-2), valid_for=dt.timedelta(hours=1))


def not_yet_valid(pki: TestPki, spiffe_id: str) -> Issued:
    return pki.svid(spiffe_id, valid_from=dt.timedelta(hours=1))


def sample(dp: DataPlane, name: str, **labels: str) -> float:
    """The sum of the Prometheus samples `name` of `dp` whose labels include these."""
    return sum(
        s.value
        for family in text_string_to_metric_families(dp.metrics())
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


@dataclass
class Env:
    """Our PKI, a foreign one, and a STRICT inbound for catalog in front of an app."""

    pki: TestPki
    stranger: TestPki
    server: DataPlane
    app: HttpBackend

    @property
    def inbound(self) -> str:
        return self.server.addresses()["inbound"]

    def tls(self) -> dict[str, Any]:
        return dict(self.server.stats()["listeners"]["inbound"]["tls"])


@pytest.fixture
def env(tmp_path: Path, proxy: MakeProxy) -> Iterator[Env]:
    pki = TestPki(tmp_path / "pki")
    app = HttpBackend()
    listener = http_listener("inbound", [route("app")]) | {"tls": {"mode": "strict"}}
    server = proxy(
        {
            "identity": pki.svid(sid("catalog")).identity(pki.roots),
            "listeners": [listener],
            "clusters": [cluster("app", [app.address])],
        }
    )
    yield Env(pki, TestPki(tmp_path / "stranger", name="foreign root"), server, app)
    app.stop()


# The clients: each returns the response's status line, or "refused: <why>".


def python_ssl(env: Env, cert: Issued | None) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # an SVID names no host; the chain to our root is still checked
    ctx.load_verify_locations(env.pki.roots)
    if cert:
        ctx.load_cert_chain(cert.chain, cert.key)
    host, port = env.inbound.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=10) as raw, ctx.wrap_socket(raw) as conn:
            conn.sendall(REQUEST)
            head = conn.recv(4096)
    except (ssl.SSLError, OSError) as e:
        return f"refused: {e}"
    return head.split(b"\r\n", 1)[0].decode() if head else "refused: closed"


def s_client(env: Env, cert: Issued | None) -> str:
    cmd = ["openssl", "s_client", "-connect", env.inbound, "-CAfile", str(env.pki.roots), "-quiet", "-ign_eof"]
    if cert:
        cmd += ["-cert", str(cert.chain), "-key", str(cert.key)]
    out = subprocess.run(cmd, input=REQUEST, capture_output=True, timeout=20)
    line = out.stdout.split(b"\r\n", 1)[0].decode(errors="replace")
    return line if line.startswith("HTTP/") else f"refused: {out.stderr.decode(errors='replace').strip()}"


def curl(env: Env, cert: Issued | None) -> str:
    cmd = ["curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "HTTP %{http_code}", "--cacert", str(env.pki.roots)]
    # -k: an SVID names no host for curl to match (the point here is the missing client certificate).
    cmd += ["-k", *(["--cert", str(cert.chain), "--key", str(cert.key)] if cert else []), f"https://{env.inbound}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    return out.stdout if out.returncode == 0 else f"refused: {out.stderr.strip()}"


Client = Callable[[Env, "Issued | None"], str]
#: name -> (the client's certificate, made from the env; the client; the reason counted)
LISTENER_CASES: dict[str, tuple[Callable[[Env], Issued | None], Client, str]] = {
    "expired SVID": (lambda e: expired(e.pki, sid("frontend")), python_ssl, "expired"),
    "not-yet-valid SVID": (lambda e: not_yet_valid(e.pki, sid("frontend")), s_client, "expired"),
    "foreign CA": (lambda e: e.stranger.svid(sid("frontend")), python_ssl, "untrusted"),
    "our CA, another trust domain": (lambda e: e.pki.svid(sid("frontend", td="other.example")), s_client, "identity"),
    "no client certificate (curl)": (lambda e: None, curl, "no_certificate"),
    "no client certificate (python)": (lambda e: None, python_ssl, "no_certificate"),
}


@pytest.mark.parametrize("case", LISTENER_CASES)
def test_a_strict_inbound_refuses_and_counts(env: Env, case: str) -> None:
    make_cert, client, reason = LISTENER_CASES[case]
    before = env.tls()
    outcome = client(env, make_cert(env))
    assert outcome.startswith("refused"), outcome
    expected = {**before["failures"], reason: before["failures"][reason] + 1}
    wait_until(lambda: env.tls()["failures"] == expected, timeout=10, what=f"{reason} counted: {env.tls()}")
    tls = env.tls()
    assert tls["handshake_failures"] == sum(tls["failures"].values())
    assert tls["handshakes"] == before["handshakes"]
    for r in REASONS:
        labels = {"listener": "inbound", "reason": r}
        assert sample(env.server, "meshctl_tls_handshake_failures_total", **labels) == expected[r], r
    assert env.app.seen == []


def test_the_control_case_gets_through(env: Env) -> None:
    """The same clients with a good SVID: answered, and nothing counted as a failure."""
    good = env.pki.svid(sid("frontend"))
    for client in (python_ssl, s_client, curl):
        assert client(env, good) in ("HTTP/1.1 200 OK", "HTTP 200"), client.__name__
    tls = env.tls()
    assert tls["handshakes"] == 3 and tls["failures"] == dict.fromkeys(REASONS, 0)


def test_plaintext_to_strict_is_refused_and_counted(env: Env) -> None:
    host, port = env.inbound.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("GET", "/forged")
        conn.getresponse()
    conn.close()
    out = subprocess.run(["curl", "-sS", "-m", "10", f"http://{env.inbound}/forged"], capture_output=True)
    assert out.returncode != 0, out.stdout

    wait_until(lambda: env.tls()["plaintext_rejected"] == 2, timeout=10, what=f"2 plaintext refusals: {env.tls()}")
    tls = env.tls()
    assert tls["plaintext_accepted"] == 0 and tls["handshakes"] == 0
    assert tls["failures"] == dict.fromkeys(REASONS, 0), "plaintext is not a failed handshake"
    labels = {"listener": "inbound", "decision": "rejected"}
    assert sample(env.server, "meshctl_plaintext_connections_total", **labels) == 2
    assert env.app.seen == []


#: name -> (the certificate the upstream presents, made from the env; the reason counted)
CLUSTER_CASES: dict[str, tuple[Callable[[Env], Issued], str]] = {
    "another service's ID": (lambda e: e.pki.svid(sid("payments")), "identity"),
    "our CA, another trust domain": (lambda e: e.pki.svid(sid("catalog", td="other.example")), "identity"),
    "expired SVID": (lambda e: expired(e.pki, sid("catalog")), "expired"),
    "foreign CA": (lambda e: e.stranger.svid(sid("catalog")), "untrusted"),
}


@pytest.mark.parametrize("case", CLUSTER_CASES)
def test_an_outbound_cluster_refuses_the_wrong_upstream_and_counts(env: Env, proxy: MakeProxy, case: str) -> None:
    make_cert, reason = CLUSTER_CASES[case]
    roots = str(env.pki.roots)
    with openssl_server(make_cert(env), "-tls1_3", "-www", "-Verify", "1", "-CAfile", roots) as upstream:
        peer = cluster("peer", [upstream], tls={"peer_ids": [sid("catalog")]}, connect_timeout_ms=5000)
        client = proxy(
            {
                "identity": env.pki.svid(sid("frontend")).identity(env.pki.roots),
                "listeners": [http_listener("out", [route("peer")])],
                "clusters": [peer | {"protocol": "http1"}],
            }
        )
        host, port = client.addresses()["out"].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=15)
        conn.request("GET", "/secret")
        status = conn.getresponse().status
        conn.close()
    assert status in (502, 503)
    counted = client.stats()["clusters"]["peer"]["tls_failures"]
    assert counted[reason] >= 1 and all(n == 0 for r, n in counted.items() if r != reason), counted
    for r in REASONS:
        n = sample(client, "meshctl_upstream_tls_failures_total", cluster="peer", reason=r)
        assert n == counted[r], r
