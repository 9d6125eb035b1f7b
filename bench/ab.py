"""A/B of two meshctl builds on one L7 hop, in one run: each build's `meshctl proxy --workers 1`
in front of one `meshctl backend`, loaded in turn by `wrk -t1 -c50` (A B A B ...), medians of the
rounds. For changes on the request path, where the whole peer suite is too coarse to tell.

    python bench/ab.py --a /tmp/old/bin/meshctl --b .venv/bin/meshctl --rounds 5 --seconds 5

`--b-features` gives B's proxy the resilience features configured but not firing (retries on
5xx and resets with a per-try timeout, rate limits far above the load, circuit breakers,
outlier detection, an HTTP health check, a 0 % fault): with the same executable for A and B,
what configuring them costs.

`--b-tracing PERCENT` gives B a telemetry section that samples PERCENT of requests and exports
their spans (OTLP/HTTP) to a sink on 127.0.0.1 (another `meshctl backend`); `--b-access-log`
gives B's listener a JSON access log in a temporary file. With the same executable for A and B:
what tracing and access logs cost.

Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {deadline} s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 10 ms


def wrk(port: int, seconds: int) -> tuple[float, float]:
    """Requests per second and p99 in ms of one wrk run."""
    out = subprocess.run(
        ["wrk", "-t1", "-c50", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return rps, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def with_features(config: dict) -> None:
    """Resilience configured on every part of the hop, none of it firing under the benchmark."""
    listener, cluster = config["listeners"][0], config["clusters"][0]
    unlimited = {"total": {"rps": 10_000_000, "burst": 10_000_000}}
    listener["rate_limit"] = unlimited
    listener["routes"][0].update(
        {
            "timeout_ms": 10_000,
            "retry": {"attempts": 2, "retry_on": ["reset", "gateway-error", "5xx"], "per_try_timeout_ms": 5_000},
            "rate_limit": unlimited,
            "fault": {"abort": {"percent": 0, "http_status": 503}, "delay": {"percent": 0, "fixed_ms": 1}},
        }
    )
    cluster.update(
        {
            "circuit_breakers": {"max_requests": 100_000, "max_connections": 100_000, "max_retries": 100},
            "outlier_detection": {"consecutive_5xx": 3, "consecutive_gateway_errors": 3},
            "health_check": {"type": "http", "path": "/", "interval_ms": 1000},
            "retry_budget": {"percent": 20},
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="meshctl executable of build A")
    ap.add_argument("--b", required=True, help="meshctl executable of build B")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--b-features", action="store_true", help="B's proxy has the resilience features on")
    ap.add_argument("--b-tracing", type=float, metavar="PERCENT", help="B samples and exports PERCENT of requests")
    ap.add_argument("--b-access-log", action="store_true", help="B writes a JSON access log")
    args = ap.parse_args()

    backend_port = free_port()
    # The proxies stop (stack) before their config files go (tmp).
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        backend = subprocess.Popen([args.b, "backend", "--http", f"127.0.0.1:{backend_port}"])
        stack.callback(backend.wait, 10)
        stack.callback(backend.terminate)
        wait_listening(backend_port)
        sink_port = free_port()
        if args.b_tracing is not None:
            sink = subprocess.Popen([args.b, "backend", "--http", f"127.0.0.1:{sink_port}"])
            stack.callback(sink.wait, 10)
            stack.callback(sink.terminate)
            wait_listening(sink_port)
        proxies = {}
        for name, exe in (("A", args.a), ("B", args.b)):
            port = free_port()
            config = {
                "listeners": [
                    {"name": "web", "address": f"127.0.0.1:{port}", "routes": [{"backends": [{"cluster": "b"}]}]}
                ],
                "clusters": [{"name": "b", "endpoints": [{"address": f"127.0.0.1:{backend_port}"}]}],
            }
            if name == "B" and args.b_features:
                with_features(config)
            if name == "B" and args.b_tracing is not None:
                collector = f"http://127.0.0.1:{sink_port}/v1/traces"
                config["telemetry"] = {
                    "service": "bench",
                    "namespace": "default",
                    "tracing": {"sample_percent": args.b_tracing, "collector": collector},
                }
            if name == "B" and args.b_access_log:
                config["listeners"][0]["access_log"] = {"path": str(Path(tmp) / "access.log")}
            path = Path(tmp) / f"{name}.json"
            path.write_text(json.dumps(config))
            proc = subprocess.Popen([exe, "proxy", "--config", str(path), "--workers", "1"])
            stack.callback(proc.wait, 10)
            stack.callback(proc.terminate)
            wait_listening(port)
            proxies[name] = (port, proc)
        results: dict[str, dict[str, list[float]]] = {
            n: {"rps": [], "p99_ms": [], "cpu_s_per_100k": []} for n in proxies
        }
        for r in range(args.rounds):
            for name, (port, proc) in proxies.items():
                before = cpu_seconds(proc.pid)
                rps, p99 = wrk(port, args.seconds)
                cpu = cpu_seconds(proc.pid) - before
                results[name]["rps"].append(rps)
                results[name]["p99_ms"].append(p99)
                results[name]["cpu_s_per_100k"].append(cpu / (rps * args.seconds) * 100_000)
                print(f"round {r + 1}/{args.rounds} {name}: {rps:.0f} rps, p99 {p99:.3f} ms", flush=True)
    print("\n| build | rps | p99 ms | proxy CPU s / 100k req |\n|---|---:|---:|---:|")
    for name, exe in (("A", args.a), ("B", args.b)):
        m = {k: statistics.median(v) for k, v in results[name].items()}
        print(f"| {name} ({exe}) | {m['rps']:.0f} | {m['p99_ms']:.3f} | {m['cpu_s_per_100k']:.2f} |")
    ratio = statistics.median(results["B"]["rps"]) / statistics.median(results["A"]["rps"])
    print(f"\nB/A rps: {ratio:.3f}")


if __name__ == "__main__":
    main()
