"""What an HTTPRoute rule's timeouts, retry, RequestMirror filters and fault
become in its data-plane route (``timeout_ms``, ``retry``, ``mirrors``,
``fault``, ``max_request_bytes``): a part of the snapshot compiler, pure like it.

A rule without ``retry`` (and without ``timeouts.backendRequest``) gets no
``retry`` key, so that the data plane's default applies (and shows in its
/config). A "0s" timeout means none: the key is left out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar, cast

from meshctl import dataplane_config as dp
from meshctl.control.compile_fields import present
from meshctl.control.kinds.durations import MAX_MS, parse_duration
from meshctl.control.kinds.httproute import HTTPRouteRule
from meshctl.control.kinds.routeresilience import HTTPFault, HTTPRouteRetry, grpc_code, grpc_name

#: How a compiler names (and emits) the cluster of a service ("ns/name") and label subset.
ClusterOf = Callable[[str, Mapping[str, str]], str]

T = TypeVar("T")


def _unique(values: Iterable[T] | None) -> list[T] | None:
    """The values without repeats, in their first order (None stays None)."""
    return None if values is None else list(dict.fromkeys(values))


def retry(spec: HTTPRouteRetry | None, backend_request: str | None) -> dp.RetryConfig | None:
    """The route's `retry`, or None to leave the data plane's default."""
    out: dp.RetryConfig = {}
    if spec is not None:
        grpc_codes = spec.grpc_codes
        out = present(
            dp.RetryConfig,
            attempts=spec.attempts,
            retry_on=_unique(spec.retry_on),
            codes=_unique(spec.codes),
            grpc_codes=None if grpc_codes is None else _unique(cast(dp.GrpcCode, grpc_name(c)) for c in grpc_codes),
            non_idempotent=spec.non_idempotent,
        )
        backoff: dp.BackoffConfig = {}
        if spec.backoff is not None:
            backoff["base_ms"] = parse_duration(spec.backoff)
            # Envoy's cap, 10 x the base: the data plane's defaults (25/250 ms) keep that ratio.
            backoff["max_ms"] = min(10 * backoff["base_ms"], MAX_MS)
        if spec.max_backoff is not None:
            backoff["max_ms"] = parse_duration(spec.max_backoff)
        if backoff:
            out["backoff"] = backoff
    if backend_request is not None and (per_try := parse_duration(backend_request)) > 0:
        out["per_try_timeout_ms"] = per_try
    return out if spec is not None or out else None


def fault(spec: HTTPFault) -> dp.FaultConfig:
    out: dp.FaultConfig = {}
    if spec.delay is not None:
        out["delay"] = {"percent": spec.delay.percentage.value, "fixed_ms": parse_duration(spec.delay.fixed_delay)}
    if spec.abort is not None:
        grpc_status = spec.abort.grpc_status
        out["abort"] = present(
            dp.FaultAbort,
            percent=spec.abort.percentage.value,
            http_status=spec.abort.http_status,
            grpc_status=None if grpc_status is None else grpc_code(grpc_status),
        )
    return out


def resilience(rule: HTTPRouteRule, namespace: str, cluster: ClusterOf) -> dp.RouteConfig:
    """The keys a rule adds to its route (in `namespace`, the route's); mirrored services get
    their clusters through `cluster`, as backends do."""
    out: dp.RouteConfig = {}
    timeouts = rule.timeouts
    if timeouts is not None and timeouts.request is not None and (total := parse_duration(timeouts.request)) > 0:
        out["timeout_ms"] = total
    if (policy := retry(rule.retry, timeouts.backend_request if timeouts else None)) is not None:
        out["retry"] = policy
    if mirrors := rule.mirrors:
        out["mirrors"] = [
            {"cluster": cluster(f"{m.backend_ref.namespace or namespace}/{m.backend_ref.name}", {}), "percent": m.share}
            for _, m in mirrors
        ]
    if rule.fault is not None:
        out["fault"] = fault(rule.fault)
    if rule.max_request_bytes is not None:
        out["max_request_bytes"] = rule.max_request_bytes
    return out
