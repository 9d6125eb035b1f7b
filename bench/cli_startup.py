"""How fast `meshctl` answers (issue 13, item 14b: every verb's `--help` and
`meshctl --version` within 150 ms of wall time, kubectl-like).

    python bench/cli_startup.py           # every verb, median of 5, table on stdout, JSON in bench/results
    python bench/cli_startup.py --smoke   # three verbs, 2 runs each, nothing written

Wall time is what a user waits for; CPU time (user + system) is printed beside
it because it barely moves when the machine is busy with other work, while wall
time does. The load average at the start is printed with the table: read the
wall column against it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_MS = 150
MESHCTL = str(Path(sys.executable).with_name("meshctl"))


def verbs() -> list[list[str]]:
    """Every verb, groups' sub-verbs included."""
    listing = (
        "import typer.main\nfrom meshctl.cli.app import app\n"
        "root = typer.main.get_command(app)\nctx = root.make_context('meshctl', [], resilient_parsing=True)\n"
        "def walk(cmd, path):\n"
        "    if hasattr(cmd, 'list_commands'):\n"
        "        for n in cmd.list_commands(ctx): walk(cmd.get_command(ctx, n), [*path, n])\n"
        "    else: print(' '.join(path))\n"
        "walk(root, [])\n"
    )
    out = subprocess.run([sys.executable, "-c", listing], capture_output=True, text=True, check=True)
    return [line.split() for line in out.stdout.splitlines()]


def measure(args: list[str], runs: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of `meshctl ARGS`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
    walls, cpus = [], []
    subprocess.run([MESHCTL, *args], capture_output=True, env=env)  # warm the page cache
    for _ in range(runs):
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run([MESHCTL, *args], capture_output=True, env=env, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="Three verbs, two runs each; write nothing.")
    args = parser.parse_args()
    cases = [["--version"], ["--help"]] + [[*v, "--help"] for v in verbs()]
    if args.smoke:
        cases = cases[:3]
    load = os.getloadavg()[0]
    rows = []
    print(f"load average {load:.2f} on {os.cpu_count()} CPUs; target {TARGET_MS} ms wall")
    print(f"{'command':<40} {'wall ms':>8} {'cpu ms':>8}")
    for case in cases:
        wall, cpu = measure(case, 2 if args.smoke else 5)
        rows.append({"command": " ".join(case), "wall_ms": round(wall, 1), "cpu_ms": round(cpu, 1)})
        mark = "" if wall <= TARGET_MS else "  over"
        print(f"{'meshctl ' + ' '.join(case):<40} {wall:8.1f} {cpu:8.1f}{mark}")
    if not args.smoke:
        out = Path(__file__).parent / "results" / "cli_startup.json"
        out.write_text(json.dumps({"load_average": load, "target_ms": TARGET_MS, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
