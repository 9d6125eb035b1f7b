"""The data-plane config document, as TypedDicts: what ``DataPlane()``,
``DataPlane.update()`` and ``validate_config()`` take, what the control
plane's compiler emits and what a sidecar edits before handing it over.

The Rust decoder (``rust/src/config/``) is the authority: these names and
shapes mirror it, field for field, and its errors (with field paths) are what
a document that only type-checks can still get. Fields the decoder requires
are ``Required``; every other one may be left out, and then takes the
decoder's default (written beside it). Milliseconds are whole numbers.
"""

# No `from __future__ import annotations` here: TypedDict reads `Required` only from evaluated
# annotations, and `__required_keys__` must be right at run time too (tests compare it with Rust's).
from typing import Literal, Required, TypedDict

ListenerProtocol = Literal["http", "tcp"]
UpstreamProtocol = Literal["http1", "http2"]
LbPolicy = Literal["round_robin", "least_request", "random", "ring_hash"]
TlsMode = Literal["strict", "permissive", "simple"]
AuthorizationAction = Literal["allow", "deny"]
RedirectStatus = Literal[301, 302, 303, 307, 308]


class AdminConfig(TypedDict):
    #: A loopback IP:port.
    address: str


class IdentityConfig(TypedDict, total=False):
    """This proxy's SVID and the roots its peers must chain to: each part inline (PEM) or as a
    file, exactly one of the two."""

    cert_chain: str
    cert_chain_file: str
    private_key: str
    private_key_file: str
    roots: str
    roots_file: str


# === listeners ===


class CertificateConfig(TypedDict, total=False):
    """One edge certificate, chosen by SNI (exact names, then the longest ``*.suffix``; else the
    first); chain and key each inline or as a file."""

    server_names: list[str]
    cert_chain: str
    cert_chain_file: str
    private_key: str
    private_key_file: str


class ListenerTls(TypedDict, total=False):
    """``strict`` / ``permissive``: mesh mTLS with the identity; ``simple``: edge TLS with
    ``certificates`` (needed then, refused otherwise)."""

    mode: Required[TlsMode]
    certificates: list[CertificateConfig]


class AuthorizationRule(TypedDict, total=False):
    """Matches when every field given matches (``*`` globs; each list: any of it). The source
    fields are parts of the caller's SPIFFE ID; ``paths`` and ``methods`` are the request's."""

    #: Default ``rules[<index>]``.
    name: str
    action: Required[AuthorizationAction]
    principals: list[str]
    namespaces: list[str]
    services: list[str]
    paths: list[str]
    methods: list[str]


class AuthorizationConfig(TypedDict, total=False):
    """Deny rules first; then, if any allow rule exists, one must match; else ``default``."""

    #: Default allow.
    default: AuthorizationAction
    rules: list[AuthorizationRule]


class BackendConfig(TypedDict, total=False):
    cluster: Required[str]
    #: 0..=10000, default 1.
    weight: int


class MatchConfig(TypedDict, total=False):
    """Every field given must match; at most one of the three path forms."""

    #: ``*.example.com`` matches any name below it.
    host: str
    #: Exact.
    path: str
    #: By segment: ``/api`` matches ``/api`` and ``/api/x``, not ``/apix``.
    path_prefix: str
    #: Anchored; the data plane's regex engine.
    path_regex: str
    method: str
    #: Header name -> exact value.
    headers: dict[str, str]
    #: Decoded query parameter -> exact value; any repeat may match.
    query: dict[str, str]


class HeaderModifier(TypedDict, total=False):
    """Applied in the order remove, set (replaces every value), add (appends)."""

    set: dict[str, str]
    add: dict[str, str]
    remove: list[str]


class PathModifier(TypedDict, total=False):
    """At most one: the whole new path, or what replaces the route's ``match.path_prefix``."""

    path: str
    path_prefix: str


class RewriteConfig(PathModifier, total=False):
    #: Sent upstream as Host / :authority; host or host:port.
    host: str


class RedirectConfig(PathModifier, total=False):
    """The route answers by itself (no backends); at least one of scheme, host, port, path."""

    scheme: Literal["http", "https"]
    #: A host name without its port.
    host: str
    port: int
    #: Default 302.
    status: RedirectStatus


class BackoffConfig(TypedDict, total=False):
    """Full jitter: retry n waits a random time up to min(max, base x 2^n)."""

    #: Default 25.
    base_ms: int
    #: Default 250.
    max_ms: int


class RetryConfig(TypedDict, total=False):
    """A try that could not connect is sent again, on another endpoint when there is one."""

    #: Tries after the first; default 2; 0 disables.
    attempts: int
    #: So far only "connect-failure" (the default).
    retry_on: list[Literal["connect-failure"]]
    backoff: BackoffConfig


class RouteConfig(TypedDict, total=False):
    name: str
    #: Left out: every request.
    match: MatchConfig
    #: Needed unless ``redirect`` is given (and then refused).
    backends: list[BackendConfig]
    #: Bounds every try together.
    timeout_ms: int
    #: Left out: the default retries.
    retry: RetryConfig
    #: To the request sent upstream.
    request_headers: HeaderModifier
    #: To upstream responses and this route's redirects.
    response_headers: HeaderModifier
    rewrite: RewriteConfig
    redirect: RedirectConfig


class ListenerConfig(TypedDict, total=False):
    name: Required[str]
    #: IP:port; port 0 picks a free one.
    address: Required[str]
    #: Default http.
    protocol: ListenerProtocol
    #: http listeners (needed there): first match wins, no match is a 404.
    routes: list[RouteConfig]
    #: tcp listeners: one cluster, or weighted ``backends`` (per connection).
    cluster: str
    backends: list[BackendConfig]
    tls: ListenerTls
    authorization: AuthorizationConfig


# === clusters ===


class EndpointConfig(TypedDict, total=False):
    #: host:port; a name is resolved at connect time.
    address: Required[str]
    #: 1..=10000, default 1.
    weight: int


class OutlierDetectionConfig(TypedDict, total=False):
    #: Default 5; 0 disables.
    consecutive_failures: int
    #: Default 10000.
    ejection_ms: int


class CircuitBreakersConfig(TypedDict, total=False):
    """Limits on what one proxy sends to the cluster at once; each defaults to 1024. Over one, a
    request gets an immediate 503 (`x-meshctl-error: overflow`)."""

    max_connections: int
    max_pending_requests: int
    max_requests: int


class RetryBudgetConfig(TypedDict, total=False):
    """Retries may add at most `percent` of the requests over the window, plus `min_per_second`."""

    #: Default 20.
    percent: int
    #: Default 10.
    min_per_second: int
    #: Default 10000.
    window_ms: int


class ClusterTls(TypedDict):
    """Mesh mTLS to the endpoints, which must present one of these SPIFFE IDs."""

    peer_ids: list[str]


class ClusterConfig(TypedDict, total=False):
    name: Required[str]
    #: Default round_robin.
    lb: LbPolicy
    #: ring_hash only: the request header hashed (the client address when absent).
    hash_header: str
    #: Default http1.
    protocol: UpstreamProtocol
    #: Default 1000.
    connect_timeout_ms: int
    endpoints: Required[list[EndpointConfig]]
    outlier_detection: OutlierDetectionConfig
    circuit_breakers: CircuitBreakersConfig
    retry_budget: RetryBudgetConfig
    tls: ClusterTls


class DataPlaneConfig(TypedDict, total=False):
    """The whole document."""

    admin: AdminConfig
    #: Needed by any mesh TLS (a ``strict``/``permissive`` listener, a cluster's ``tls``).
    identity: IdentityConfig
    listeners: list[ListenerConfig]
    clusters: list[ClusterConfig]
    #: How long a listener removed by an update may finish its connections; default 10000.
    drain_timeout_ms: int


# === what the data plane answers explain with (_core.match_route, _core.authorize) ===


class RouteChoice(TypedDict):
    #: Index of the route that takes the request; None when none matches (a 404).
    chosen: int | None
    #: One per route tried, up to the chosen one ("matched").
    reasons: list[str]


class AuthorizationRuleVerdict(TypedDict):
    rule: str
    action: Literal["allow", "deny"]
    matched: bool
    reason: str


class AuthorizationDecision(TypedDict):
    decision: Literal["allow", "deny"]
    #: The deciding rule, or "default allow", "default deny", "no ALLOW rule matched".
    decided_by: str
    #: Every rule in the order tried: DENY rules first.
    rules: list[AuthorizationRuleVerdict]
