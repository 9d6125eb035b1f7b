"""The telemetry a sidecar's heartbeat carries: its data plane's cumulative
counters per edge (``DataPlane.telemetry()``, contract B of issue 12), with
bounds so that one sidecar cannot make the control plane hold unbounded data.

Fields the data plane may add later are ignored, so older control planes take
newer sidecars' heartbeats.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

#: The most edges one heartbeat reports (the sidecar sends its busiest ones).
MAX_EDGES = 500
#: The most latency buckets of one edge (the data plane has 63).
MAX_BUCKETS = 128
_COUNT = Field(default=0, ge=0, le=2**63 - 1)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Milliseconds = Annotated[float, Field(ge=0), AfterValidator(_finite)]
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]


class EdgeReport(BaseModel):
    """One edge of one data plane: calls of one kind between two services, counted since the data
    plane started (a counter that goes down means it restarted)."""

    protocol: Literal["http", "tcp"]
    direction: Literal["inbound", "outbound", "gateway"]
    listener: str = Field(max_length=256)
    #: The route that matched ("" when none did, and for tcp).
    route: str = Field(default="", max_length=512)
    #: "namespace/name" of the caller; "" when unknown (plaintext, or from outside the mesh).
    source: str = Field(default="", max_length=300)
    #: "namespace/name" of the service called; "" when no backend was picked.
    destination: str = Field(default="", max_length=300)
    mtls: bool = False
    #: http: finished exchanges; tcp: connections closed.
    requests: int = _COUNT
    #: http: 5xx, gRPC failure statuses, or no answer; tcp: connect failures.
    failures: int = _COUNT
    #: [upper bound in ms, count]: the nonzero buckets of the latency histogram (not cumulative).
    latency_buckets: list[tuple[Milliseconds, Count]] = Field(default_factory=list, max_length=MAX_BUCKETS)
    latency_sum_ms: Milliseconds = 0.0
    request_bytes: int = _COUNT
    response_bytes: int = _COUNT


class TelemetryReport(BaseModel):
    """What `DataPlane.telemetry()` returns, at most `MAX_EDGES` edges of it."""

    edges: list[EdgeReport] = Field(default_factory=list, max_length=MAX_EDGES)
