"""The peer benchmark suite: the same load, interleaved in rounds, through
direct / meshctl / HAProxy / nginx, reported as medians and ratios; one L7
hop with two workers (meshctl `--workers 2`, HAProxy `nbthread 2`); then the
mTLS pairs (bench/mtls.py), so that one command gives every table.

    python bench/suite.py                 # full run: 5 rounds x 10 s per case (about 25 minutes)
    python bench/suite.py --smoke         # 1 round x 2 s per case, results in a temp dir (CI)
    python bench/suite.py --no-mtls       # without the mTLS pairs

Writes bench/results/latest.json, bench/results/latest.png, bench/results/mtls.json
and the tables in bench/README.md. Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

HERE = Path(__file__).resolve().parent
DEBS = {"haproxy": "haproxy", "nginx": "nginx", "wrk": "wrk"}
MESHCTL = [sys.executable, "-m", "meshctl"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def ensure_packages(debs: dict[str, str] | None = None) -> None:
    """Installs the Debian packages (tool -> package) that are missing; the suite's own by default."""
    missing = [
        deb
        for tool, deb in (debs or DEBS).items()
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        sys.exit(f"missing {', '.join(missing)}: run  sudo apt-get update && sudo {' '.join(cmd)}")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(cmd, check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


# === processes ===


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]

    def tree(self) -> list[int]:
        """The process and its descendants (nginx and HAProxy work in children)."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        pids, frontier = [self.popen.pid], [self.popen.pid]
        while frontier:
            frontier = [p for p, pp in parents.items() if pp in frontier]
            pids += frontier
        return pids

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.tree():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / CLK_TCK

    def rss_mb(self) -> float:
        return rss_mb(self.tree())

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def rss_mb(pids: list[int]) -> float:
    """The summed RSS of `pids` (a process that is gone counts nothing)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


@dataclass
class Stack:
    """Backend and proxies, each listening on its own ports."""

    work: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    http: dict[str, int] = field(default_factory=dict)
    tcp: dict[str, int] = field(default_factory=dict)

    def spawn(self, name: str, argv: list[str], port: int) -> Proc:
        log = (self.work / f"{name}.log").open("wb")
        p = Proc(name, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.work))
        self.procs[name] = p
        try:
            wait_port(port)
        except RuntimeError:
            raise RuntimeError(f"{name} did not start: {(self.work / f'{name}.log').read_text()[-2000:]}") from None
        return p

    def stop(self) -> None:
        for p in self.procs.values():
            p.stop()


def start_meshctl(st: Stack, name: str, *, workers: int, be_http: int, be_sink: int | None = None) -> tuple[int, int]:
    """`meshctl proxy --workers N` with an HTTP listener to `be_http` and, given `be_sink`, a TCP
    listener to it: (http port, tcp port or 0)."""
    http_port = free_port()
    listeners: list[dict[str, Any]] = [
        {"name": "web", "address": f"127.0.0.1:{http_port}", "routes": [{"backends": [{"cluster": "be"}]}]}
    ]
    clusters: list[dict[str, Any]] = [{"name": "be", "endpoints": [{"address": f"127.0.0.1:{be_http}"}]}]
    tcp_port = 0
    if be_sink is not None:
        tcp_port = free_port()
        listeners.append({"name": "l4", "address": f"127.0.0.1:{tcp_port}", "protocol": "tcp", "cluster": "sink"})
        clusters.append({"name": "sink", "endpoints": [{"address": f"127.0.0.1:{be_sink}"}]})
    (st.work / f"{name}.yaml").write_text(json.dumps({"listeners": listeners, "clusters": clusters}))
    argv = ["env", "MESHCTL_LOG=warn", *MESHCTL, "proxy", "--config", f"{name}.yaml", "--workers", str(workers)]
    st.spawn(name, [*argv, "--no-watch"], http_port)
    if tcp_port:
        wait_port(tcp_port)
    return http_port, tcp_port


def start_haproxy(st: Stack, name: str, *, threads: int, be_http: int, be_sink: int | None = None) -> tuple[int, int]:
    """HAProxy with `nbthread` threads, as `start_meshctl` (connection reuse; L4 with splice)."""
    http_port = free_port()
    config = f"""
        global
            nbthread {threads}
            maxconn 4000
        defaults
            timeout connect 5s
            timeout client 60s
            timeout server 60s
        frontend web
            mode http
            bind 127.0.0.1:{http_port}
            default_backend be
        backend be
            mode http
            http-reuse always
            server s1 127.0.0.1:{be_http}
        """
    tcp_port = 0
    if be_sink is not None:
        tcp_port = free_port()
        config += f"""
        frontend l4
            mode tcp
            bind 127.0.0.1:{tcp_port}
            option splice-auto
            default_backend sink
        backend sink
            mode tcp
            option splice-auto
            server s1 127.0.0.1:{be_sink}
        """
    (st.work / f"{name}.cfg").write_text(textwrap.dedent(config))
    st.spawn(name, [tool("haproxy"), "-f", f"{name}.cfg", "-db"], http_port)
    return http_port, tcp_port


def start_stack(work: Path) -> Stack:
    st = Stack(work)
    be_http, be_sink = free_port(), free_port()
    st.spawn(
        "backend",
        [*MESHCTL, "backend", "--http", f"127.0.0.1:{be_http}", "--tcp-sink", f"127.0.0.1:{be_sink}", "--threads", "1"],
        be_http,
    )
    wait_port(be_sink)
    st.http["direct"], st.tcp["direct"] = be_http, be_sink

    # meshctl: one worker thread, HTTP/1.1 upstream keep-alive (its default), and L4; HAProxy the
    # same with one thread (connection reuse, L4 with splice). Then each with two workers, L7 only,
    # for the scaling factor on the two cores.
    m_http, m_tcp = start_meshctl(st, "meshctl", workers=1, be_http=be_http, be_sink=be_sink)
    st.http["meshctl"], st.tcp["meshctl"] = m_http, m_tcp
    h_http, h_tcp = start_haproxy(st, "haproxy", threads=1, be_http=be_http, be_sink=be_sink)
    st.http["haproxy"], st.tcp["haproxy"] = h_http, h_tcp
    st.http["meshctl-w2"] = start_meshctl(st, "meshctl-w2", workers=2, be_http=be_http)[0]
    st.http["haproxy-t2"] = start_haproxy(st, "haproxy-t2", threads=2, be_http=be_http)[0]

    # nginx: one worker, upstream keep-alive.
    n_http = free_port()
    (work / "nginx.conf").write_text(
        textwrap.dedent(f"""
        worker_processes 1;
        daemon off;
        user root;
        pid {work}/nginx.pid;
        error_log {work}/nginx-error.log warn;
        events {{ worker_connections 8000; }}
        http {{
            access_log off;
            client_body_temp_path {work}/nginx-tmp;
            proxy_temp_path {work}/nginx-tmp;
            upstream be {{ server 127.0.0.1:{be_http}; keepalive 256; }}
            server {{
                listen 127.0.0.1:{n_http};
                location / {{
                    proxy_pass http://be;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                }}
            }}
        }}
        """)
    )
    st.spawn("nginx", [tool("nginx"), "-c", str(work / "nginx.conf")], n_http)
    st.http["nginx"] = n_http
    return st


# === load ===


def bench(url: str, *args: str, threads: int = 1) -> dict[str, Any]:
    argv = [*MESHCTL, "bench", url, "--json", "--threads", str(threads), *args]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"meshctl bench {url} failed: {out.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def wrk(url: str, connections: int, seconds: float) -> float:
    out = subprocess.run(
        [tool("wrk"), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", url], capture_output=True, text=True
    )
    m = re.search(r"Requests/sec:\s*([\d.]+)", out.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {out.stdout}{out.stderr}")
    return float(m.group(1))


class Metered(Protocol):
    """What `measured` reads: a Proc, or several processes counted together."""

    def tree(self) -> list[int]: ...

    def cpu_seconds(self) -> float: ...


def measured(proc: Metered | None, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Runs a load and adds the proxy's CPU seconds over it and its largest RSS while it ran
    (sampled every 250 ms from the processes' status files alone: finding the process tree scans
    all of /proc, and doing that during the load took CPU from the proxies and showed in their
    latency)."""
    if proc is None:
        return run()
    pids = proc.tree()
    cpu0, peak, done = proc.cpu_seconds(), [rss_mb(pids)], threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            peak.append(rss_mb(pids))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = run()
    finally:
        done.set()
        sampler.join()
    result["proxy_cpu_s"] = proc.cpu_seconds() - cpu0
    result["proxy_rss_mb"] = max([*peak, rss_mb(pids)])
    return result


@dataclass
class Plan:
    rounds: int
    seconds: float
    connections: int
    fixed_rps: int
    bulk_connections: int


def run_rounds(st: Stack, plan: Plan) -> dict[str, list[dict[str, Any]]]:
    """Every case once per round, in the same order each round (A B C D, A B C D, ...)."""
    c, s = str(plan.connections), str(plan.seconds)
    cases: dict[str, Callable[[], dict[str, Any]]] = {}
    for name in ("direct", "meshctl", "haproxy", "nginx"):
        url = f"http://127.0.0.1:{st.http[name]}/"
        proc = st.procs.get(name) if name != "direct" else None
        cases[f"l7/{name}"] = lambda url=url, proc=proc: measured(proc, lambda: bench(url, "-c", c, "-d", s))
        cases[f"rate/{name}"] = lambda url=url, proc=proc: measured(
            proc, lambda: bench(url, "-c", "50", "-d", s, "--rps", str(plan.fixed_rps))
        )
    # Two workers, and a generator of two threads (one would hold them back).
    for name, proxy in (("meshctl", "meshctl-w2"), ("haproxy", "haproxy-t2")):
        url = f"http://127.0.0.1:{st.http[proxy]}/"
        cases[f"l7w2/{name}"] = lambda url=url, p=st.procs[proxy]: measured(
            p, lambda: bench(url, "-c", c, "-d", s, threads=2)
        )
    cases["l7/direct-wrk"] = lambda: {
        "rps": wrk(f"http://127.0.0.1:{st.http['direct']}/", plan.connections, plan.seconds)
    }
    for name in ("direct", "meshctl", "haproxy"):
        url = f"tcp://127.0.0.1:{st.tcp[name]}"
        proc = st.procs.get(name) if name != "direct" else None
        cases[f"l4/{name}"] = lambda url=url, proc=proc: measured(
            proc, lambda: bench(url, "--tcp-mode", "bulk", "-c", str(plan.bulk_connections), "-d", s)
        )
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in cases}
    for r in range(plan.rounds):
        for name, case in cases.items():
            print(f"round {r + 1}/{plan.rounds}: {name}", file=sys.stderr, flush=True)
            results[name].append(case())
    return results


def idle_memory(st: Stack) -> dict[str, float]:
    """RSS of an idle meshctl proxy (before any load) and of a bare interpreter."""
    bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.5)
        bare_rss = Proc("bare", bare).rss_mb()
    finally:
        bare.kill()
        bare.wait()
    idle = st.procs["meshctl"].rss_mb()
    return {"bare_python_mb": bare_rss, "idle_mb": idle, "idle_over_python_mb": idle - bare_rss}


def connections_memory(st: Stack) -> dict[str, float]:
    """RSS of the meshctl proxy with 1,000 open connections: measured after the rounds, since the
    memory it takes stays with the process (the allocator keeps it, the upstream pool keeps the
    connections it opened) and would count in the rounds' RSS under the 50-connection load."""
    proxy = st.procs["meshctl"]
    conns = []
    try:
        request = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n"
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", st.http["meshctl"]))
            s.sendall(request)
            conns.append(s)
        for s in conns:  # every connection answered once: it is open and pooled upstream too
            s.settimeout(10)
            s.recv(4096)
        loaded = proxy.rss_mb()
    finally:
        for s in conns:
            s.close()
    return {"conns_1000_mb": loaded}


# === report ===


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(results: dict[str, list[dict[str, Any]]], memory: dict[str, float], plan: Plan) -> dict[str, Any]:
    med: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        m: dict[str, float] = {"rps": median([r["rps"] for r in runs])}
        if runs and "latency_ms" in runs[0]:
            m["p99_ms"] = median([r["latency_ms"]["p99"] for r in runs])
            m["errors"] = sum(r["errors"]["total"] for r in runs)
        if runs and "throughput_mbps" in runs[0]:
            m["mbps"] = median([r["throughput_mbps"] for r in runs])
        if runs and "proxy_cpu_s" in runs[0]:
            m["cpu_s_per_100k"] = median([r["proxy_cpu_s"] / max(r["requests"], 1) * 1e5 for r in runs])
            m["rss_mb"] = median([r["proxy_rss_mb"] for r in runs])
        med[name] = m

    def ratio(a: str, b: str, key: str) -> float:
        return med[a][key] / med[b][key] if med[b].get(key) else float("nan")

    ratios = {
        "l7_rps_meshctl_over_haproxy": ratio("l7/meshctl", "l7/haproxy", "rps"),
        "l7_rps_meshctl_over_nginx": ratio("l7/meshctl", "l7/nginx", "rps"),
        "l7_rps_meshctl_over_direct": ratio("l7/meshctl", "l7/direct", "rps"),
        "p99_at_rate_meshctl_over_haproxy": ratio("rate/meshctl", "rate/haproxy", "p99_ms"),
        "l4_mbps_meshctl_over_haproxy": ratio("l4/meshctl", "l4/haproxy", "mbps"),
        "generator_meshctl_bench_over_wrk": ratio("l7/direct", "l7/direct-wrk", "rps"),
        "l7_2workers_rps_meshctl_over_haproxy": ratio("l7w2/meshctl", "l7w2/haproxy", "rps"),
        # The scaling factor: two workers (generator two threads) over one (generator one thread).
        "scaling_2workers_meshctl": ratio("l7w2/meshctl", "l7/meshctl", "rps"),
        "scaling_2workers_haproxy": ratio("l7w2/haproxy", "l7/haproxy", "rps"),
    }
    targets = {
        "l7_rps_meshctl_over_haproxy": (">=", 1.05),
        "l7_rps_meshctl_over_direct": (">=", 0.55),
        "p99_at_rate_meshctl_over_haproxy": ("<=", 1.2),
        "l4_mbps_meshctl_over_haproxy": (">=", 1.0),
        "generator_meshctl_bench_over_wrk": (">=", 1.0),
        "l7_2workers_rps_meshctl_over_haproxy": (">=", 1.05),
    }
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "plan": plan.__dict__,
        "medians": med,
        "ratios": ratios,
        "targets": judged(ratios, targets),
        "memory": memory,
        "memory_targets": {
            "idle_over_python_mb<=10": memory["idle_over_python_mb"] <= 10,
            "under_load_mb<=25": med["l7/meshctl"]["rss_mb"] <= 25,
            "conns_1000_mb<=60": memory["conns_1000_mb"] <= 60,
        },
    }


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} x {cpu}, {mem:.0f} GiB, Linux {platform.release()}, Python {platform.python_version()}"


def markdown(s: dict[str, Any]) -> str:
    m = s["medians"]
    lines = [
        f"Run {s['when']} on {s['machine']}; {s['plan']['rounds']} rounds x {s['plan']['seconds']} s per case, "
        f"medians over rounds. Generator: `meshctl bench`, one thread; proxies one worker; backend `meshctl backend`.",
        "",
        f"| L7 HTTP/1.1 keep-alive, {s['plan']['connections']} connections "
        "| rps | p99 ms | proxy CPU s / 100k req | proxy RSS MB (largest while loaded) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("direct", "meshctl", "haproxy", "nginx"):
        r = m[f"l7/{name}"]
        cpu = f"{r['cpu_s_per_100k']:.2f}" if "cpu_s_per_100k" in r else "-"
        rss = f"{r['rss_mb']:.1f}" if "rss_mb" in r else "-"
        lines.append(f"| {name} | {r['rps']:.0f} | {r['p99_ms']:.3f} | {cpu} | {rss} |")
    lines.append(f"| direct, wrk (generator check) | {m['l7/direct-wrk']['rps']:.0f} | - | - | - |")
    lines += [
        "",
        f"| L7, two workers (HAProxy nbthread 2), generator two threads, {s['plan']['connections']} connections "
        "| rps | p99 ms | proxy CPU s / 100k req | scaling over one worker |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("meshctl", "haproxy"):
        r = m[f"l7w2/{name}"]
        scaling = s["ratios"][f"scaling_2workers_{name}"]
        lines.append(f"| {name} | {r['rps']:.0f} | {r['p99_ms']:.3f} | {r['cpu_s_per_100k']:.2f} | {scaling:.2f} x |")
    lines += [
        "",
        f"| Fixed rate {s['plan']['fixed_rps']} rps, 50 connections | achieved rps | p99 ms |",
        "|---|---:|---:|",
    ]
    for name in ("direct", "meshctl", "haproxy", "nginx"):
        r = m[f"rate/{name}"]
        lines.append(f"| {name} | {r['rps']:.0f} | {r['p99_ms']:.3f} |")
    lines += [
        "",
        f"| L4 bulk, {s['plan']['bulk_connections']} connections | Mbit/s | proxy CPU s / 100k chunks |",
        "|---|---:|---:|",
    ]
    for name in ("direct", "meshctl", "haproxy"):
        r = m[f"l4/{name}"]
        cpu = f"{r['cpu_s_per_100k']:.2f}" if "cpu_s_per_100k" in r else "-"
        lines.append(f"| {name} | {r['mbps']:.0f} | {cpu} |")
    lines += ["", "| Ratio | value | target | met |", "|---|---:|---:|:---:|"]
    for k, t in s["targets"].items():
        lines.append(f"| {k} | {s['ratios'][k]:.2f} | {t['op']} {t['value']} | {'yes' if t['met'] else 'no'} |")
    mem, met = s["memory"], s["memory_targets"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    lines += [
        "",
        "| Memory (the 1,000 connections after the rounds) | MB | target |",
        "|---|---:|---|",
        f"| bare Python interpreter | {mem['bare_python_mb']:.1f} | |",
        f"| meshctl proxy, idle | {mem['idle_mb']:.1f} | <= python + 10 ({verdict(met['idle_over_python_mb<=10'])}) |",
        f"| meshctl proxy, under the L7 load (largest while it ran, median round) | {m['l7/meshctl']['rss_mb']:.1f} "
        f"| <= 25 ({verdict(met['under_load_mb<=25'])}) |",
        f"| meshctl proxy, 1,000 open connections | {mem['conns_1000_mb']:.1f} "
        f"| <= 60 ({verdict(met['conns_1000_mb<=60'])}) |",
    ]
    return "\n".join(lines)


def chart(s: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = s["medians"]
    names = ["direct", "meshctl", "haproxy", "nginx"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    axes[0].bar(names, [m[f"l7/{n}"]["rps"] for n in names], color=["#999", "#2a7", "#37c", "#c73"])
    axes[0].set_title("L7 keep-alive: requests/s")
    axes[1].bar(names, [m[f"rate/{n}"]["p99_ms"] for n in names], color=["#999", "#2a7", "#37c", "#c73"])
    axes[1].set_title(f"p99 ms at {s['plan']['fixed_rps']} rps")
    l4 = ["direct", "meshctl", "haproxy"]
    axes[2].bar(l4, [m[f"l4/{n}"]["mbps"] for n in l4], color=["#999", "#2a7", "#37c"])
    axes[2].set_title("L4 bulk: Mbit/s")
    fig.suptitle(s["machine"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_readme_table(table: str, marker: str = "results") -> None:
    """Puts `table` between the `<!-- marker:start/end -->` comments of bench/README.md (appended
    with them when they are missing)."""
    readme = HERE / "README.md"
    text = readme.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = f"{head}{start}\n{table}\n{end}{tail}"
    else:
        text += f"\n{start}\n{table}\n{end}\n"
    readme.write_text(text)


def judged(values: dict[str, float], targets: dict[str, tuple[str, float]]) -> dict[str, dict[str, Any]]:
    """Each target as {op, value, met} for `values`."""
    return {
        k: {"op": op, "value": v, "met": (values[k] >= v) if op == ">=" else (values[k] <= v)}
        for k, (op, v) in targets.items()
    }


@contextlib.contextmanager
def stack(work: Path) -> Iterator[Stack]:
    st = start_stack(work)
    try:
        yield st
    finally:
        st.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--fixed-rps", type=int, default=10_000)
    ap.add_argument("--bulk-connections", type=int, default=4)
    ap.add_argument("--smoke", action="store_true", help="one round, two seconds per case, results in --out only")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--no-mtls", action="store_true", help="without the mTLS pairs (bench/mtls.py)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds = 1, 2.0
    plan = Plan(args.rounds, args.seconds, args.connections, args.fixed_rps, args.bulk_connections)
    ensure_packages()
    # Children inherit this: 1,000 test connections and the proxies' own sockets.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="meshctl-bench-") as tmp:
        work = Path(tmp)
        (work / "nginx-tmp").mkdir()
        with stack(work) as st:
            memory = idle_memory(st)
            results = run_rounds(st, plan)
            memory |= connections_memory(st)
    summary = summarize(results, memory, plan)
    (args.out / "latest.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=2))
    chart(summary, args.out / "latest.png")
    table = markdown(summary)
    if not args.smoke:
        write_readme_table(table)
    print(table)
    if args.no_mtls:
        return 0
    import mtls  # (it imports this module: here, not at the top)

    shared = ["--rounds", str(args.rounds), "--seconds", str(args.seconds), "--out", str(args.out)]
    return mtls.main([*shared, "--smoke"] if args.smoke else shared)


if __name__ == "__main__":
    sys.exit(main())
