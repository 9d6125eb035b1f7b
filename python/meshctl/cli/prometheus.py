"""``meshctl prometheus-config``: the ``scrape_configs`` stanza that makes one
Prometheus scrape the whole mesh. Two jobs: the control plane's own
``/metrics`` (static, with the token), and every sidecar and gateway found
through the control plane's ``/api/v1/prometheus/targets`` (``http_sd``).

The token goes to the control plane only: in the mesh job it authorizes the
discovery request, not the scrapes, so sidecars' admin ports never see it.
Nothing is contacted: the stanza is printed for the operator to place.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from meshctl.cli import api, options

CONTROL_PLANE_JOB = "meshctl-control-plane"
MESH_JOB = "meshctl-mesh"
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def auth(token_file: Path) -> dict[str, str]:
    """A fresh mapping each time (YAML would print a shared one as an alias). The type is said
    although Bearer is the default: Prometheus 2.42 (Debian 12) leaves it out of http_sd
    requests otherwise, sending the bare token."""
    return {"type": "Bearer", "credentials_file": str(token_file)}


def scrape_configs(
    control_plane: str, token_file: Path, scrape_interval: str, refresh_interval: str, ca_file: Path | None = None
) -> dict[str, Any]:
    """The stanza as a document (see the module docstring). An https:// control plane is
    verified against `ca_file` (its serving CA) in both jobs."""
    url = urlsplit(control_plane)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"--control-plane: {control_plane!r} is no http(s) URL")
    if url.scheme == "http" and ca_file is not None:
        raise ValueError("--ca-file: the control plane is plain http://")
    tls = {"tls_config": {"ca_file": str(ca_file)}} if ca_file is not None else {}
    for name, value in (("--scrape-interval", scrape_interval), ("--refresh-interval", refresh_interval)):
        if not _DURATION.match(value):
            raise ValueError(f"{name}: {value!r} is no Prometheus duration (e.g. 15s, 1m)")
    base = url.path.rstrip("/")  # a control plane behind a path prefix keeps it
    own = {
        "job_name": CONTROL_PLANE_JOB,
        "scrape_interval": scrape_interval,
        "scheme": url.scheme,
        "metrics_path": f"{base}/metrics",
        "authorization": auth(token_file),
        **tls,
        "static_configs": [{"targets": [url.netloc]}],
    }
    mesh = {
        "job_name": MESH_JOB,
        "scrape_interval": scrape_interval,
        "http_sd_configs": [
            {
                "url": f"{url.scheme}://{url.netloc}{base}/api/v1/prometheus/targets",
                "refresh_interval": refresh_interval,
                "authorization": auth(token_file),
                **tls,
            }
        ],
        # The discovery lists the control plane too; its own job scrapes it (with the token).
        "relabel_configs": [{"source_labels": ["mesh_component"], "regex": "control-plane", "action": "drop"}],
    }
    return {"scrape_configs": [own, mesh]}


def prometheus_config(
    control_plane: Annotated[
        str,
        typer.Option(
            "--server",
            "--control-plane",
            envvar="MESHCTL_SERVER",
            metavar="URL",
            help="Control-plane URL, as Prometheus reaches it.",
        ),
    ] = options.DEFAULT_URL,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="The token file Prometheus reads (the read-only token is enough).",
            show_default="reader.token in $MESHCTL_DATA_DIR (~/.meshctl)",
        ),
    ] = None,
    scrape_interval: Annotated[str, typer.Option(help="How often each target is scraped.")] = "15s",
    refresh_interval: Annotated[str, typer.Option(help="How often the target list is read again.")] = "30s",
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            metavar="FILE",
            help="The CA Prometheus verifies an https:// control plane with.",
            show_default="tls/ca.pem in $MESHCTL_DATA_DIR (~/.meshctl) for an https:// URL, if it exists",
        ),
    ] = None,
) -> None:
    """Print a Prometheus scrape_configs stanza that finds every sidecar through the control plane."""
    import yaml

    path = (token_file or api.default_token_file().with_name("reader.token")).expanduser().absolute()
    try:
        if ca_file is None and control_plane.startswith("https:"):
            found = api.default_token_file().with_name("tls") / "ca.pem"
            ca_file = found if found.exists() else None
        ca = ca_file.expanduser().absolute() if ca_file is not None else None
        doc = scrape_configs(control_plane, path, scrape_interval, refresh_interval, ca)
    except ValueError as e:
        api.fail(str(e))
    if not path.exists():
        typer.echo(f"warning: {path} does not exist (yet); Prometheus will read it at each scrape", err=True)
    typer.echo(f"# meshctl prometheus-config: scrape_configs for prometheus.yml (token read from {path})")
    typer.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)
