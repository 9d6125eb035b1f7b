"""A Service's app health check (issue 15, item 3), shaped like a Kubernetes
readinessProbe: each sidecar of the service probes its own app with it (an
HTTP GET or a TCP connect on 127.0.0.1), and only instances whose probe
passes are endpoints (see ``instances.serves``).

Specs use camelCase names (``httpGet``, ``periodSeconds``), as Kubernetes
writes them; snake_case is accepted too. The sidecar reads the stored form
(`AppHealthCheck.stored`) from its registration's answer (``health_check``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field as PField
from pydantic import model_validator

from meshctl.control.kinds.common import Spec

#: What a sidecar reports of its app: `unknown` until its probe has a result, then `healthy`
#: or `unhealthy`; None (no `health` in the registration): no check configured.
Health = Literal["unknown", "healthy", "unhealthy"]

#: A request path as the probe sends it: absolute, visible ASCII without spaces.
PROBE_PATH = r"^/[\x21-\x7e]*$"


class HttpGetProbe(Spec):
    """GET this path; any 2xx or 3xx answer passes."""

    path: str = PField(default="/", max_length=1024, pattern=PROBE_PATH)
    #: Where the app answers it on 127.0.0.1 (default: the sidecar's app port).
    port: int | None = PField(default=None, ge=1, le=65535)


class TcpSocketProbe(Spec):
    """Connect; an accepted connection passes."""

    #: Default: the sidecar's app port.
    port: int | None = PField(default=None, ge=1, le=65535)


class AppHealthCheck(Spec):
    """How a service's sidecars probe their app: exactly one of `httpGet` and `tcpSocket`."""

    http_get: HttpGetProbe | None = None
    tcp_socket: TcpSocketProbe | None = None
    #: Seconds between probes.
    period_seconds: int = PField(default=5, ge=1, le=3600)
    #: Seconds one probe may take before it counts as failed.
    timeout_seconds: int = PField(default=1, ge=1, le=3600)
    #: Passes in a row that make the instance healthy (an endpoint).
    success_threshold: int = PField(default=1, ge=1, le=100)
    #: Failures in a row that make a healthy instance unhealthy (no endpoint).
    failure_threshold: int = PField(default=3, ge=1, le=100)

    @model_validator(mode="after")
    def _one_probe(self) -> AppHealthCheck:
        if (self.http_get is None) == (self.tcp_socket is None):
            raise ValueError("give exactly one of httpGet and tcpSocket")
        return self

    def stored(self) -> dict[str, Any]:
        """As the Service's column keeps it (and the sidecars read it): camelCase, defaults filled in."""
        return self.model_dump(by_alias=True, exclude_none=True)
