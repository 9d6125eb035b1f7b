"""What an HTTPRoute rule says about failures: timeouts (GEP-1742), retry
(GEP-1731, with meshctl's extensions), the RequestMirror filter (GEP-3171) and
fault injection in Istio's shape (meshctl's extension: the Gateway API has
none). Durations are Gateway API durations (``durations``); the compiler
turns all of it into the route's data-plane sections (``compile_route``)."""

from __future__ import annotations

from typing import Annotated, get_args

from pydantic import AfterValidator, ValidationInfo, field_validator, model_validator
from pydantic import Field as PField

from meshctl import dataplane_config as dp
from meshctl.control import dataplane_defaults as defaults
from meshctl.control.kinds.common import ServiceRef, Spec
from meshctl.control.kinds.durations import Duration, PositiveDuration, parse_duration

# === gRPC status names ===

#: Every gRPC status but OK, by its name in the data plane's spelling (lower case, dashed).
GRPC_STATUS = {
    name: code
    for code, name in enumerate(
        [
            "cancelled",
            "unknown",
            "invalid-argument",
            "deadline-exceeded",
            "not-found",
            "already-exists",
            "permission-denied",
            "resource-exhausted",
            "failed-precondition",
            "aborted",
            "out-of-range",
            "unimplemented",
            "internal",
            "unavailable",
            "data-loss",
            "unauthenticated",
        ],
        start=1,
    )
}
#: The statuses a retry may be asked for (the data plane's `GrpcCode`): the ones that say the
#: server did not (or could not) do the work.
RETRIABLE_GRPC: tuple[str, ...] = get_args(dp.GrpcCode)


def grpc_name(text: str) -> str:
    """A gRPC status name as the data plane spells it: "DEADLINE_EXCEEDED" -> "deadline-exceeded"."""
    return text.strip().lower().replace("_", "-")


def _retriable_grpc(text: str) -> str:
    if grpc_name(text) not in RETRIABLE_GRPC:
        raise ValueError(f"{text!r} is not a retriable gRPC status: one of {', '.join(RETRIABLE_GRPC)}")
    return text


def _grpc_status(value: str | int) -> str | int:
    if isinstance(value, int):
        if not 1 <= value <= 16:
            raise ValueError(f"{value} is not a gRPC status: 1..16 (0 is OK)")
    elif grpc_name(value) not in GRPC_STATUS:
        raise ValueError(f"{value!r} is not a gRPC status name (e.g. UNAVAILABLE, DEADLINE_EXCEEDED)")
    return value


def grpc_code(value: str | int) -> int:
    """A valid `grpcStatus` as its number."""
    return value if isinstance(value, int) else GRPC_STATUS[grpc_name(value)]


#: Kept as written ("UNAVAILABLE" or "unavailable"); `grpc_name` gives the data plane's spelling.
RetriableGrpc = Annotated[str, AfterValidator(_retriable_grpc)]
GrpcStatus = Annotated[str | int, AfterValidator(_grpc_status)]
Percent = Annotated[float, PField(ge=0, le=100)]

# === timeouts (GEP-1742) ===


class HTTPRouteTimeouts(Spec):
    #: Bounds the whole request, every retry included; "0s" means no timeout.
    request: Duration | None = None
    #: Bounds each try to a backend (each retry gets its own); "0s" means none. At most `request`.
    backend_request: Duration | None = None

    @field_validator("backend_request")
    @classmethod
    def _within_request(cls, value: str | None, info: ValidationInfo) -> str | None:
        request = info.data.get("request")
        if value is None or request is None or parse_duration(request) == 0:
            return value
        if parse_duration(value) > parse_duration(request):
            raise ValueError(f"backendRequest {value} is longer than the request timeout {request}")
        return value


# === retry (GEP-1731, plus meshctl's extensions) ===

#: The data plane's default back-off base (`BackoffConfig.base_ms`), which a `maxBackoff` alone
#: must not undercut.
DEFAULT_BACKOFF_MS = defaults.RETRY["backoff"]["base_ms"]


class HTTPRouteRetry(Spec):
    """Retries of a failed try, on another endpoint when there is one, within the service's retry
    budget. Without this field a route has the data plane's default (2 retries of connect
    failures, refused streams and resets, which the proxy's /config and explain show)."""

    #: HTTP statuses retried (400..599).
    codes: list[Annotated[int, PField(ge=400, le=599)]] | None = None
    #: Retries after the first try (0..10; 0 disables retrying). The data plane's default: 2.
    attempts: int | None = PField(default=None, ge=0, le=10)
    #: The base of the exponential back-off with full jitter (default 25ms).
    backoff: PositiveDuration | None = None
    #: meshctl's extension: the back-off's cap (default 10 x backoff, 250ms without one).
    max_backoff: PositiveDuration | None = None
    #: meshctl's extension: the failures retried besides `codes`. Default connect-failure,
    #: refused-stream, reset; gateway-error is 502, 503 and 504.
    retry_on: list[dp.RetryCondition] | None = None
    #: meshctl's extension: gRPC statuses retried (UNAVAILABLE or unavailable, ...).
    grpc_codes: list[RetriableGrpc] | None = None
    #: meshctl's extension: retry non-idempotent requests (POST, PATCH) after they may have
    #: reached the upstream too. By default they are retried only when nothing reached it.
    non_idempotent: bool | None = None

    @field_validator("max_backoff")
    @classmethod
    def _not_below_backoff(cls, value: str | None, info: ValidationInfo) -> str | None:
        backoff = info.data.get("backoff")
        least = parse_duration(backoff) if backoff else DEFAULT_BACKOFF_MS
        if value is not None and parse_duration(value) < least:
            raise ValueError(f"maxBackoff {value} is shorter than the back-off base {backoff or '25ms'}")
        return value


# === the RequestMirror filter (GEP-3171) ===


class MirrorBackendRef(ServiceRef):
    """The Service that gets the copies (its port is the service's own: sidecars serve it)."""

    port: int | None = PField(default=None, ge=1, le=65535)


class MirrorFraction(Spec):
    numerator: int = PField(ge=0)
    denominator: int = PField(default=100, ge=1)

    @model_validator(mode="after")
    def _proper(self) -> MirrorFraction:
        if self.numerator > self.denominator:
            raise ValueError(f"numerator {self.numerator} is over denominator {self.denominator}")
        return self


class RequestMirror(Spec):
    """A copy of the requests (all of them, or `percent` or `fraction` of them) goes to
    `backendRef`; its answers are dropped and it never delays or fails the request."""

    backend_ref: MirrorBackendRef
    percent: int | None = PField(default=None, ge=0, le=100)
    fraction: MirrorFraction | None = None

    @model_validator(mode="after")
    def _one_share(self) -> RequestMirror:
        if self.percent is not None and self.fraction is not None:
            raise ValueError("give percent or fraction, not both")
        return self

    @property
    def share(self) -> float:
        """The percentage mirrored."""
        if self.fraction is not None:
            return 100 * self.fraction.numerator / self.fraction.denominator
        return 100.0 if self.percent is None else float(self.percent)


# === fault injection (Istio's HTTPFaultInjection: meshctl's extension) ===


class FaultPercentage(Spec):
    #: 0..100, fractions allowed.
    value: Percent


class HTTPFaultDelay(Spec):
    #: The share of requests held (required here, unlike Istio, where leaving it out delays none).
    percentage: FaultPercentage
    fixed_delay: PositiveDuration


class HTTPFaultAbort(Spec):
    #: The share of requests answered at once.
    percentage: FaultPercentage
    #: The answer's HTTP status (200..599); or
    http_status: int | None = PField(default=None, ge=200, le=599)
    #: a gRPC status, by name (UNAVAILABLE) or number (1..16), sent as a trailers-only answer.
    grpc_status: GrpcStatus | None = None

    @model_validator(mode="after")
    def _one_status(self) -> HTTPFaultAbort:
        if (self.http_status is None) == (self.grpc_status is None):
            raise ValueError("an abort takes exactly one of httpStatus and grpcStatus")
        return self


class HTTPFault(Spec):
    """meshctl's extension, in Istio's shape: delay and abort a share of the requests, each
    independently of the other, to test how callers cope."""

    delay: HTTPFaultDelay | None = None
    abort: HTTPFaultAbort | None = None

    @model_validator(mode="after")
    def _something(self) -> HTTPFault:
        if self.delay is None and self.abort is None:
            raise ValueError("a fault takes a delay, an abort or both")
        return self
