"""``meshctl run``: run an app behind its sidecar, the sidecar first (see
``meshctl.sidecar.run`` for what it guarantees).

Parsed with argparse, not typer, as ``proxy`` is: ``run`` stays running next
to every app, so it should cost little. Options of ``meshctl proxy`` that
``run`` does not know (``--zone``, ``--ttl``, ``--access-log``, ``--ca-hash``,
health-check flags...) are passed to the sidecar as they are: the sidecar
refuses the ones it does not know either, before the app starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from meshctl.cli import helptext, logs
from meshctl.cli.iptables import add_interception_arguments, interception
from meshctl.cli.proxy import URLS_HELP, ControlPlaneUrls, _pair, _upstream

if TYPE_CHECKING:
    from meshctl.sidecar.run import RunSpec

HELP = """Run an app (COMMAND, after --) behind its sidecar. The sidecar starts first; the app starts once
the sidecar is ready (its SVID held, its first snapshot applied, its listeners bound), with its upstreams in
the environment (MESHCTL_UPSTREAM_<NAME>=http://127.0.0.1:PORT, tcp:// for a tcp service), HTTP_PROXY
for calls by Host, and MESHCTL_SERVICE.

SIGINT and SIGTERM are passed to the app (a second SIGINT kills it). When the app exits the sidecar drains
and stops, and run exits with the app's code (128+N when signal N killed it), so a batch job finishes. A
sidecar that dies is restarted with back-off (0.5 s to 30 s) while the app keeps running. A sidecar that
exits before it is ready: run exits with its code and the app never starts.

Options of `meshctl proxy` not listed here (--zone, --ttl, --access-log, --ca-hash...) are passed to the
sidecar."""


class _Parser(helptext.ArgumentParser):
    def format_usage(self) -> str:
        return super().format_usage().rstrip("\n") + " -- COMMAND...\n"


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="meshctl run", description=HELP, add_help=False, allow_abbrev=False)
    p.add_argument("--help", "-h", action="help", help="Show this message and exit.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--control-plane",
        "--server",
        metavar="URL",
        action=ControlPlaneUrls,
        help="Join the mesh of this control plane" + URLS_HELP,
    )
    source.add_argument(
        "--config", "-c", type=Path, metavar="FILE", help="Run the sidecar from this data-plane config file instead."
    )
    p.add_argument("--service", help="The service the app is an instance of (required with --control-plane).")
    p.add_argument("--namespace", default="default", help="The service's namespace.")
    p.add_argument(
        "--app-port", type=int, metavar="PORT", help="The local port the app listens on (with --control-plane)."
    )
    p.add_argument(
        "--upstream",
        type=_upstream,
        action="append",
        default=[],
        metavar="SERVICE=PORT",
        help="A local port for calls to SERVICE (or NAMESPACE/SERVICE), given to the app as"
        " MESHCTL_UPSTREAM_<SERVICE>; repeatable.",
    )
    p.add_argument("--address", default="127.0.0.1", help="Address other sidecars reach this one at.")
    p.add_argument("--inbound-port", type=int, default=15006, metavar="PORT", help="Port of the inbound listener.")
    p.add_argument(
        "--http-proxy-port",
        type=int,
        default=15080,
        metavar="PORT",
        help="Port routing to any mesh service by Host (HTTP_PROXY); 0: none.",
    )
    p.add_argument(
        "--admin-port", type=int, metavar="PORT", help="The sidecar's loopback port for /ready, /stats and /config."
    )
    p.add_argument(
        "--label", type=_pair, action="append", default=[], metavar="KEY=VALUE", help="Endpoint label; repeatable."
    )
    p.add_argument(
        "--token-file", type=Path, metavar="FILE", help="File holding the service's join token (else $MESHCTL_TOKEN)."
    )
    p.add_argument(
        "--cache-dir", type=Path, metavar="DIR", help="Where the sidecar keeps its last good snapshot and its SVID."
    )
    p.add_argument(
        "--grace", type=float, default=10.0, metavar="SECONDS", help="How long the sidecar drains when the app exits."
    )
    p.add_argument(
        "--ready-timeout", type=float, default=60.0, metavar="SECONDS", help="How long the sidecar has to get ready."
    )
    t = p.add_argument_group("transparent interception (root; see `meshctl iptables`)")
    t.add_argument(
        "--transparent",
        action="store_true",
        help="Redirect the app's TCP (and DNS) through the sidecar with iptables rules, removed when run exits.",
    )
    add_interception_arguments(t)
    from meshctl.sidecar.health import add_health_arguments  # (the standard library only)

    add_health_arguments(p.add_argument_group("app health (the sidecar probes the app; see `meshctl proxy`)"))
    return p


def split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """(run's own arguments, the app's command): the command is everything after the first `--`."""
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]


def main(argv: list[str]) -> int:
    """Run the app behind its sidecar; the app's exit code (2: bad usage)."""
    p = parser()
    own, command = split_command(argv)
    args, passed = p.parse_known_args(own)
    if not command:
        p.error("give the app's command after --, e.g. meshctl run --service web --app-port 8080 ... -- python app.py")
    if "--ready-fd" in passed or any(a.startswith("--ready-fd=") for a in passed):
        p.error("--ready-fd is run's own to give")
    if args.control_plane and (not args.service or not args.app_port):
        p.error("--control-plane needs --service and --app-port")
    log = logs.setup()
    try:
        spec = _spec(args, command, passed)
    except ValueError as e:
        p.error(str(e))
    except OSError as e:
        log.error("%s", e)
        return 1
    from meshctl.sidecar.run import run

    return run(spec)


def _sidecar_args(args: argparse.Namespace, passed: list[str]) -> list[str]:
    """`meshctl proxy`'s arguments for this run (the token file: see _transparent)."""
    out = ["--grace", str(args.grace)]
    if args.config is not None:
        return ["--config", str(args.config), *out, *passed]
    urls = ",".join(args.control_plane)  # (one value: the sidecar takes a comma-separated list)
    out = ["--control-plane", urls, *out, "--service", args.service, "--namespace", args.namespace]
    out += ["--app-port", str(args.app_port), "--address", args.address, "--inbound-port", str(args.inbound_port)]
    if args.http_proxy_port:
        out += ["--http-proxy-port", str(args.http_proxy_port)]
    out += [a for name, port in args.upstream for a in ("--upstream", f"{name}={port}")]
    out += [a for k, v in args.label for a in ("--label", f"{k}={v}")]
    for flag, value in (("--admin-port", args.admin_port), ("--cache-dir", args.cache_dir)):
        if value is not None:
            out += [flag, str(value)]
    if args.token_file is not None and not args.transparent:
        out += ["--token-file", str(args.token_file)]
    if args.transparent:
        out += ["--transparent-port", str(args.outbound_port)]
        out += [] if args.no_dns else ["--dns-port", str(args.dns_port)]
    from meshctl.sidecar.health import health_options

    if (probe := health_options(args)) is not None:  # (ValueError: a usage error)
        out += probe.argv()
    return out + passed


def _spec(args: argparse.Namespace, command: list[str], passed: list[str]) -> RunSpec:
    from meshctl.sidecar.run import RunSpec

    spec = RunSpec(
        command=command,
        sidecar_args=[],
        namespace=args.namespace,
        service=args.service,
        upstreams=dict(args.upstream),
        grace=args.grace,
        ready_timeout=args.ready_timeout,
    )
    if args.transparent:
        _transparent(args, spec)
    spec.sidecar_args = _sidecar_args(args, passed)
    return spec


def _transparent(args: argparse.Namespace, spec: RunSpec) -> None:
    """Transparent mode: the rules to install, and a sidecar that runs as --proxy-uid/--proxy-gid
    (their traffic is what the rules let pass), with a cache dir it owns and its join token in its
    environment (it may not read root's token file). ValueError: bad usage; OSError: the host."""
    if os.geteuid() != 0:
        raise ValueError("--transparent needs root (it installs iptables rules and runs the sidecar as --proxy-uid)")
    # --proxy-uid 0 is allowed with a --proxy-gid of its own: the sidecar's traffic passes by group.
    spec.interception = interception(args, inbound_port=args.inbound_port)
    spec.sidecar_user = (args.proxy_uid, args.proxy_gid)
    if args.control_plane:
        token = args.token_file.read_text().strip() if args.token_file else os.environ.get("MESHCTL_TOKEN")
        if token:
            spec.sidecar_env["MESHCTL_TOKEN"] = token
        if args.cache_dir is None:  # root's ~/.meshctl is not the proxy user's to write
            args.cache_dir = Path("/var/lib/meshctl/run")
        _own(args.cache_dir, args.proxy_uid, args.proxy_gid)


def _own(path: Path, uid: int, gid: int) -> None:
    """Create `path` (0700) and give it and everything in it to uid:gid."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
