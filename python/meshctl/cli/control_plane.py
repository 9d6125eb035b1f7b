"""``meshctl control-plane``: serve the API (FastAPI under uvicorn)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from meshctl.cli import logs


class AuthzDefault(StrEnum):
    allow = "allow"
    deny = "deny"


def control_plane(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the database, CA and tokens live (MESHCTL_DATA_DIR).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Any SQLAlchemy URL (default: SQLite in the data dir).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 15010,
    trust_domain: Annotated[
        str | None, typer.Option(help="SPIFFE trust domain of the identities it issues (default cluster.local).")
    ] = None,
    authz_default: Annotated[
        AuthzDefault | None,
        typer.Option(
            help="What sidecars do with a request no AuthorizationPolicy decides (default allow;"
            " MESHCTL_AUTHZ_DEFAULT)."
        ),
    ] = None,
    trace_retention: Annotated[
        str | None,
        typer.Option(
            help="How long the trace store keeps a trace after it ended, e.g. 24h, 90m (default 24h; at least 1m).",
            show_default=False,
        ),
    ] = None,
    trace_max_spans: Annotated[
        int | None,
        typer.Option(help="The most spans the trace store keeps; the oldest traces go (default 100000).", min=1),
    ] = None,
) -> None:
    """Serve the control-plane API; migrations run and tokens are made on start."""
    import uvicorn

    from meshctl.control.app import create_app
    from meshctl.control.settings import Settings

    logs.setup()
    overrides: dict[str, Any] = {
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "database_url": database_url,
        "trust_domain": trust_domain,
        "authz_default": authz_default.value if authz_default else None,
        "trace_retention_seconds": _seconds("--trace-retention", trace_retention),
        "trace_max_spans": trace_max_spans,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    _check_ca(settings.data_dir / "ca", settings.trust_domain)
    app = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Watches and taps are open-ended: end them, or the graceful shutdown would wait on them forever.
            hub = getattr(app.state, "hub", None)
            if hub is not None:
                hub.stop_watches()
            taps = getattr(app.state, "taps", None)
            if taps is not None:
                taps.stop()
            dumps = getattr(app.state, "dumps", None)  # operators waiting for a sidecar's config
            if dumps is not None:
                dumps.stop()
            super().handle_exit(sig, frame)

    Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None)).run()


def _check_ca(directory: Path, trust_domain: str) -> None:
    """The CA's files, checked (and made on first start) before serving: an unusable import is
    one clear line and exit 1, not a traceback from the server's startup."""
    from meshctl.control.ca import CaError, CertificateAuthority

    try:
        CertificateAuthority.load_or_create(directory, trust_domain)
    except CaError as e:
        typer.echo(f"{typer.style('error:', fg='red', bold=True)} the CA in {directory} cannot be used: {e}", err=True)
        raise typer.Exit(1) from None


def _seconds(flag: str, duration: str | None) -> int | None:
    """Whole seconds in a duration flag (None when not given); a bad one is a usage error."""
    from meshctl.control.kinds.durations import parse_duration

    if duration is None:
        return None
    try:
        seconds = parse_duration(duration) // 1000
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=flag) from None
    if seconds < 60:
        raise typer.BadParameter(f"{duration!r} is shorter than 1m", param_hint=flag)
    return seconds
