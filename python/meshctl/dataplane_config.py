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

#: ``transparent``: reads each connection's original destination (SO_ORIGINAL_DST, after an
#: iptables REDIRECT) and serves it as the listener whose ``address`` equals it.
ListenerProtocol = Literal["http", "tcp", "transparent"]
#: What a listener with ``egress`` does with a destination no route or listener claims:
#: ``allow_any`` forwards it there, ``registry_only`` refuses it (403 / closed, counted denied).
EgressPolicy = Literal["allow_any", "registry_only"]
UpstreamProtocol = Literal["http1", "http2"]
LbPolicy = Literal["round_robin", "least_request", "random", "ring_hash", "peak_ewma"]
#: What makes a try retriable: no connection; the upstream refused the HTTP/2 stream (nothing
#: processed); the connection or stream reset before any response byte; a 502/503/504; any 5xx.
RetryCondition = Literal["connect-failure", "refused-stream", "reset", "gateway-error", "5xx"]
#: gRPC status names, read from the response headers (trailers-only answers) or trailers.
GrpcCode = Literal["cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"]
HealthCheckType = Literal["http", "tcp"]
TlsMode = Literal["strict", "permissive", "simple"]
AuthorizationAction = Literal["allow", "deny"]
RedirectStatus = Literal[301, 302, 303, 307, 308]
#: Which side of the mesh a listener serves: calls into its service (inbound), calls out of it
#: (outbound), or from outside the mesh (gateway). Metrics, spans and access logs carry it.
Direction = Literal["inbound", "outbound", "gateway"]
AccessLogFormat = Literal["json", "text"]


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
    #: Header name -> pattern, anchored like ``path_regex``; some value of the header must match.
    header_regex: dict[str, str]
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
    """When a try fails in one of the listed ways it is sent again (after the back-off), on another
    endpoint when there is one, while the cluster's budget allows. Request bodies up to 64 KiB are
    kept for replay; a larger one is retried only when nothing of it was sent."""

    #: Tries after the first; default 2; 0 disables.
    attempts: int
    #: Default connect-failure, refused-stream, reset.
    retry_on: list[RetryCondition]
    #: HTTP statuses retried besides ``retry_on`` (100..=599).
    codes: list[int]
    #: gRPC statuses retried.
    grpc_codes: list[GrpcCode]
    #: Bounds each try; the route's ``timeout_ms`` still bounds all of them together.
    per_try_timeout_ms: int
    #: Default false: POST, PATCH (and other non-idempotent methods) are retried only when nothing
    #: reached the upstream (connect-failure, refused-stream).
    non_idempotent: bool
    backoff: BackoffConfig


class FaultDelay(TypedDict):
    """Holds a share of requests (or TCP connections) before they are forwarded."""

    #: 0..=100, fractions allowed.
    percent: float
    fixed_ms: int


class FaultAbort(TypedDict, total=False):
    """Answers a share of requests at once (HTTP: with ``http_status`` or ``grpc_status``, exactly
    one; TCP: the connection is reset, neither is given)."""

    percent: Required[float]
    #: 200..=599.
    http_status: int
    #: 1..=16 (a gRPC status code), sent as a trailers-only answer.
    grpc_status: int


class FaultConfig(TypedDict, total=False):
    """Independent of each other: a request may be both delayed and aborted."""

    delay: FaultDelay
    abort: FaultAbort


class MirrorConfig(TypedDict, total=False):
    """A copy of a share of the requests goes to ``cluster``; its answers are dropped and it never
    delays or fails the primary request. Bodies are teed up to 64 KiB (a longer one is not
    mirrored)."""

    cluster: Required[str]
    #: 0..=100, fractions allowed; default 100.
    percent: float


class RateLimitBucket(TypedDict, total=False):
    """A token bucket: ``rps`` tokens a second, holding at most ``burst`` (default ``rps``, at least 1)."""

    rps: Required[float]
    burst: int


class RateLimitOverride(RateLimitBucket, total=False):
    #: Callers' SPIFFE IDs (mTLS) that get this bucket, each their own, instead of ``per_identity``.
    identities: Required[list[str]]


class RateLimitConfig(TypedDict, total=False):
    """Linkerd's total / identity / overrides, checked in that order: a request over ``total`` or
    over its caller's bucket gets a 429 with ``retry-after`` and ``x-meshctl-error: rate_limited``.
    On a tcp listener it counts connections (refused by closing). At least one field."""

    total: RateLimitBucket
    #: One bucket per caller identity (callers without one share a bucket).
    per_identity: RateLimitBucket
    overrides: list[RateLimitOverride]


class RouteConfig(TypedDict, total=False):
    name: str
    #: Left out: every request.
    match: MatchConfig
    #: Needed unless ``redirect`` or ``deny`` is given (and then refused).
    backends: list[BackendConfig]
    #: The route answers 403 ``egress denied`` by itself (counted as an egress denial); no
    #: backends or redirect.
    deny: bool
    #: Bounds every try together.
    timeout_ms: int
    #: Left out: the default retries.
    retry: RetryConfig
    fault: FaultConfig
    mirrors: list[MirrorConfig]
    #: Checked after the listener's own limit.
    rate_limit: RateLimitConfig
    #: To the request sent upstream.
    request_headers: HeaderModifier
    #: To upstream responses and this route's redirects.
    response_headers: HeaderModifier
    rewrite: RewriteConfig
    redirect: RedirectConfig
    #: A request body over this many bytes gets 413.
    max_request_bytes: int


class AccessLogConfig(TypedDict, total=False):
    #: A file (appended to, reopened by ``DataPlane.reopen_logs()``) or "-" for stderr.
    path: Required[str]
    #: Default json (one object per line).
    format: AccessLogFormat


class ListenerLimits(TypedDict, total=False):
    """What a listener tolerates before refusing (defaults in brackets). tcp listeners take only
    ``max_connections`` and ``idle_timeout_ms``."""

    #: Connections open at once, TLS handshakes included; more are closed at once [10000].
    max_connections: int
    #: HTTP/1.1 request line and headers, 1024..=1048576: 431 over it [61440].
    header_bytes: int
    #: HTTP/1.1 header lines, 1..=1000: 431 over it [100].
    max_headers: int
    #: The whole request head within this of its first byte, else closed (slowloris) [10000].
    header_timeout_ms: int
    #: http: no request in flight for this long closes the connection [60000];
    #: tcp: no byte either way [3600000].
    idle_timeout_ms: int
    #: A request body that sends nothing for this long: 408 [30000].
    body_timeout_ms: int
    #: [100]
    h2_max_concurrent_streams: int
    #: [61440]
    h2_max_header_list_bytes: int
    #: Client stream resets per connection within 10 s (and over half its streams) before GOAWAY [200].
    h2_max_resets: int


class ConnectRule(TypedDict, total=False):
    """A CONNECT target allowed through an http listener's egress."""

    #: Exact (case-insensitive), or ``*.suffix`` for any name below it.
    host: Required[str]
    port: Required[int]
    #: A cluster the tunnel goes to; left out: to host:port itself.
    cluster: str
    #: Refused (403, counted) whatever the policy: a host this caller may not reach.
    deny: bool


class EgressConfig(TypedDict, total=False):
    """On http listeners: absolute-form requests are routed by their authority, unmatched
    requests follow ``policy`` (``allow_any``: forwarded to their authority/Host, default port 80),
    and CONNECT is allowed (``connect`` entries, else ``policy``). On transparent listeners:
    ``policy`` for an original destination no listener has (``allow_any``: TCP passthrough)."""

    policy: Required[EgressPolicy]
    #: http listeners only.
    connect: list[ConnectRule]


class ListenerConfig(TypedDict, total=False):
    name: Required[str]
    #: IP:port; port 0 picks a free one. With ``bind: false``, the original destination
    #: (e.g. a VIP:port) a transparent listener hands over to this listener.
    address: Required[str]
    #: Default true. false: not bound; reached only through a ``transparent`` listener.
    bind: bool
    #: Default http.
    protocol: ListenerProtocol
    #: http listeners (needed there): first match wins, no match is a 404 (see ``egress``).
    routes: list[RouteConfig]
    #: tcp listeners: one cluster, or weighted ``backends`` (per connection).
    cluster: str
    backends: list[BackendConfig]
    #: tcp listeners, instead of cluster/backends: every connection is closed at once (counted
    #: as an egress denial).
    deny: bool
    #: http and transparent listeners; absent: no egress (unknown Host -> 404, CONNECT refused;
    #: transparent: registry_only).
    egress: EgressConfig
    tls: ListenerTls
    authorization: AuthorizationConfig
    #: http: requests; tcp: new connections.
    rate_limit: RateLimitConfig
    #: tcp listeners: delay or reset (``abort`` with only ``percent``) a share of connections.
    fault: FaultConfig
    #: Default: inbound for a mesh-TLS (strict/permissive) listener, else outbound.
    direction: Direction
    #: One line per request (http) or connection (tcp); off when absent.
    access_log: AccessLogConfig
    limits: ListenerLimits


# === clusters ===


class EndpointConfig(TypedDict, total=False):
    #: host:port; a DNS name is resolved through a shared cache, kept for the cluster's
    #: ``dns_refresh_ms``.
    address: Required[str]
    #: 1..=10000, default 1.
    weight: int
    #: The endpoint's locality, for the cluster's ``locality``.
    zone: str


class OutlierDetectionConfig(TypedDict, total=False):
    """Passive health: an endpoint failing too often in a row is ejected for base x (its number of
    ejections), capped at max; never more than ``max_ejection_percent`` of the endpoints at once,
    though one may always be ejected."""

    #: 5xx answers (and gateway errors) in a row; default 5; 0 disables.
    consecutive_5xx: int
    #: Connect failures, resets and 502/503/504 in a row; default 5; 0 disables.
    consecutive_gateway_errors: int
    #: Default 10000.
    base_ejection_ms: int
    #: Default 300000.
    max_ejection_ms: int
    #: Default 50.
    max_ejection_percent: int
    #: When fewer than this percentage of the endpoints are healthy, balance over all of them;
    #: default 50; 0 disables.
    panic_threshold_percent: int


class HealthCheckConfig(TypedDict, total=False):
    """Active health checks by every proxy: an endpoint is out after ``unhealthy_threshold`` failed
    checks in a row and back after ``healthy_threshold`` passed ones. Combines with outlier
    detection: an endpoint must pass both."""

    type: Required[HealthCheckType]
    #: http only (needed there): the path asked with GET.
    path: str
    #: http only: statuses that pass; default any 2xx.
    expected_statuses: list[int]
    #: Default 5000.
    interval_ms: int
    #: A random extra wait up to this before each check; default 10 % of the interval.
    jitter_ms: int
    #: Default 1000.
    timeout_ms: int
    #: Default 2.
    healthy_threshold: int
    #: Default 3.
    unhealthy_threshold: int


class LocalityConfig(TypedDict, total=False):
    """Traffic stays with endpoints in ``zone`` while at least ``min_healthy_percent`` of them are
    healthy, then fails over to the zones in ``failover`` order, then to any zone."""

    #: The calling proxy's zone.
    zone: Required[str]
    failover: list[str]
    #: Default 70.
    min_healthy_percent: int


class CircuitBreakersConfig(TypedDict, total=False):
    """Limits on what one proxy sends to the cluster at once; each defaults to 1024. Over one, a
    request gets an immediate 503 (`x-meshctl-error: overflow`)."""

    max_connections: int
    max_pending_requests: int
    max_requests: int
    #: Retries in flight at once.
    max_retries: int


class RetryBudgetConfig(TypedDict, total=False):
    """Retries may add at most `percent` of the requests over the window, plus `min_per_second`."""

    #: Default 20.
    percent: int
    #: Default 10.
    min_per_second: int
    #: Default 10000.
    window_ms: int


class ClusterTls(TypedDict, total=False):
    """Exactly one form: mesh mTLS (``peer_ids``: the endpoints must present one of these SPIFFE
    IDs), or TLS origination to a server outside the mesh (``server_name`` sent as SNI and
    checked against its certificate, which must chain to ``ca`` or ``ca_file``, exactly one)."""

    peer_ids: list[str]
    server_name: str
    #: PEM roots, inline.
    ca: str
    #: PEM roots, read when the config is applied.
    ca_file: str


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
    #: Required unless ``original_destination``.
    endpoints: list[EndpointConfig]
    #: No endpoints: each call goes to the request's authority (HTTP) or the connection's
    #: original destination (transparent, CONNECT). Default false.
    original_destination: bool
    outlier_detection: OutlierDetectionConfig
    health_check: HealthCheckConfig
    locality: LocalityConfig
    circuit_breakers: CircuitBreakersConfig
    retry_budget: RetryBudgetConfig
    tls: ClusterTls
    #: The mesh service behind it ("namespace/name"), the destination in metrics and spans;
    #: default: the cluster's name.
    service: str
    #: How long a resolved endpoint name is used before it is resolved again (in the background,
    #: on the next connect; the stale answer is kept while a refresh fails). Default 5000.
    dns_refresh_ms: int


class TracingConfig(TypedDict, total=False):
    """Spans, one per request per hop, sent as OTLP/HTTP protobuf."""

    #: Share of new traces sampled at the first mesh hop (0-100); default 0. A request that comes
    #: with a sampling decision (traceparent, b3) keeps it; ``x-meshctl-trace: 1`` forces one.
    sample_percent: float
    #: Where spans go: an OTLP/HTTP traces URL (``http://host:4318/v1/traces``, or ``https://``
    #: with ``ca_file``). Without one, nothing is exported (but trace context still propagates).
    collector: str
    #: A file holding a bearer token for the collector (read when the config is applied).
    token_file: str
    #: PEM roots an ``https://`` collector's certificate must chain to (required for one: the
    #: system's trust store is not used). Read when the config is applied.
    ca_file: str
    #: Spans held for export at most; more are dropped (counted). Default 2048.
    max_queue: int
    #: Spans per export request at most; default 256.
    batch_size: int
    #: The longest a span waits to be sent; default 1000.
    flush_ms: int


class TelemetryConfig(TypedDict, total=False):
    """Who this proxy is, for metrics labels, spans and access logs, and where spans go."""

    #: The proxy's own service, namespace and workload (instance); default "" (a plain proxy).
    service: str
    namespace: str
    workload: str
    tracing: TracingConfig


class DnsConfig(TypedDict, total=False):
    """A small DNS answerer over UDP (no TCP): A queries for ``records`` names (case-insensitive,
    trailing dot ignored) are answered from them, any other type for those names gets an empty
    NOERROR; other names are forwarded to ``upstream`` and the answer relayed (SERVFAIL after 2 s)."""

    #: ip:port the UDP socket binds, e.g. "127.0.0.1:15053".
    address: Required[str]
    #: name -> IPv4 addresses; default none.
    records: dict[str, list[str]]
    #: ip:port servers; a forwarded query goes to each and the first answer is relayed. Default:
    #: the nameservers of /etc/resolv.conf (port 53), read when the config is applied.
    upstream: list[str]
    #: TTL of the answers from ``records``; default 30.
    ttl_s: int


class DataPlaneConfig(TypedDict, total=False):
    """The whole document."""

    admin: AdminConfig
    #: Needed by any mesh TLS (a ``strict``/``permissive`` listener, a cluster's ``tls``).
    identity: IdentityConfig
    listeners: list[ListenerConfig]
    clusters: list[ClusterConfig]
    #: How long a listener removed by an update may finish its connections; default 10000.
    drain_timeout_ms: int
    telemetry: TelemetryConfig
    #: The DNS answerer (transparent mode); absent: none.
    dns: DnsConfig


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
