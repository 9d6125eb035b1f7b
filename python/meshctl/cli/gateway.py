"""``meshctl gateway``: the data plane as the mesh's ingress gateway. It joins
as the Service named like its Gateway, serves that Gateway's listeners
(HTTPS with the operator's certificates from --cert-dir, chosen by SNI) and
routes their HTTPRoutes into the mesh over mTLS. Like ``meshctl proxy
--control-plane`` it registers, gets its SVID, follows the snapshot stream,
ACKs or NACKs, caches the last good snapshot and deregisters on exit.

Parsed with argparse, not typer, and routed before the CLI stack loads (see
``meshctl.cli.main``): the gateway is a long-running data-plane process.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from meshctl.cli import helptext, logs
from meshctl.cli.proxy import URLS_HELP, ControlPlaneUrls, add_member_arguments, check_trust_arguments, member_options
from meshctl.sidecar.telemetry import access_log_option, add_access_log_arguments

HELP = (
    "Run the mesh's ingress gateway for a Gateway resource: its HTTPS/HTTP listeners, certificates from "
    "--cert-dir selected by SNI, its HTTPRoutes, mTLS into the mesh. SIGINT/SIGTERM drain and exit; "
    "SIGHUP re-reads the certificate files and reopens the access-log files."
)


def parser() -> argparse.ArgumentParser:
    p = helptext.argparse_parser("meshctl gateway", HELP)
    p.add_argument(
        "--control-plane",
        "--server",
        metavar="URL",
        action=ControlPlaneUrls,
        required=True,
        help="The control plane to follow" + URLS_HELP,
    )
    p.add_argument("--name", required=True, help="The Gateway (and the Service its instances join as).")
    p.add_argument("--namespace", default="default", help="The Gateway's namespace.")
    p.add_argument(
        "--cert-dir",
        type=Path,
        required=True,
        help="Where the certificates named by the Gateway's certificateRefs are: <name>.pem (chain, leaf first) "
        "and <name>.key (0600). Keys never leave this host.",
    )
    p.add_argument(
        "--address", default="0.0.0.0", help="Address the Gateway's listeners bind (0.0.0.0: every interface)."
    )
    add_member_arguments(p)
    add_access_log_arguments(p)
    p.add_argument("--workers", type=int, default=0, help="Worker threads (0: one per CPU).")
    p.add_argument("--grace", type=float, default=10.0, help="Seconds to drain in-flight work on SIGINT/SIGTERM.")
    return p


def main(argv: list[str]) -> int:
    """Run until signalled; the exit code (0 after a clean drain, 2 for a refusal or a bad setup)."""
    p = parser()
    args = p.parse_args(argv)
    access_log = access_log_option(p, args)
    log = logs.setup()
    if not args.cert_dir.is_dir():
        log.error("--cert-dir %s is not a directory", args.cert_dir)
        return 2
    check_trust_arguments(p, args, log)
    # Imported here, as for `meshctl proxy`: the HTTP client and the sidecar only when running.
    from meshctl.client import ApiError, TrustError
    from meshctl.sidecar.mesh import MeshSidecar, SidecarOptions, StartRefused

    gateway = MeshSidecar(
        SidecarOptions(
            **member_options(args),
            service=args.name,
            app_port=0,
            inbound_port=0,
            address=args.address,
            gateway=True,
            cert_dir=args.cert_dir.resolve(),
            access_log=access_log,
        )
    )
    gateway.reload_on_sighup()
    try:
        gateway.start()
    except ApiError as e:
        log.error("the control plane refused this gateway: %s", e)
        return 2
    except TrustError as e:
        log.error("not trusting the control plane: %s", e)
        gateway.shutdown()
        return 2
    except StartRefused as e:
        log.error("not starting: %s", e)
        gateway.shutdown()
        return 2
    gateway.run_until_signalled()
    return 0
