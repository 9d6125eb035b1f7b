"""``meshctl proxy``: run the data plane in the foreground, configured from
a file (``--config``) or by the control plane (``--control-plane``).

Parsed with argparse, not typer: this is the sidecar's process and it stays
lean (see ``meshctl.cli.main``).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from meshctl import BindError
from meshctl.cli import helptext, logs
from meshctl.sidecar import instance
from meshctl.sidecar.health import add_health_arguments, health_options
from meshctl.sidecar.telemetry import access_log_option, add_access_log_arguments, file_edits, sample_percent

TYPE_CHECKING = False  # (typing's, without importing typing: see meshctl.cli.helptext)
if TYPE_CHECKING:
    from typing import Any

    from meshctl.dataplane_config import AccessLogConfig
    from meshctl.sidecar.mesh import MeshSidecar

HELP = (
    "Run the data plane in the foreground. SIGINT/SIGTERM drain and exit; SIGHUP reloads a --config file (or"
    " re-applies the control plane's config) and reopens the access-log files."
)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _upstream(text: str) -> tuple[str, int]:
    name, port = _pair(text)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected SERVICE=PORT, got {text!r}")
    return name, int(port)


class ControlPlaneUrls(argparse.Action):
    """--control-plane URL[,URL...], repeatable: the URLs in order, each once (a list); a bad one
    is a usage error naming it. Several are replicas of one control plane (see meshctl.client)."""

    def __call__(self, p: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, _opt: Any = None) -> None:
        from meshctl.client import split_urls  # (the standard library only, imported lazily)

        try:
            urls = split_urls([*(getattr(ns, self.dest, None) or []), str(value)])
        except ValueError as e:
            raise argparse.ArgumentError(self, str(e)) from None
        setattr(ns, self.dest, urls)


#: --control-plane's help, said once for proxy, gateway and run.
URLS_HELP = "; several (replicas): comma-separated or repeated, the next tried at once when one does not answer."


def parser() -> argparse.ArgumentParser:
    p = helptext.argparse_parser("meshctl proxy", HELP)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", "-c", type=Path, help="Data-plane config (YAML or JSON).")
    source.add_argument(
        "--control-plane",
        "--server",
        metavar="URL",
        action=ControlPlaneUrls,
        help="Follow this control plane as a sidecar" + URLS_HELP,
    )
    p.add_argument("--workers", type=int, default=0, help="Worker threads (0: one per CPU).")
    p.add_argument("--grace", type=float, default=10.0, help="Seconds to drain in-flight work on SIGINT/SIGTERM.")
    p.add_argument(
        "--watch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Reload when the --config file changes (SIGHUP always reloads).",
    )
    p.add_argument(
        "--ready-fd",
        type=int,
        metavar="FD",
        help="Write one JSON line on this inherited file descriptor once ready, then close it (`meshctl run`).",
    )
    add_access_log_arguments(p)
    p.add_argument(
        "--trace-sample-percent",
        type=sample_percent,
        metavar="PERCENT",
        help="With --config: sample this share of new traces (0-100), in the file's telemetry section.",
    )
    side = p.add_argument_group("sidecar (with --control-plane)")
    side.add_argument("--service", help="The service this sidecar's app is an instance of.")
    side.add_argument("--namespace", default="default", help="The service's namespace.")
    side.add_argument("--app-port", type=int, help="The local port the app listens on.")
    side.add_argument("--address", default="127.0.0.1", help="Address other sidecars reach this one at.")
    side.add_argument("--inbound-port", type=int, default=15006, help="Port of the inbound listener (on --address).")
    side.add_argument(
        "--upstream",
        type=_upstream,
        action="append",
        default=[],
        metavar="SERVICE=PORT",
        help="A local port for calls to SERVICE (or NAMESPACE/SERVICE); repeatable.",
    )
    side.add_argument("--http-proxy-port", type=int, help="A local port routing to any mesh service by Host.")
    side.add_argument(
        "--label",
        type=_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Endpoint label, e.g. version=v2; repeatable.",
    )
    side.add_argument("--weight", type=int, default=1, help="Its endpoint's share of its service's traffic.")
    # What `meshctl run --transparent` passes: registered, so the control plane compiles them.
    side.add_argument("--transparent-port", type=int, metavar="PORT", help="Port of the transparent outbound listener.")
    side.add_argument("--dns-port", type=int, metavar="PORT", help="Port of the DNS answerer (transparent mode).")
    add_member_arguments(side)
    add_health_arguments(p.add_argument_group("app health (with --control-plane)"))
    return p


def add_member_arguments(group: argparse._ActionsContainer) -> None:
    """The flags of every process that joins the mesh: `meshctl proxy` and `meshctl gateway`."""
    group.add_argument("--admin-port", type=int, help="Loopback port for /ready, /stats and /config.")
    group.add_argument(
        "--zone",
        help="Where this instance runs (e.g. us-east-1a): its endpoint's zone label; its calls stay in the zone"
        " while enough of it is healthy.",
    )
    group.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="File holding the service's join token (`meshctl token create`). Without it: the token in $MESHCTL_TOKEN.",
    )
    add_trust_arguments(group)
    group.add_argument("--cache-dir", type=Path, help="Where the last good snapshot and the SVID are kept.")
    group.add_argument(
        "--instance-id",
        type=instance.check,
        help="This instance's id, unique in its service: the key of its registration. A gateway's is made once"
        " (host name and random digits) and kept in --cache-dir; a sidecar sends none unless given one.",
    )
    group.add_argument("--ttl", type=int, default=15, help="Seconds the registration lives without a heartbeat.")
    group.add_argument(
        "--svid-ttl",
        type=int,
        help="Lifetime in seconds of the SVID to ask for (60 at the least; the control plane's default otherwise).",
    )


def member_options(args: argparse.Namespace) -> dict[str, Any]:
    """The SidecarOptions every mesh member takes from its flags (the join token from
    --token-file, else $MESHCTL_TOKEN)."""
    token = str(args.token_file.read_text().strip()) if args.token_file else os.environ.get("MESHCTL_TOKEN")
    return {
        "control_plane": args.control_plane,
        "namespace": args.namespace,
        "admin_port": args.admin_port,
        "zone": args.zone,
        "token": token,
        "cache_dir": args.cache_dir,
        "ttl_seconds": args.ttl,
        "svid_ttl_seconds": args.svid_ttl,
        "workers": args.workers or None,
        "grace": args.grace,
        "ca_file": args.ca_file,
        "ca_hash": args.ca_hash,
        "instance": args.instance_id,
    }


def add_trust_arguments(group: argparse._ActionsContainer) -> None:
    """How a mesh member trusts the control plane's HTTPS certificate (see meshctl.trust)."""
    group.add_argument(
        "--ca-hash",
        metavar="sha256:HEX",
        help="Trust the control plane whose CA has this pin: the SHA-256 of the CA certificate's DER"
        " SubjectPublicKeyInfo (meshctl token create prints it; like kubeadm's --discovery-token-ca-cert-hash)."
        " Checked before the token is sent; the CA is kept in --cache-dir for restarts.",
    )
    group.add_argument("--ca-file", type=Path, help="Trust the control plane's certificate by this PEM CA bundle.")
    group.add_argument(
        "--insecure",
        action="store_true",
        help="Allow a plain http:// control plane on another host (the token and CSRs travel in clear).",
    )


def check_trust_arguments(p: argparse.ArgumentParser, args: argparse.Namespace, log: logging.Logger) -> None:
    """--ca-hash, --ca-file and --insecure against --control-plane: usage errors, or the warning
    that plain HTTP to another host asks for."""
    from meshctl.trust import parse_pin, plain_http

    if args.ca_hash is not None and args.ca_file is not None:
        p.error("give --ca-hash or --ca-file, not both")
    if args.ca_hash is not None:
        try:
            args.ca_hash = parse_pin(args.ca_hash)
        except ValueError as e:
            p.error(f"--ca-hash: {e}")
    https = any(url.startswith("https://") for url in args.control_plane)
    if not https and (args.ca_hash or args.ca_file):
        p.error("--ca-hash and --ca-file are for an https:// --control-plane")
    for url in args.control_plane:  # (one pin or CA file for every replica: they share a serving CA)
        try:
            warning = plain_http(url, insecure=args.insecure)
        except ValueError as e:
            p.error(f"--control-plane: {e}")
        if warning:
            log.warning("%s", warning)


def main(argv: list[str]) -> int:
    """Run until signalled; the exit code (0 after a clean drain, 1 bind failure, 2 bad config or refusal)."""
    p = parser()
    args = p.parse_args(argv)
    access_log = access_log_option(p, args)
    log = logs.setup()
    if args.control_plane:
        if not args.service or not args.app_port:
            p.error("--control-plane needs --service and --app-port")
        if args.trace_sample_percent is not None:
            p.error("--trace-sample-percent is for --config: the control plane's Telemetry sets sampling")
        check_trust_arguments(p, args, log)
        try:
            args.health = health_options(args)
        except ValueError as e:
            p.error(str(e))
        return _sidecar(args, log, access_log)
    if args.health_http is not None or args.health_tcp:
        p.error("--health-http and --health-tcp are for --control-plane")
    from meshctl.sidecar.file_config import FileConfigProxy

    edit = file_edits(access_log, args.trace_sample_percent)
    try:
        runner = FileConfigProxy(
            args.config, workers=args.workers or None, grace=args.grace, watch=args.watch, edit=edit
        )
    except (OSError, ValueError) as e:  # (a ConfigError is a ValueError)
        log.error("%s", e)
        return 2
    try:
        runner.start()
    except BindError as e:
        log.error("%s", e)
        return 1
    if args.ready_fd is not None:
        from meshctl.sidecar.readiness import announce

        announce(args.ready_fd, runner.dataplane)
    runner.run_until_signalled()
    return 0


def _sidecar(args: argparse.Namespace, log: logging.Logger, access_log: AccessLogConfig | None) -> int:
    # Imported here: the HTTP client pulls in urllib, http.client and ssl (several MB of RSS)
    # that a proxy fed from a file never needs.
    from meshctl.client import ApiError, TrustError
    from meshctl.sidecar.mesh import MeshSidecar, SidecarOptions

    sidecar = MeshSidecar(
        SidecarOptions(
            **member_options(args),
            service=args.service,
            app_port=args.app_port,
            address=args.address,
            inbound_port=args.inbound_port,
            upstreams=dict(args.upstream),
            http_proxy_port=args.http_proxy_port,
            labels=dict(args.label),
            weight=args.weight,
            access_log=access_log,
            health=args.health,
            transparent_port=args.transparent_port,
            dns_port=args.dns_port,
        )
    )
    sidecar.reload_on_sighup()
    try:
        sidecar.start()
    except ApiError as e:
        log.error("the control plane refused this sidecar: %s", e)
        return 2
    except TrustError as e:
        log.error("not trusting the control plane: %s", e)
        return 2
    if args.ready_fd is not None:
        _announce_when_ready(sidecar, args.ready_fd)
    sidecar.run_until_signalled()
    return 0


def _announce_when_ready(sidecar: MeshSidecar, fd: int) -> None:
    """Write the ready line on `fd` once the first snapshot runs (see meshctl.sidecar.readiness)."""
    import threading

    from meshctl.sidecar.readiness import announce

    def wait() -> None:
        sidecar.ready.wait()
        if sidecar.dataplane is not None:
            announce(fd, sidecar.dataplane)

    threading.Thread(target=wait, name="ready-fd", daemon=True).start()
