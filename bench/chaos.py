"""The chaos table (issue 14, item 7): the mesh of bench/meshrun.py (a control
plane process on SQLite, sidecar processes over mTLS, `meshctl backend`
apps) under open-loop load through the client's sidecar while something goes
wrong. Every case counts failed requests out of all sent; the goal is 0.

    python bench/chaos.py                    # the recorded run: the control plane down 10 minutes
    python bench/chaos.py --cp-down 20 --reload-seconds 10 --out /tmp/x   # what the test runs
    python bench/chaos.py --readme           # ... and the table into bench/README.md

Cases, one after the other on one mesh, each with its own load:

reload
    Data-plane reloads every `--reload-every` (0.5) s for `--reload-seconds`:
    each tick flips api's route weights through the API (a new snapshot the
    client's data plane applies, as tests/dataplane/test_update.py does
    in-process with `DataPlane.update()`) and sends SIGHUP to every sidecar
    (which re-applies its running config: `MeshSidecar.reload`). The reloads
    each data plane applied are counted from its /stats.
drain
    A rolling restart: SIGTERM to the sidecar of one api instance, which
    deregisters and drains (in-flight requests finish, up to its grace, the
    default 10 s), is started again and serves, then the same for the other
    instance. api's route sends to every instance alike for this case (a
    subset whose only instance is away has nothing to serve it: no mesh can
    keep that at 0). This is what a production mesh must do with 0 failures:
    an instance leaving while another serves costs no request (the caller's
    sidecar stops picking it when the control plane says so, and retries a
    request refused by a closing connection). Draining the client's own
    sidecar is not a case: its app's requests have no other way out.
cp-down
    The control plane stopped (SIGTERM) for `--cp-down` seconds (default 600)
    while the load goes on: the sidecars serve from what they have. Then it is
    started again on the same database, and the case waits until every
    sidecar is live and in sync and a route change reaches the client. The
    success rate before, during and after the outage is reported: it must not
    change (1.0 throughout).
cp-kill
    kill -9 of the control plane in the middle of a push, `--kills` times:
    a route change is sent and the process killed 20 to 150 milliseconds
    later (the apply committing, the snapshot being compiled or
    streamed), then started again. After each restart the sidecars must
    converge: every sidecar live and in sync, and the client running the
    weights the database holds (the change either happened or not, nothing
    in between).

Exit 1 when a case fails (failed requests, or a step that did not happen:
no reloads counted, a drained sidecar that did not exit 0, no convergence).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from meshrun import Mesh, api_split, load, run_info, running_mesh, wait_for  # noqa: E402
from suite import write_readme_table  # noqa: E402

#: Seconds of load before and after each disturbance.
SETTLE = 3.0


def applied(mesh: Mesh) -> dict[str, int]:
    """Config updates each sidecar's data plane has applied so far."""
    return {name: int(s.stats()["config"]["applied"]) for name, s in mesh.sidecars.items()}


def client_weights(mesh: Mesh) -> list[int]:
    """The weights the client's data plane runs for api (v1, v2)."""
    cfg = httpx.get(f"http://127.0.0.1:{mesh.client.admin_port}/config", timeout=5).json()
    listener = next(x for x in cfg["listeners"] if x["name"] == "outbound/default/api")
    return [int(b.get("weight", 1)) for b in listener["routes"][0]["backends"]]


def stored_weights(mesh: Mesh) -> list[int]:
    """The weights of api-split as the control plane's database has them."""
    route = mesh.cp.call("GET", "/api/v1/httproutes/default/api-split")
    return [int(b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]]


def convergence(mesh: Mesh) -> dict[str, Any]:
    """What convergence is judged on: every sidecar live and in sync (ACKed the current generation),
    and the client's data plane running the weights the database holds."""
    status = mesh.cp.call("GET", "/api/v1/mesh", timeout=5)
    return {
        "live_sidecars": status["live_sidecars"],
        "in_sync": status["in_sync"],
        "client_weights": client_weights(mesh),
        "stored_weights": stored_weights(mesh),
    }


def converged(state: dict[str, Any], sidecars: int) -> bool:
    return bool(
        state["live_sidecars"] == state["in_sync"] == sidecars and state["client_weights"] == state["stored_weights"]
    )


def set_route(mesh: Mesh, v2_weight: int | None) -> None:
    """api-split as given, waited for at the client's data plane."""
    before = mesh.config_version()
    mesh.cp.apply(api_split(v2_weight))
    if v2_weight is not None:
        mesh.v2_weight = v2_weight
    wait_for(lambda: mesh.config_version() > before, 30, "the route at the client")


def case_reload(mesh: Mesh, args: argparse.Namespace) -> dict[str, Any]:
    with load(mesh, args.rps, 3600).start() as traffic:
        time.sleep(SETTLE)
        before = applied(mesh)
        ticks = 0
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < args.reload_seconds:
            mesh.change_route()
            for s in mesh.sidecars.values():
                s.signal(signal.SIGHUP)
            ticks += 1
            time.sleep(max(0.0, ticks * args.reload_every - (time.monotonic() - start)))
        time.sleep(SETTLE)
        after = applied(mesh)
        result = traffic.stop()
        reloads = {name: after[name] - before[name] for name in after}
        # Every tick's SIGHUP reaches every sidecar; the client applies the route changes besides.
        steps_ok = all(n >= ticks * 0.9 for n in reloads.values()) and reloads["client"] >= ticks * 1.5
    return {
        "load": result,
        "ticks": ticks,
        "seconds": round(elapsed, 1),
        "reloads_applied": reloads,
        "steps_ok": steps_ok,
        "detail": f"{ticks} ticks in {elapsed:.0f} s; reloads applied: "
        + ", ".join(f"{k} {v}" for k, v in reloads.items()),
    }


def case_drain(mesh: Mesh, args: argparse.Namespace) -> dict[str, Any]:
    set_route(mesh, None)
    with load(mesh, args.rps, 3600).start() as traffic:
        time.sleep(SETTLE)
        drains = []
        for name in ("api-v2", "api-v1"):
            sidecar = mesh.sidecars[name]
            t0 = time.monotonic()
            sidecar.signal(signal.SIGTERM)
            code = sidecar.wait(60)
            drained = time.monotonic() - t0
            sidecar.start()
            # Back in the client's balancing: it answers there again.
            endpoint = f"127.0.0.1:{sidecar.inbound_port}"

            def served(endpoint: str = endpoint) -> int:
                cluster = mesh.client.stats()["clusters"]["out/default/api"]
                return int(cluster["endpoints"].get(endpoint, {}).get("requests", 0))

            seen = served()
            wait_for(lambda e=endpoint, s=seen: served(e) > s + 20, 60, f"{name} serving again")
            drains.append(
                {
                    "sidecar": name,
                    "exit": code,
                    "drain_s": round(drained, 2),
                    "back_after_s": round(time.monotonic() - t0, 2),
                }
            )
            time.sleep(SETTLE)
        result = traffic.stop()
        set_route(mesh, mesh.v2_weight)
    return {
        "load": result,
        "drains": drains,
        "steps_ok": all(d["exit"] == 0 for d in drains),
        "detail": "; ".join(
            f"{d['sidecar']}: exit {d['exit']} after {d['drain_s']} s,"
            f" serving again {d['back_after_s']} s after SIGTERM"
            for d in drains
        ),
    }


def restart_and_converge(mesh: Mesh, timeout: float = 120) -> float:
    """Start the control plane again; seconds until the mesh converged."""
    t0 = time.monotonic()
    mesh.cp.start()
    last: dict[str, Any] = {}

    def done() -> bool:
        last.update(convergence(mesh))
        return converged(last, len(mesh.sidecars))

    try:
        wait_for(done, timeout, "the sidecars to converge")
    except RuntimeError as e:
        raise RuntimeError(f"{e} (last seen: {last})") from None
    return time.monotonic() - t0


def case_cp_down(mesh: Mesh, args: argparse.Namespace) -> dict[str, Any]:
    with load(mesh, args.rps, 3600).start() as traffic:
        time.sleep(max(SETTLE, min(30.0, args.cp_down / 10)))
        down_at = traffic.elapsed()
        mesh.cp.stop()
        time.sleep(args.cp_down)
        up_at = traffic.elapsed()
        converge_s = restart_and_converge(mesh)
        # A route change made after the outage reaches the client.
        set_route(mesh, 100 - mesh.v2_weight)
        time.sleep(max(SETTLE, min(30.0, args.cp_down / 10)))
        end = traffic.elapsed()
        result = traffic.stop()
        windows = {
            "before": traffic.window(0, down_at),
            "during": traffic.window(down_at, up_at),
            "after": traffic.window(up_at, end),
        }
    return {
        "load": result,
        "down_s": round(up_at - down_at, 1),
        "converged_after_s": round(converge_s, 1),
        "windows": windows,
        "steps_ok": all(w["total"] > 0 for w in windows.values()),
        "detail": f"down {up_at - down_at:.0f} s, converged {converge_s:.1f} s after the restart; success rate "
        + ", ".join(f"{k} {w['success_rate']}" for k, w in windows.items()),
    }


def case_cp_kill(mesh: Mesh, args: argparse.Namespace) -> dict[str, Any]:
    with load(mesh, args.rps, 3600).start() as traffic:
        time.sleep(SETTLE)
        kills = []
        for i in range(args.kills):
            # From a request still being handled (the apply commits in tens of ms here) to a push under way.
            delay = 0.02 + 0.13 * i / max(1, args.kills - 1)
            target = 100 - mesh.v2_weight
            outcome: dict[str, Any] = {}

            def push(target: int = target, outcome: dict[str, Any] = outcome) -> None:
                try:
                    mesh.cp.apply(api_split(target), timeout=10)
                    outcome["apply"] = "answered"
                except httpx.HTTPError as e:
                    outcome["apply"] = type(e).__name__

            pusher = threading.Thread(target=push)
            pusher.start()
            time.sleep(delay)
            mesh.cp.signal(signal.SIGKILL)
            mesh.cp.wait(10)
            pusher.join(15)
            converge_s = restart_and_converge(mesh)
            weights = stored_weights(mesh)
            mesh.v2_weight = weights[1]
            kills.append(
                {
                    "kill_after_ms": round(delay * 1000),
                    "apply": outcome.get("apply"),
                    "change_kept": weights[1] == target,
                    "converged_after_s": round(converge_s, 1),
                }
            )
            time.sleep(SETTLE)
        result = traffic.stop()
    return {
        "load": result,
        "kills": kills,
        "steps_ok": True,  # convergence is waited for (a timeout fails the case)
        "detail": "; ".join(
            f"killed {k['kill_after_ms']} ms into the apply ({k['apply']},"
            f" change {'kept' if k['change_kept'] else 'lost'}),"
            f" converged {k['converged_after_s']} s after the restart"
            for k in kills
        ),
    }


CASES = {"reload": case_reload, "drain": case_drain, "cp-down": case_cp_down, "cp-kill": case_cp_kill}
TITLES = {
    "reload": "data-plane reload every {reload_every} s under load",
    "drain": "SIGTERM drain of an upstream instance's sidecar (both, in turn)",
    "cp-down": "control plane down {cp_down:g} s",
    "cp-kill": "control plane kill -9 mid-push ({kills} times)",
}


def run_case(name: str, mesh: Mesh, args: argparse.Namespace) -> dict[str, Any]:
    print(f"chaos: {name} ...", flush=True)
    t0 = time.monotonic()
    try:
        out = CASES[name](mesh, args)
    except RuntimeError as e:  # a step that never happened (a wait timed out, a process died)
        out = {"load": {"total": 0, "failed": 0}, "steps_ok": False, "detail": f"error: {e}"}
    out["case"] = name
    out["title"] = TITLES[name].format(**vars(args))
    out["ok"] = out["steps_ok"] and out["load"]["failed"] == 0 and out["load"]["total"] > 0
    out["seconds"] = round(time.monotonic() - t0, 1)
    print(f"chaos: {name}: {out['load']['failed']} failed of {out['load']['total']}; {out['detail']}", flush=True)
    return out


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Run {r['date']} on {r['machine']}, commit {r['commit']} (1-minute load average {r['load_average']:.2f}"
        f" at the start); {r['plan']['rps']:g} rps open loop (api 80 %, catalog 20 %) through the client's sidecar.",
        "",
        "| case | failed / requests | goal | met | what happened |",
        "|---|---:|---:|:---:|---|",
    ]
    for c in r["cases"]:
        ld = c["load"]
        lines.append(
            f"| {c['title']} | {ld['failed']} / {ld['total']:,} | 0 | {'yes' if c['ok'] else 'no'} | {c['detail']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rps", type=float, default=250.0, help="open-loop rate through the client's sidecar")
    ap.add_argument("--reload-every", type=float, default=0.5, help="seconds between reloads")
    ap.add_argument("--reload-seconds", type=float, default=60.0, help="how long the reload case runs")
    ap.add_argument("--cp-down", type=float, default=600.0, help="seconds the control plane stays down")
    ap.add_argument("--kills", type=int, default=5, help="kill -9s of the control plane mid-push")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="where chaos.json goes")
    ap.add_argument("--readme", action="store_true", help="write the table into bench/README.md")
    ap.add_argument("--work", type=Path, help="keep the mesh's logs and data here (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
    names = [c for c in args.cases.split(",") if c]
    if unknown := set(names) - set(CASES):
        ap.error(f"unknown cases: {', '.join(sorted(unknown))}")
    info = run_info()
    with (
        contextlib.nullcontext(str(args.work))
        if args.work
        else tempfile.TemporaryDirectory(prefix="meshctl-chaos-") as tmp
    ):
        try:
            with running_mesh(Path(tmp)) as mesh:
                cases = [run_case(name, mesh, args) for name in names]
        except RuntimeError as e:
            logs = sorted(Path(tmp).glob("*.log"))
            print(f"chaos: {e}", *(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs), sep="\n")
            return 2
        if not all(c["ok"] for c in cases):  # the logs say why: keep their tails
            for p in sorted(Path(tmp).glob("*.log")):
                print(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}")
    plan = {k: v for k, v in vars(args).items() if k not in ("out", "readme", "work")}
    result = {**info, "plan": plan, "cases": cases}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chaos.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    print(table)
    if args.readme:
        write_readme_table(table, "chaos")
    return 0 if all(c["ok"] for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
