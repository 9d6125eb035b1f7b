"""The mTLS benchmark: a sidecar pair speaking mTLS between its halves
(client -> outbound proxy -> mTLS -> inbound proxy -> server) against an
HAProxy pair doing the same, interleaved in rounds, reported as medians and
ratios.

    python bench/mtls.py                  # full run: 5 rounds x 8 s per case (about 8 minutes)
    python bench/mtls.py --smoke          # 1 round x 2 s per case, results in a temp dir (CI)

Both pairs use the same certificates: a fresh meshctl CA, and SVIDs for
spiffe://cluster.local/ns/default/sa/client and .../sa/server made from EC
P-256 keys and CSRs through CertificateAuthority.issue(), the path a real
sidecar's certificate takes. Writes bench/results/mtls.json and the table
between the mtls markers in bench/README.md. Everything runs on 127.0.0.1
and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshctl.control.ca import CertificateAuthority
from meshctl.control.db import make_engine, migrate
from meshctl.sidecar.identity import key_and_csr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from suite import (  # noqa: E402
    CLK_TCK,
    MESHCTL,
    Proc,
    Stack,
    bench,
    ensure_packages,
    free_port,
    judged,
    machine,
    measured,
    median,
    tool,
    wait_port,
    write_readme_table,
)

TRUST_DOMAIN = "cluster.local"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/client"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/server"
BODY = "x" * 1024
#: The request-path cases, in the order each round runs them.
PATHS = ("direct", "meshctl-h2", "meshctl-h1", "haproxy")
#: The handshake cases: the server side of each pair on its own.
SERVERS = ("meshctl", "haproxy")
LABELS = {
    "direct": "direct (no proxy)",
    "meshctl-h2": "meshctl pair, HTTP/2 between the proxies",
    "meshctl-h1": "meshctl pair, HTTP/1.1 between the proxies",
    "haproxy": "HAProxy pair, HTTP/2 between the proxies",
    "hs/meshctl": "meshctl inbound (`tls: {mode: strict}`)",
    "hs/haproxy": "HAProxy (`verify required`)",
}


# === PKI ===


@dataclass
class Svid:
    chain: Path  # leaf, then the issuer
    key: Path
    combined: Path  # chain + key: HAProxy's crt file

    def identity(self, roots: Path) -> dict[str, str]:
        return {"cert_chain_file": str(self.chain), "private_key_file": str(self.key), "roots_file": str(roots)}


@dataclass
class Pki:
    roots: Path
    client: Svid
    server: Svid
    #: The openssl client's -CAfile: the roots and the client's issuer. `s_client -cert` and `s_time
    #: -cert` send only the leaf unless OpenSSL can build the chain from its store.
    client_store: Path


def make_pki(work: Path) -> Pki:
    # The control plane's own CA, on an SQLite file of the run's (keys sealed as in production).
    work.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{work / 'ca.db'}"
    migrate(url)
    ca = CertificateAuthority.open(make_engine(url), TRUST_DOMAIN, kek_file=work / "ca-kek", import_dir=work / "ca")
    roots = work / "roots.pem"
    roots.write_text("".join(ca.bundle()))

    def svid(name: str, spiffe_id: str) -> Svid:
        key_pem, csr_pem = key_and_csr(spiffe_id)
        chain, _ = ca.issue(csr_pem, expected=spiffe_id, ttl=dt.timedelta(days=1))
        s = Svid(work / f"{name}.crt", work / f"{name}.key", work / f"{name}.pem")
        s.chain.write_text(chain)
        s.key.write_text(key_pem)
        s.combined.write_text(chain + key_pem)
        for p in (s.key, s.combined):
            p.chmod(0o600)
        return s

    client, server = svid("client", CLIENT_ID), svid("server", SERVER_ID)
    store = work / "client-store.pem"
    issuers = x509.load_pem_x509_certificates(client.chain.read_bytes())[1:]
    store.write_text(roots.read_text() + "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in issuers))
    return Pki(roots, client, server, store)


# === processes ===


@dataclass
class Group:
    """Processes measured together: both halves of a pair."""

    procs: list[Proc]

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.procs)

    def tree(self) -> list[int]:
        return [pid for p in self.procs for pid in p.tree()]


@dataclass
class Server:
    """The server half of a pair, for the handshake load."""

    port: int
    proc: Proc
    handshakes: Callable[[], int]  # the server's own count of completed handshakes


@dataclass
class Setup:
    st: Stack
    pki: Pki
    urls: dict[str, str] = field(default_factory=dict)
    pairs: dict[str, Group] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)


def meshctl_pair(s: Setup, name: str, protocol: str, backend: int) -> tuple[Proc, int, int]:
    """outbound (plain HTTP in, mTLS out) -> inbound (strict mTLS in, HTTP/1.1 to the backend)."""
    work, pki = s.st.work, s.pki
    inbound, outbound, admin = free_port(), free_port(), free_port()
    (work / f"{name}-in.yaml").write_text(
        json.dumps(
            {
                "admin": {"address": f"127.0.0.1:{admin}"},
                "identity": pki.server.identity(pki.roots),
                "listeners": [
                    {
                        "name": "inbound",
                        "address": f"127.0.0.1:{inbound}",
                        "tls": {"mode": "strict"},
                        "routes": [{"backends": [{"cluster": "app"}]}],
                    }
                ],
                "clusters": [{"name": "app", "protocol": "http1", "endpoints": [{"address": f"127.0.0.1:{backend}"}]}],
            }
        )
    )
    (work / f"{name}-out.yaml").write_text(
        json.dumps(
            {
                "identity": pki.client.identity(pki.roots),
                "listeners": [
                    {"name": "out", "address": f"127.0.0.1:{outbound}", "routes": [{"backends": [{"cluster": "peer"}]}]}
                ],
                "clusters": [
                    {
                        "name": "peer",
                        "protocol": protocol,
                        "tls": {"peer_ids": [SERVER_ID]},
                        "endpoints": [{"address": f"127.0.0.1:{inbound}"}],
                    }
                ],
            }
        )
    )
    quiet = ["env", "MESHCTL_LOG=warn"]
    proxy = [*quiet, *MESHCTL, "proxy", "--workers", "1", "--no-watch", "--config"]
    srv = s.st.spawn(f"{name}-in", [*proxy, f"{name}-in.yaml"], inbound)
    wait_port(admin)
    cli = s.st.spawn(f"{name}-out", [*proxy, f"{name}-out.yaml"], outbound)
    s.urls[name] = f"http://127.0.0.1:{outbound}/"
    s.pairs[name] = Group([cli, srv])
    return srv, inbound, admin


def meshctl_handshakes(admin: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats", timeout=5) as r:
        stats = json.loads(r.read())
    return int(stats["listeners"]["inbound"]["tls"]["handshakes"])


def haproxy_pair(s: Setup, backend: int) -> tuple[Proc, int, Path]:
    """A (plain HTTP in; mTLS with ALPN h2 out, connections reused) -> B (mTLS in, TLS 1.3) -> backend."""
    work, pki = s.st.work, s.pki
    a, b = free_port(), free_port()
    sock = work / "haproxy-b.sock"
    tls = f"ca-file {pki.roots} verify required ssl-min-ver TLSv1.3"

    def config(name: str, *sections: str) -> str:
        head = "global\n    nbthread 1\n    maxconn 4000\n"
        head += "defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n"
        (work / name).write_text(head + "".join(textwrap.dedent(x) for x in sections))
        return name

    b_cfg = config(
        "haproxy-b.cfg",
        f"""
        global
            stats socket {sock} level user
        frontend inbound
            bind 127.0.0.1:{b} ssl crt {pki.server.combined} {tls} alpn h2,http/1.1
            default_backend app
        backend app
            http-reuse always
            server app 127.0.0.1:{backend}
        """,
    )
    a_cfg = config(
        "haproxy-a.cfg",
        f"""
        frontend out
            bind 127.0.0.1:{a}
            default_backend peer
        backend peer
            http-reuse always
            server b 127.0.0.1:{b} ssl crt {pki.client.combined} {tls} alpn h2
        """,
    )
    srv = s.st.spawn("haproxy-b", [tool("haproxy"), "-f", b_cfg, "-db"], b)
    cli = s.st.spawn("haproxy-a", [tool("haproxy"), "-f", a_cfg, "-db"], a)
    s.urls["haproxy"] = f"http://127.0.0.1:{a}/"
    s.pairs["haproxy"] = Group([cli, srv])
    return srv, b, sock


def haproxy_info(sock: Path) -> dict[str, str]:
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(5)
        c.connect(str(sock))
        c.sendall(b"show info\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    return dict(line.split(": ", 1) for line in data.decode().splitlines() if ": " in line)


def start(s: Setup) -> None:
    be = free_port()
    s.st.spawn("backend", [*MESHCTL, "backend", "--http", f"127.0.0.1:{be}", "--threads", "1", "--body", BODY], be)
    s.urls["direct"] = f"http://127.0.0.1:{be}/"
    srv, port, admin = meshctl_pair(s, "meshctl-h2", "http2", be)
    s.servers["meshctl"] = Server(port, srv, lambda: meshctl_handshakes(admin))
    meshctl_pair(s, "meshctl-h1", "http1", be)
    srv, port, sock = haproxy_pair(s, be)
    s.servers["haproxy"] = Server(port, srv, lambda: int(haproxy_info(sock)["CumSslConns"]))


@contextlib.contextmanager
def running(work: Path, pki: Pki) -> Iterator[Setup]:
    s = Setup(Stack(work), pki)
    try:
        start(s)
        yield s
    finally:
        s.st.stop()


# === checks before measuring ===


def s_client(port: int, *args: str) -> str:
    request = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief", "-ign_eof", *args],
        input=request,
        capture_output=True,
        timeout=20,
    )
    return (out.stdout + out.stderr).decode(errors="replace")


def preflight(s: Setup) -> dict[str, Any]:
    """Every path answers the 1 KB body; each server side speaks TLS 1.3 and lets a request through
    only with a client certificate from the CA."""
    for name, url in s.urls.items():
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read()
        if r.status != 200 or body != BODY.encode():
            raise RuntimeError(f"{name}: {r.status}, {len(body)} bytes")
    checks: dict[str, Any] = {}
    pki = s.pki
    for name, server in s.servers.items():
        ok = s_client(
            server.port,
            "-verify_return_error",
            "-CAfile",
            str(pki.client_store),
            "-cert",
            str(pki.client.chain),
            "-key",
            str(pki.client.key),
        )
        bare = s_client(server.port, "-CAfile", str(pki.roots))
        version = re.search(r"Protocol version: (\S+)", ok)
        checks[name] = {
            "protocol": version.group(1) if version else None,
            "with_client_cert": "HTTP/1.1 200" in ok,
            "without_client_cert_refused": "HTTP/1.1 200" not in bare,
        }
        if checks[name] != {"protocol": "TLSv1.3", "with_client_cert": True, "without_client_cert_refused": True}:
            raise RuntimeError(f"{name}: TLS checks failed: {checks[name]}\n{ok[-1500:]}\n{bare[-1500:]}")
    return checks


# === load ===


def handshakes(s: Setup, name: str, seconds: float, clients: int) -> dict[str, Any]:
    """`clients` x `openssl s_time -new -www /` against the server side: full TLS 1.3 handshakes with
    the client certificate, counted by the server itself. Each connection asks for / (HTTP/1.0) and
    waits for the answer: in TLS 1.3 the client is done before the server has checked its
    certificate, and a client that hangs up at once can leave the server's side unfinished (rustls
    then counts a failure, its session tickets having nowhere to go), so without a request the
    count would not be of verified handshakes."""
    server, pki = s.servers[name], s.pki
    argv = [
        "openssl",
        "s_time",
        "-connect",
        f"127.0.0.1:{server.port}",
        "-new",
        "-tls1_3",
        "-cert",
        str(pki.client.chain),
        "-key",
        str(pki.client.key),
        "-CAfile",
        str(pki.client_store),
        "-verify",
        "4",
        "-www",
        "/",
        "-time",
        str(max(1, round(seconds))),
    ]
    before, cpu0, t0 = server.handshakes(), server.proc.cpu_seconds(), time.monotonic()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(clients)]
    outs = [p.communicate()[0].decode(errors="replace") for p in procs]
    wall = time.monotonic() - t0
    done, cpu = server.handshakes() - before, server.proc.cpu_seconds() - cpu0
    counted = 0
    for out in outs:
        m = re.search(r"(\d+) connections in [\d.]+s;", out)
        if not m:
            raise RuntimeError(f"openssl s_time failed: {out[-1500:]}")
        counted += int(m.group(1))
    return {
        "handshakes_per_s": done / wall,
        "server_handshakes": done,
        "client_connections": counted,
        "wall_s": wall,
        "server_cpu_s": cpu,
        "server_cpu_frac": cpu / wall,
        "server_cpu_us_per_handshake": cpu / max(done, 1) * 1e6,
    }


@dataclass
class Plan:
    rounds: int
    seconds: float
    connections: int
    fixed_rps: int
    rate_connections: int
    handshake_clients: int


def run_rounds(s: Setup, plan: Plan) -> dict[str, list[dict[str, Any]]]:
    """Every case once per round, in the same order each round."""
    c, sec = str(plan.connections), str(plan.seconds)
    post = ["-m", "POST", "--body", BODY]
    cases: dict[str, Callable[[], dict[str, Any]]] = {}
    for name in PATHS:
        url, group = s.urls[name], s.pairs.get(name)
        cases[f"l7/{name}"] = lambda url=url, g=group: measured(g, lambda: bench(url, "-c", c, "-d", sec))
    for name in PATHS:
        url, group = s.urls[name], s.pairs.get(name)
        cases[f"rate/{name}"] = lambda url=url, g=group: measured(
            g, lambda: bench(url, "-c", str(plan.rate_connections), "-d", sec, "--rps", str(plan.fixed_rps), *post)
        )
    for name in SERVERS:
        cases[f"hs/{name}"] = lambda name=name: handshakes(s, name, plan.seconds, plan.handshake_clients)
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in cases}
    for r in range(plan.rounds):
        for name, case in cases.items():
            print(f"round {r + 1}/{plan.rounds}: {name}", file=sys.stderr, flush=True)
            results[name].append(case())
    return results


# === the machine: is anyone else using it? ===


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent in processes (user, nice, system) since boot. Interrupt
    time is left out: the loopback traffic's softirq work is charged to no process, not even ours."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:3]) / CLK_TCK


def own_cpu_seconds() -> float:
    """This process and every child it has waited for (proxies, backend, generators, openssl)."""
    return sum(
        r.ru_utime + r.ru_stime
        for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


# === report ===


def summarize(
    results: dict[str, list[dict[str, Any]]], plan: Plan, checks: dict[str, Any], load: dict[str, float]
) -> dict[str, Any]:
    med: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        m: dict[str, float] = {}
        if name.startswith("hs/"):
            for key in ("handshakes_per_s", "server_cpu_us_per_handshake", "server_cpu_frac"):
                m[key] = median([r[key] for r in runs])
            m["server_handshakes"] = sum(r["server_handshakes"] for r in runs)
            m["client_connections"] = sum(r["client_connections"] for r in runs)
        else:
            m["rps"] = median([r["rps"] for r in runs])
            m["p99_ms"] = median([r["latency_ms"]["p99"] for r in runs])
            m["errors"] = sum(r["errors"]["total"] for r in runs)
            if runs and "proxy_cpu_s" in runs[0]:
                m["cpu_s_per_100k"] = median([r["proxy_cpu_s"] / max(r["requests"], 1) * 1e5 for r in runs])
                m["rss_mb"] = median([r["proxy_rss_mb"] for r in runs])
        med[name] = m
    # Added latency: each round's case p99 less the same round's direct p99, then the median.
    direct = [r["latency_ms"]["p99"] for r in results["rate/direct"]]
    for name in PATHS[1:]:
        runs = results[f"rate/{name}"]
        med[f"rate/{name}"]["added_p99_ms"] = median(
            [r["latency_ms"]["p99"] - d for r, d in zip(runs, direct, strict=True)]
        )

    def ratio(a: str, b: str, key: str) -> float:
        return med[a][key] / med[b][key] if med[b].get(key) else float("nan")

    values = {
        "l7_rps_meshctl_h2_over_haproxy": ratio("l7/meshctl-h2", "l7/haproxy", "rps"),
        "l7_rps_meshctl_h1_over_haproxy": ratio("l7/meshctl-h1", "l7/haproxy", "rps"),
        "added_p99_ms_at_rate_meshctl_h2": med["rate/meshctl-h2"]["added_p99_ms"],
        "added_p99_ms_at_rate_meshctl_h1": med["rate/meshctl-h1"]["added_p99_ms"],
        "handshakes_meshctl_over_haproxy": ratio("hs/meshctl", "hs/haproxy", "handshakes_per_s"),
    }
    targets = {
        "l7_rps_meshctl_h2_over_haproxy": (">=", 1.0),
        "l7_rps_meshctl_h1_over_haproxy": (">=", 1.0),
        "added_p99_ms_at_rate_meshctl_h2": ("<=", 0.5),
        "added_p99_ms_at_rate_meshctl_h1": ("<=", 0.5),
        "handshakes_meshctl_over_haproxy": (">=", 1.0),
    }
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "plan": plan.__dict__,
        "tls_checks": checks,
        "load": load,
        "medians": med,
        "values": values,
        "targets": judged(values, targets),
    }


def markdown(s: dict[str, Any]) -> str:
    m, plan, load = s["medians"], s["plan"], s["load"]
    shared = (
        f" Other work on the machine used {load['others_cores']:.2f} of its cores on average during the run"
        f" (1-minute load average {load['loadavg_before']:.2f} before, {load['loadavg_after']:.2f} after)."
    )
    lines = [
        f"Run {s['when']} on {s['machine']}; {plan['rounds']} rounds x {plan['seconds']} s per case, medians over "
        "rounds. Generator `meshctl bench`, one thread; every proxy one worker/thread; backend `meshctl backend` "
        f"answering 1 KB.{shared}",
        "",
        f"| Closed loop, {plan['connections']} keep-alive connections, GET, 1 KB answers | rps | p99 ms "
        "| CPU s / 100k req (both proxies) | RSS MB (both) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in PATHS:
        r = m[f"l7/{name}"]
        cpu = f"{r['cpu_s_per_100k']:.2f}" if "cpu_s_per_100k" in r else "-"
        rss = f"{r['rss_mb']:.1f}" if "rss_mb" in r else "-"
        lines.append(f"| {LABELS[name]} | {r['rps']:.0f} | {r['p99_ms']:.3f} | {cpu} | {rss} |")
    lines += [
        "",
        f"| Open loop {plan['fixed_rps']} rps, {plan['rate_connections']} connections, POST 1 KB, 1 KB answers "
        "| achieved rps | p99 ms | added p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for name in PATHS:
        r = m[f"rate/{name}"]
        added = f"{r['added_p99_ms']:+.3f}" if "added_p99_ms" in r else "-"
        lines.append(f"| {LABELS[name]} | {r['rps']:.0f} | {r['p99_ms']:.3f} | {added} |")
    lines += [
        "",
        f"| New mTLS handshakes (TLS 1.3, client certificate), {plan['handshake_clients']} x "
        "`openssl s_time -new -www /` (a handshake and one request per connection) "
        "| handshakes/s | server CPU us / handshake | server CPU, cores |",
        "|---|---:|---:|---:|",
    ]
    for name in SERVERS:
        r = m[f"hs/{name}"]
        lines.append(
            f"| {LABELS['hs/' + name]} | {r['handshakes_per_s']:.0f} | {r['server_cpu_us_per_handshake']:.0f} "
            f"| {r['server_cpu_frac']:.2f} |"
        )
    lines += ["", "| Target | value | goal | met |", "|---|---:|---:|:---:|"]
    for k, t in s["targets"].items():
        v = s["values"][k]
        shown = f"{v:+.3f}" if k.startswith("added") else f"{v:.2f}"
        lines.append(f"| {k} | {shown} | {t['op']} {t['value']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--fixed-rps", type=int, default=1000)
    ap.add_argument("--rate-connections", type=int, default=50)
    ap.add_argument("--handshake-clients", type=int, default=2, help="openssl s_time processes run in parallel")
    ap.add_argument("--smoke", action="store_true", help="one round, two seconds per case, results in --out only")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds = 1, 2.0
    plan = Plan(
        args.rounds, args.seconds, args.connections, args.fixed_rps, args.rate_connections, args.handshake_clients
    )
    ensure_packages({"haproxy": "haproxy", "openssl": "openssl"})
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    busy0, own0, t0 = busy_cpu_seconds(), own_cpu_seconds(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="meshctl-bench-mtls-") as tmp:
        work = Path(tmp)
        pki = make_pki(work / "pki")
        with running(work, pki) as s:
            checks = preflight(s)
            results = run_rounds(s, plan)
    wall = time.monotonic() - t0
    others = max(0.0, (busy_cpu_seconds() - busy0) - (own_cpu_seconds() - own0))
    load = {
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg()[0],
        "wall_s": wall,
        "others_cpu_s": others,
        "others_cores": others / wall,
    }
    summary = summarize(results, plan, checks, load)
    (args.out / "mtls.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=2))
    table = markdown(summary)
    if not args.smoke:
        write_readme_table(table, "mtls")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
