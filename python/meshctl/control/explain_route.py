"""``explain``, the route's resilience: the timeout, retry policy, fault and
mirrors that apply to one request, read from the very sections the compiler
emits (``compile_route.resilience``) and filled in with the data plane's
defaults (``dataplane_defaults``) as its decoder fills them.

Whether a failed try goes again depends on the request too: POST and PATCH
are retried only when nothing reached the upstream (unless the route says
``nonIdempotent``), while gRPC calls, though POSTs, are retried by status
(gRFC A6). The verdict says which conditions apply to this request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field

from meshctl import dataplane_config as dp
from meshctl.control import dataplane_defaults as defaults
from meshctl.control.compile_route import resilience
from meshctl.control.kinds.httproute import HTTPRouteRule


class RetryVerdict(BaseModel):
    """The retry policy the caller's sidecar runs for this route, and what it means for this request."""

    #: "route": the rule's `retry` (the fields in `defaults` are the data plane's); "default": the rule
    #: has none, so the data plane's default policy applies.
    source: Literal["route", "default"]
    #: Fields taken from the data plane's default.
    defaults: list[str] = Field(default_factory=list)
    attempts: int
    retry_on: list[str]
    codes: list[int] = Field(default_factory=list)
    grpc_codes: list[str] = Field(default_factory=list)
    per_try_timeout_ms: int | None = None
    non_idempotent: bool
    backoff_base_ms: int
    backoff_max_ms: int
    #: Whether the data plane retries this request after bytes may have reached the upstream: an
    #: idempotent method (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), a gRPC call, or `nonIdempotent`.
    idempotent: bool
    #: The conditions retried for this request whatever its method: nothing reached the upstream.
    before_sent: list[str] = Field(default_factory=list)
    #: The conditions (and statuses) retried for this request after it may have reached the upstream.
    after_sent: list[str] = Field(default_factory=list)
    #: What it comes to for this request, in a sentence.
    note: str


class FaultDelay(BaseModel):
    percent: float
    fixed_ms: int


class FaultAbort(BaseModel):
    percent: float
    http_status: int | None = None
    grpc_status: int | None = None


class FaultVerdict(BaseModel):
    """Injected by the caller's sidecar, each independently of the other."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class MirrorVerdict(BaseModel):
    #: The service ("ns/name") that gets a copy; its answers are dropped.
    service: str
    percent: float


class RouteResilience(BaseModel):
    #: Bounds every try together; None: no timeout.
    timeout_ms: int | None = None
    retry: RetryVerdict
    fault: FaultVerdict | None = None
    mirrors: list[MirrorVerdict] = Field(default_factory=list)


def _is_grpc(headers: Mapping[str, str]) -> bool:
    return any(k.lower() == "content-type" and v.lower().startswith("application/grpc") for k, v in headers.items())


def _plural(n: int) -> str:
    return f"{n} retry" if n == 1 else f"{n} retries"


def retry_verdict(given: dp.RetryConfig | None, method: str, headers: Mapping[str, str]) -> RetryVerdict:
    """The policy as the data plane decodes `given` (a route's `retry`; None: the default), for a
    request with `method` and `headers`."""
    d = defaults.RETRY
    section: dp.RetryConfig = given if given is not None else {}
    backoff: dp.BackoffConfig = {**d["backoff"], **section.get("backoff", {})}
    attempts = section.get("attempts", d["attempts"])
    retry_on: list[str] = list(section.get("retry_on", d["retry_on"]))
    codes, grpc_codes = list(section.get("codes", [])), list(section.get("grpc_codes", []))
    non_idempotent = section.get("non_idempotent", d["non_idempotent"])
    grpc = _is_grpc(headers)
    idempotent = non_idempotent or method in defaults.IDEMPOTENT_METHODS or grpc
    before: list[str] = [c for c in retry_on if c in defaults.NOTHING_SENT]
    after = [c for c in retry_on if c not in defaults.NOTHING_SENT]
    after += [str(c) for c in codes] + [f"grpc {g}" for g in grpc_codes if grpc]
    who = "a gRPC call" if grpc else method
    if attempts == 0:
        note = "no retries: the route turns them off"
    elif idempotent:
        why = " (the route's nonIdempotent)" if method not in defaults.IDEMPOTENT_METHODS and not grpc else ""
        note = f"{who}{why}: up to {_plural(attempts)} on {', '.join(before + after) or 'nothing'}"
    else:
        note = f"{method} is not idempotent: up to {_plural(attempts)} only when nothing reached the upstream"
        note += f" ({', '.join(before)})" if before else " (never: no such condition is listed)"
        if after:
            note += f", not on {', '.join(after)} (retry.nonIdempotent allows it)"
    fields = ("attempts", "retry_on", "non_idempotent", "backoff")
    return RetryVerdict(
        source="default" if given is None else "route",
        defaults=[f for f in fields if f not in section] if given is not None else list(fields),
        attempts=attempts,
        retry_on=retry_on,
        codes=codes,
        grpc_codes=list(grpc_codes),
        per_try_timeout_ms=section.get("per_try_timeout_ms"),
        non_idempotent=non_idempotent,
        backoff_base_ms=backoff["base_ms"],
        backoff_max_ms=backoff["max_ms"],
        idempotent=idempotent,
        before_sent=before if attempts else [],
        after_sent=after if attempts and idempotent else [],
        note=note,
    )


def route_resilience(
    rule: HTTPRouteRule | None, namespace: str, method: str, headers: Mapping[str, str]
) -> RouteResilience:
    """For a request that `rule` (of a route in `namespace`) forwards; None: a service without
    HTTPRoutes, whose route has none of these sections."""
    # The compiler's own sections; mirrors named by their service rather than a cluster.
    section = resilience(rule, namespace, lambda service, _subset: service) if rule is not None else {}
    fault = section.get("fault")
    return RouteResilience(
        timeout_ms=section.get("timeout_ms"),
        retry=retry_verdict(section.get("retry"), method, headers),
        fault=FaultVerdict.model_validate(fault) if fault else None,
        mirrors=[
            MirrorVerdict(service=m["cluster"], percent=m.get("percent", 100.0)) for m in section.get("mirrors", [])
        ],
    )


def tcp_resilience() -> RouteResilience:
    """A TCP listener's: a connect failure is retried on another endpoint as the default policy
    would, before anything is read from the client; nothing else is."""
    policy: dp.RetryConfig = {"retry_on": ["connect-failure"]}
    retry = retry_verdict(policy, "CONNECT", {})
    retry.source, retry.defaults = "default", ["attempts", "retry_on", "non_idempotent", "backoff"]
    retry.note = f"a connection: up to {_plural(retry.attempts)} on connect-failure, before anything is read"
    return RouteResilience(retry=retry)
