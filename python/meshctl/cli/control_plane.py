"""``meshctl control-plane``: serve the API (FastAPI under uvicorn)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from meshctl.cli import logs

if TYPE_CHECKING:
    from meshctl.control.ca import CertificateAuthority
    from meshctl.control.settings import Settings


class AuthzDefault(StrEnum):
    allow = "allow"
    deny = "deny"


class OutboundPolicy(StrEnum):
    ALLOW_ANY = "ALLOW_ANY"
    REGISTRY_ONLY = "REGISTRY_ONLY"


def control_plane(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the database, CA and tokens live (MESHCTL_DATA_DIR).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Any SQLAlchemy URL.", show_default="SQLite in the data dir")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 15010,
    trust_domain: Annotated[
        str | None, typer.Option(help="SPIFFE trust domain of the identities it issues.", show_default="cluster.local")
    ] = None,
    authz_default: Annotated[
        AuthzDefault | None,
        typer.Option(
            help="What sidecars do with a request no AuthorizationPolicy decides.",
            envvar="MESHCTL_AUTHZ_DEFAULT",
            show_default="allow",
        ),
    ] = None,
    outbound_policy: Annotated[
        OutboundPolicy | None,
        typer.Option(
            help="Egress to a host no Service or ExternalService names: let through, or refuse (403 / closed).",
            envvar="MESHCTL_OUTBOUND_POLICY",
            show_default="ALLOW_ANY",
        ),
    ] = None,
    trace_retention: Annotated[
        str | None,
        typer.Option(
            help="How long the trace store keeps a trace after it ended, e.g. 24h, 90m (at least 1m).",
            show_default="24h",
        ),
    ] = None,
    trace_max_spans: Annotated[
        int | None,
        typer.Option(help="The most spans the trace store keeps; the oldest traces go.", show_default="100000", min=1),
    ] = None,
    tls: Annotated[
        bool, typer.Option("--tls", help="Serve HTTPS on a loopback --host too (elsewhere HTTPS is the default).")
    ] = False,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Your serving certificate chain (PEM, leaf first) instead of one from the mesh CA."),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The key of --tls-cert (PEM).")] = None,
    tls_san: Annotated[
        list[str] | None,
        typer.Option(
            help="Another DNS name or IP address clients reach the control plane by, for the serving"
            " certificate from the mesh CA; repeatable.",
            show_default=False,
        ),
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="Serve plain HTTP on a --host other than loopback: tokens and CSRs travel in clear.",
        ),
    ] = False,
    ca_kek_file: Annotated[
        Path | None,
        typer.Option(
            help="The key-encryption key (0600) that seals the CA's keys in the database; made on the first"
            " start, and every replica needs a copy of it (MESHCTL_CA_KEK_FILE).",
            envvar="MESHCTL_CA_KEK_FILE",
            show_default="ca-kek in the data dir",
        ),
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
        "outbound_policy": outbound_policy.value if outbound_policy else None,
        "trace_retention_seconds": _seconds("--trace-retention", trace_retention),
        "trace_max_spans": trace_max_spans,
        "tls": tls or None,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "tls_sans": tls_san or None,
        "insecure_http": insecure_http or None,
        "ca_kek_file": ca_kek_file,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    _check_database(settings.db_url)
    ca = _check_ca(settings)
    ssl_files = _serving(settings, ca)
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

    Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, **ssl_files)).run()


def _serving(settings: Settings, ca: CertificateAuthority) -> dict[str, Any]:
    """uvicorn's TLS arguments: our serving certificate, the operator's, or none for plain HTTP
    (see meshctl.control.ca.serving). A bad combination or file is one line and exit 1 or 2."""
    from meshctl.control.ca import CaError, serving

    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise typer.BadParameter("give --tls-cert and --tls-key together", param_hint="--tls-cert")
    if settings.insecure_http and (settings.tls or settings.tls_cert is not None):
        raise typer.BadParameter("--insecure-http contradicts --tls and --tls-cert", param_hint="--insecure-http")
    try:
        if not settings.serves_tls:
            serving.plain_http(settings.data_dir, settings.host, insecure=settings.insecure_http)
            return {}
        if settings.tls_cert is not None and settings.tls_key is not None:
            files = serving.operator_files(settings.data_dir, settings.tls_cert, settings.tls_key)
        else:
            sans = [*settings.tls_sans]
            for name in sans:
                try:
                    serving.san(name)
                except ValueError as e:
                    raise typer.BadParameter(str(e), param_hint="--tls-san") from None
            files = serving.ensure_serving_cert(settings.data_dir, ca, serving.names(settings.host, sans))
    except CaError as e:
        typer.echo(f"{typer.style('error:', fg='red', bold=True)} {e}", err=True)
        raise typer.Exit(1) from None
    if (pin := serving.serving_ca_hash(settings.data_dir)) is not None:
        logs.setup().info("serving HTTPS; clients pin its CA with --ca-hash %s", pin)
    return {"ssl_certfile": str(files.cert_file), "ssl_keyfile": str(files.key_file)}


def _check_ca(settings: Settings) -> CertificateAuthority:
    """The CA, checked (and made or imported on first start) before serving: an unusable import or
    key-encryption key is one clear line and exit 1, not a traceback from the server's startup. An
    import is checked before the database is touched."""
    from meshctl.control.ca import CaError, CertificateAuthority
    from meshctl.control.ca.files import has_files, read_authority
    from meshctl.control.db import make_engine, migrate

    directory = settings.data_dir / "ca"
    try:
        if has_files(directory, ""):
            read_authority(directory, "", settings.trust_domain, create=True)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate(settings.db_url)
        engine = make_engine(settings.db_url)
        try:
            return CertificateAuthority.open(
                engine, settings.trust_domain, kek_file=settings.kek_path, import_dir=directory
            )
        finally:
            engine.dispose()
    except CaError as e:
        typer.echo(f"{typer.style('error:', fg='red', bold=True)} the CA cannot be used: {e}", err=True)
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


def _check_database(url: str) -> None:
    """A database URL that does not parse, or whose driver is not installed, is a usage error
    naming the extra to install; a database server that cannot be reached is one line and exit 1:
    neither is a traceback from the server's startup."""
    from sqlalchemy.exc import OperationalError

    from meshctl.control.db import DatabaseUrlError, check_url, make_engine

    try:
        check_url(url)
    except DatabaseUrlError as e:
        raise typer.BadParameter(str(e), param_hint="'--database-url' / MESHCTL_DATABASE_URL") from None
    if url.startswith("sqlite"):
        return  # (a file: made on start)
    engine = make_engine(url)
    try:
        with engine.connect():
            pass
    except OperationalError as e:
        reason = str(e.orig or e).strip().splitlines()[0]
        typer.echo(f"{typer.style('error:', fg='red', bold=True)} the database cannot be reached: {reason}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
