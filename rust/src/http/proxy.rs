//! The forwarding path of one HTTP request: rate limits, route, faults,
//! pick (or redirect), rewrite headers and URL, mirror, send through the
//! cluster's pool with retries, stream the answer back.

use std::sync::Arc;
use std::time::Instant;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::ProxyBody;
use super::headers::{
    add_forwarded, ensure_request_id, request_authority, request_host, set_client_identity,
    strip_hop_by_hop, wants_upgrade,
};
use super::local_reply;
use super::mirror;
use super::pool::{Checkin, SendError, Unsent};
use super::replay::Replay;
use super::server::ConnInfo;
use crate::cluster::{Cluster, Endpoint, Outcome};
use crate::config::{
    AbortAnswer, LbPolicy, RedirectConfig, RetryOn, RetryPolicy, UpstreamProtocol,
};
use crate::filter::{redirect_location, rewrite_path, with_query, RequestUrl};
use crate::io::join_streams;
use crate::policy::{fault, ratelimit::RateLimiter};
use crate::route::{first_match, RequestView, Route};
use crate::shared::Shared;
use crate::snapshot::{Listener, Role};
use crate::stats::{Active, ClusterStats, Direction, EndpointStats, Meter};

pub async fn handle(
    shared: &Shared,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    // One snapshot for the whole request: an update mid-flight does not touch it.
    let snapshot = shared.snapshot.load_full();
    let Some(listener) = snapshot.listeners.get(&conn.listener) else {
        return local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "meshctl: listener is closing\n".into(),
        );
    };
    // hyper calls us once the request head is in; the head goes out when we return.
    let received = Instant::now();
    listener.stats.requests.inc();
    let resp = route(listener, conn, req).await;
    listener.stats.responses.record(resp.status().as_u16());
    listener.stats.latency.record(received.elapsed());
    resp
}

async fn route(
    listener: &Arc<Listener>,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let Role::Http { routes } = &listener.role else {
        return local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "meshctl: listener changed protocol\n".into(),
        );
    };
    if let Some(denied) = authorize(listener, conn, &req) {
        return denied;
    }
    if let Some(refused) = rate_limit(listener, listener.rate_limit.as_ref(), conn) {
        return refused;
    }
    let host = request_host(req.uri(), req.headers());
    let view = RequestView {
        method: req.method(),
        host: &host,
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
    };
    let Some(route) = first_match(routes, &view) else {
        listener.stats.no_route.inc();
        let msg = format!(
            "meshctl: no route on listener '{}' for {} {}{}\n",
            listener.name,
            req.method(),
            host,
            req.uri().path()
        );
        return local_reply(StatusCode::NOT_FOUND, "no_route", msg);
    };
    if let Some(refused) = rate_limit(listener, route.rate_limit.as_ref(), conn) {
        return refused;
    }
    if let Some(f) = &route.fault {
        let verdict = fault::decide(f);
        if let Some(delay) = verdict.delay {
            listener.stats.faults_delayed.inc();
            tokio::time::sleep(delay).await;
        }
        if let Some(answer) = verdict.abort {
            listener.stats.faults_aborted.inc();
            return abort_reply(answer);
        }
    }
    if let Some(redirect) = &route.redirect {
        listener.stats.redirects.inc();
        return redirect_reply(route, redirect, &req);
    }
    let Some(cluster) = route.pick_backend() else {
        let msg = format!(
            "meshctl: route '{}' has no backend with weight\n",
            route.name
        );
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "no_backend", msg);
    };
    let forwarded = forward(listener, route, cluster, conn, req);
    match route.timeout {
        None => forwarded.await,
        Some(limit) => match tokio::time::timeout(limit, forwarded).await {
            Ok(resp) => resp,
            Err(_) => {
                cluster.stats.timeouts.inc();
                let msg = format!(
                    "meshctl: cluster '{}' did not answer within {limit:?}\n",
                    cluster.name
                );
                local_reply(StatusCode::GATEWAY_TIMEOUT, "timeout", msg)
            }
        },
    }
}

/// The listener's authorization decision for a request: None to go on, a
/// 403 naming the deciding rule when denied.
fn authorize(
    listener: &Listener,
    conn: &ConnInfo,
    req: &Request<Incoming>,
) -> Option<Response<ProxyBody>> {
    let op = Some((req.method(), req.uri().path()));
    let why = listener.authorize(conn.peer_id.as_deref(), op, conn.peer)?;
    let msg = format!("meshctl: access denied ({why})\n");
    Some(local_reply(StatusCode::FORBIDDEN, "denied", msg))
}

/// A rate limit's refusal (429 with `retry-after` in whole seconds), or
/// None to go on. Callers are told apart by their mTLS identity.
fn rate_limit(
    listener: &Listener,
    limiter: Option<&RateLimiter>,
    conn: &ConnInfo,
) -> Option<Response<ProxyBody>> {
    let wait = limiter?
        .check(conn.peer_id.as_deref().map(|id| id.as_str()))
        .err()?;
    listener.stats.rate_limited.inc();
    let mut resp = local_reply(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "meshctl: rate limit exceeded\n".into(),
    );
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    Some(resp)
}

/// An injected fault's answer: the status, or a trailers-only gRPC error.
fn abort_reply(answer: AbortAnswer) -> Response<ProxyBody> {
    match answer {
        AbortAnswer::Grpc(code) => {
            let mut resp = Response::new(ProxyBody::empty());
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(code));
            h.insert(
                "grpc-message",
                HeaderValue::from_static("fault injected by meshctl"),
            );
            h.insert("x-meshctl-error", HeaderValue::from_static("fault"));
            resp
        }
        AbortAnswer::Http(status) => local_reply(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "fault",
            "meshctl: fault injected\n".into(),
        ),
        // Only TCP listeners reset; a route never decodes one.
        AbortAnswer::Reset => local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "fault",
            "meshctl: fault injected\n".into(),
        ),
    }
}

/// A redirect route's answer: its status, a `Location` and an empty body.
fn redirect_reply(
    route: &Route<Arc<Cluster>>,
    redirect: &RedirectConfig,
    req: &Request<Incoming>,
) -> Response<ProxyBody> {
    let url = RequestUrl {
        scheme: req.uri().scheme_str().unwrap_or("http"),
        authority: request_authority(req.uri(), req.headers()),
        path: req.uri().path(),
        query: req.uri().query(),
    };
    let location = redirect_location(redirect, route.matched_prefix.as_deref(), &url);
    let Ok(location) = HeaderValue::try_from(location) else {
        let msg = "meshctl: cannot build a redirect for this request\n".to_string();
        return local_reply(StatusCode::BAD_REQUEST, "bad_request", msg);
    };
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = redirect.status;
    resp.headers_mut().insert(header::LOCATION, location);
    route.response_headers.apply(resp.headers_mut());
    resp
}

/// The request counted active on its cluster and endpoint while it lives.
type ActiveGuards = (Active<ClusterStats>, Active<EndpointStats>);

/// What the response step needs to know of the downstream request.
struct Downstream {
    version: Version,
    /// The client's side of a protocol upgrade (WebSocket), when asked for.
    upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// A request ready for the upstream: the protocol it goes out with, and
/// what the response step needs.
struct Prepared {
    request: Request<ProxyBody>,
    protocol: UpstreamProtocol,
    downstream: Downstream,
}

/// Forwards to one endpoint of `cluster` in three steps: `prepare` the
/// request, `send` it (with failure and outlier accounting; a failed try is
/// retried on another endpoint as the route's policy, the request's method
/// and the cluster's budget and `max_retries` allow), `finish` the response.
/// Copies go to the route's mirrors on the side.
async fn forward(
    listener: &Arc<Listener>,
    route: &Route<Arc<Cluster>>,
    cluster: &Arc<Cluster>,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    cluster.stats.requests.inc();
    let limit = cluster.spec.circuit_breakers.max_requests;
    let Some(in_flight) = Active::try_enter(&cluster.stats, |s| &s.active_requests, limit) else {
        return overflow(cluster, "max_requests");
    };
    let key = cluster
        .spec
        .hash_header
        .as_ref()
        .and_then(|h| req.headers().get(h))
        .map(|v| v.as_bytes());
    let hash = cluster.hash_key(key, conn.peer.ip());
    let Some(mut ep) = cluster.pick(hash) else {
        cluster.stats.no_healthy_endpoint.inc();
        let msg = format!(
            "meshctl: no healthy endpoint in cluster '{}'\n",
            cluster.name
        );
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "no_healthy_endpoint", msg);
    };
    cluster.budget.deposit();
    ep.stats.requests.inc();
    let mut ep_active = Active::enter(&ep.stats, |s| &s.active);
    let Prepared {
        mut request,
        protocol,
        downstream,
    } = match prepare(listener, route, cluster, ep, conn, req) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let policy = &route.retry;
    let idempotent = policy.non_idempotent
        || request.method().is_idempotent()
        // gRPC methods are all POST; their retries go by status (gRFC A6).
        || is_grpc(request.headers());
    let copies = mirror::chosen(&route.mirrors);
    let replay = if copies.is_empty() && !keeps_copy(policy, idempotent) {
        None
    } else {
        let (kept, replay) = Replay::keep(request);
        request = kept;
        Some(Arc::new(replay))
    };
    if let Some(replay) = &replay {
        let limit = route.timeout.unwrap_or(mirror::DEFAULT_TIMEOUT);
        mirror::send_copies(copies, replay, limit);
    }
    let mut retries = 0;
    let mut _retry_slot = None;
    let (resp, checkin) = loop {
        let (again, last) = match attempt(cluster, ep, request, protocol, policy).await {
            Ok(answer) if !(idempotent && answer_retriable(policy, &answer.0)) => break answer,
            Ok(answer) => (replay.as_ref().and_then(|r| r.again()), Err(answer)),
            Err(Failed {
                reply,
                unsent: Some(unsent),
                ..
            }) if policy.retries_on(RetryOn::ConnectFailure) => (Some(*unsent), Ok(reply)),
            Err(Failed {
                reply,
                cause: Some(cause),
                ..
            }) if cause.allowed(policy, idempotent) => {
                (replay.as_ref().and_then(|r| r.again()), Ok(reply))
            }
            Err(failed) => return failed.reply,
        };
        // `last` is what the client gets if this try stays the last one:
        // Ok, the proxy's reply; Err, the upstream's own answer.
        let Some(again) = again else {
            match last {
                Ok(reply) => return reply,
                Err(answer) => break answer,
            }
        };
        let max_retries = cluster.spec.circuit_breakers.max_retries;
        let Some(slot) = Active::try_enter(&cluster.stats, |s| &s.active_retries, max_retries)
        else {
            return overflow(cluster, "max_retries");
        };
        let Some(next) = cluster.retry_endpoint(policy, &mut retries, hash, ep).await else {
            match last {
                Ok(reply) => return reply,
                Err(answer) => break answer,
            }
        };
        _retry_slot = Some(slot);
        ep = next;
        ep.stats.requests.inc();
        ep_active = Active::enter(&ep.stats, |s| &s.active);
        request = again;
    };
    finish(
        listener,
        route,
        cluster,
        conn,
        downstream,
        resp,
        ((in_flight, ep_active), checkin),
    )
    .await
}

/// True when the request is kept for replay: the policy may retry after
/// bytes could have reached the upstream, for this method.
fn keeps_copy(policy: &RetryPolicy, idempotent: bool) -> bool {
    if idempotent {
        policy.needs_replay()
    } else {
        policy.retries_on(RetryOn::RefusedStream)
    }
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// True when an upstream answer is one the policy retries: a listed or
/// 5xx/gateway status, or a listed gRPC status in a trailers-only answer
/// (how gRPC servers answer an error before any message).
fn answer_retriable(policy: &RetryPolicy, resp: &Response<Incoming>) -> bool {
    if policy.retries_status(resp.status().as_u16()) {
        return true;
    }
    !policy.grpc_codes.is_empty()
        && resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
            .is_some_and(|code| policy.grpc_codes.contains(&code))
}

/// Why a try failed before any answer, as retry policies name it.
#[derive(Debug, Clone, Copy)]
enum Cause {
    RefusedStream,
    Reset,
    /// The per-try timeout passed first.
    Timeout,
}

impl Cause {
    fn allowed(self, policy: &RetryPolicy, idempotent: bool) -> bool {
        match self {
            // Nothing was processed: safe for any method.
            Cause::RefusedStream => policy.retries_on(RetryOn::RefusedStream),
            Cause::Reset => idempotent && policy.retries_on(RetryOn::Reset),
            Cause::Timeout => {
                idempotent
                    && [RetryOn::Reset, RetryOn::GatewayError, RetryOn::ServerError]
                        .into_iter()
                        .any(|c| policy.retries_on(c))
            }
        }
    }
}

/// A try that failed: the reply the client gets if it is the last, the
/// request when it never left (a connect failure), free to go elsewhere,
/// and what went wrong otherwise.
struct Failed {
    reply: Response<ProxyBody>,
    unsent: Option<Unsent>,
    cause: Option<Cause>,
}

impl From<Response<ProxyBody>> for Failed {
    fn from(reply: Response<ProxyBody>) -> Self {
        Failed {
            reply,
            unsent: None,
            cause: None,
        }
    }
}

type Answer = (Response<Incoming>, Option<Checkin>);

/// One try, within the policy's per-try timeout (up to the response head).
async fn attempt(
    cluster: &Cluster,
    ep: &Endpoint,
    request: Request<ProxyBody>,
    protocol: UpstreamProtocol,
    policy: &RetryPolicy,
) -> Result<Answer, Failed> {
    let Some(limit) = policy.per_try_timeout else {
        return send(cluster, ep, request, protocol).await;
    };
    match tokio::time::timeout(limit, send(cluster, ep, request, protocol)).await {
        Ok(done) => done,
        Err(_) => {
            cluster.stats.timeouts.inc();
            cluster.report(ep, Outcome::Reset);
            let msg = format!(
                "meshctl: cluster '{}' did not answer a try within {limit:?}\n",
                cluster.name
            );
            Err(Failed {
                reply: local_reply(StatusCode::GATEWAY_TIMEOUT, "timeout", msg),
                unsent: None,
                cause: Some(Cause::Timeout),
            })
        }
    }
}

/// Step 1: the upstream request. Hop-by-hop headers out, forwarding and
/// identity headers in, the route's edits and rewrite applied, the target
/// in the form the upstream protocol wants. Err is the proxy's own reply.
// The Err variant is the reply itself, returned at once: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn prepare(
    listener: &Listener,
    route: &Route<Arc<Cluster>>,
    cluster: &Cluster,
    ep: &Endpoint,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
) -> Result<Prepared, Response<ProxyBody>> {
    let version = req.version();
    let upgrade = version == Version::HTTP_11 && wants_upgrade(req.headers());
    let downstream = Downstream {
        version,
        upgrade: upgrade.then(|| hyper::upgrade::on(&mut req)),
    };
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    add_forwarded(&mut parts.headers, conn.peer.ip());
    if listener.tls.as_ref().is_some_and(|t| t.is_mesh()) {
        // Only the mesh's own TLS may tell the app who is calling.
        set_client_identity(&mut parts.headers, conn.peer_id.as_deref());
    }
    ensure_request_id(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    // The route's edits come last, so that they may override the forwarding headers.
    route.request_headers.apply(&mut parts.headers);
    let rewrite = route.rewrite.as_ref();
    if let Some(host) = rewrite.and_then(|r| r.host.as_ref()) {
        // For HTTP/2 upstreams this becomes :authority below.
        parts.headers.insert(header::HOST, host.clone());
    }
    let pq = match rewrite.and_then(|r| r.path.as_ref()) {
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        Some(modifier) => {
            let path = rewrite_path(parts.uri.path(), route.matched_prefix.as_deref(), modifier);
            PathAndQuery::try_from(with_query(path, parts.uri.query())).map_err(|e| {
                let msg = format!("meshctl: bad rewritten request target: {e}\n");
                local_reply(StatusCode::BAD_REQUEST, "bad_request", msg)
            })?
        }
    };
    // An upgrade (WebSocket) needs HTTP/1.1 even to an HTTP/2 cluster: h2
    // has no Upgrade, and the tunnel takes the whole connection anyway.
    let protocol = if upgrade {
        UpstreamProtocol::Http1
    } else {
        cluster.spec.protocol
    };
    set_target(&mut parts, pq, protocol, &ep.authority).map_err(|e| {
        let msg = format!("meshctl: bad request target: {e}\n");
        local_reply(StatusCode::BAD_REQUEST, "bad_request", msg)
    })?;
    let meter = Meter {
        listener: listener.stats.clone(),
        cluster: cluster.stats.clone(),
        direction: Direction::Request,
    };
    Ok(Prepared {
        request: Request::from_parts(parts, ProxyBody::streamed(body, meter, None)),
        protocol,
        downstream,
    })
}

/// Puts the request target in the form `protocol` wants: origin form and a
/// Host header for HTTP/1.1; an absolute URI (its authority the Host, else
/// `fallback`) and no Host header for HTTP/2.
pub(super) fn set_target(
    parts: &mut http::request::Parts,
    pq: PathAndQuery,
    protocol: UpstreamProtocol,
    fallback: &Authority,
) -> Result<(), http::Error> {
    match protocol {
        UpstreamProtocol::Http1 => {
            if !parts.headers.contains_key(header::HOST) {
                if let Some(a) = parts.uri.authority() {
                    if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                        parts.headers.insert(header::HOST, v);
                    }
                }
            }
            parts.version = Version::HTTP_11;
            parts.uri = Uri::from(pq);
        }
        UpstreamProtocol::Http2 => {
            // :authority carries the client's host; a Host header would repeat it.
            let authority = parts
                .headers
                .remove(header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .or_else(|| parts.uri.authority().cloned())
                .unwrap_or_else(|| fallback.clone());
            parts.version = Version::HTTP_2;
            parts.uri = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(authority)
                .path_and_query(pq)
                .build()?;
        }
    }
    Ok(())
}

/// Step 2: one try on one endpoint. Its outcome counts toward the
/// endpoint's outlier detection. Err is the reply the client gets: 502, or
/// 503 when a circuit breaker refused a new connection.
async fn send(
    cluster: &Cluster,
    ep: &Endpoint,
    request: Request<ProxyBody>,
    protocol: UpstreamProtocol,
) -> Result<Answer, Failed> {
    let sent = Instant::now();
    match ep.pool.send(request, protocol).await {
        Ok(answer) => {
            let took = sent.elapsed();
            cluster.stats.latency.record(took);
            if cluster.spec.lb == LbPolicy::PeakEwma {
                ep.rtt.observe(took);
            }
            let status = answer.0.status().as_u16();
            cluster.report(ep, Outcome::Answer(status));
            cluster.stats.responses.record(status);
            Ok(answer)
        }
        Err(SendError::Connect(e, unsent)) => {
            cluster.report(ep, Outcome::ConnectFailure);
            tracing::debug!(cluster = %cluster.name, endpoint = %ep.address, "connect failed: {e}");
            let msg = format!(
                "meshctl: upstream connect failure in cluster '{}'\n",
                cluster.name
            );
            Err(Failed {
                reply: local_reply(StatusCode::BAD_GATEWAY, "connect_failure", msg),
                unsent,
                cause: None,
            })
        }
        Err(SendError::Overflow(limit)) => Err(overflow(cluster, limit).into()),
        Err(SendError::Upstream(e)) => {
            cluster.stats.upstream_errors.inc();
            cluster.report(ep, Outcome::Reset);
            tracing::debug!(cluster = %cluster.name, endpoint = %ep.address, "upstream error: {e:?}");
            let msg = format!("meshctl: upstream error in cluster '{}'\n", cluster.name);
            Err(Failed {
                reply: local_reply(StatusCode::BAD_GATEWAY, "upstream_error", msg),
                unsent: None,
                cause: Some(if refused_stream(&e) {
                    Cause::RefusedStream
                } else {
                    Cause::Reset
                }),
            })
        }
    }
}

/// True when an HTTP/2 upstream refused the stream (REFUSED_STREAM): it
/// processed nothing of the request.
fn refused_stream(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = s.source();
    }
    false
}

/// A circuit breaker's refusal: at once, counted, naming the limit.
fn overflow(cluster: &Cluster, limit: &str) -> Response<ProxyBody> {
    cluster.stats.overflow.inc();
    let msg = format!("meshctl: cluster '{}' is at its {limit}\n", cluster.name);
    local_reply(StatusCode::SERVICE_UNAVAILABLE, "overflow", msg)
}

/// Step 3: the response for the client. A 101 joins the two upgraded
/// connections in a tunnel; anything else streams back metered, with the
/// route's response edits. `held` (the active-request guards and the pool
/// check-in) lives as long as the body or the tunnel.
async fn finish(
    listener: &Arc<Listener>,
    route: &Route<Arc<Cluster>>,
    cluster: &Arc<Cluster>,
    conn: &ConnInfo,
    downstream: Downstream,
    mut resp: Response<Incoming>,
    held: (ActiveGuards, Option<Checkin>),
) -> Response<ProxyBody> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(down) = downstream.upgrade {
            let up = hyper::upgrade::on(&mut resp);
            let abort = conn.drain.abort.clone();
            let tunnel = tunnel(down, up, listener.clone(), cluster.clone(), abort, held);
            conn.drain.tracker.spawn(tunnel);
            let (mut parts, _) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            route.response_headers.apply(&mut parts.headers);
            parts.version = downstream.version;
            return Response::from_parts(parts, ProxyBody::empty());
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    route.response_headers.apply(&mut parts.headers);
    parts.version = downstream.version;
    let meter = Meter {
        listener: listener.stats.clone(),
        cluster: cluster.stats.clone(),
        direction: Direction::Response,
    };
    let body = ProxyBody::streamed(body, meter, Some(Box::new(held)))
        .prefetch()
        .await;
    Response::from_parts(parts, body)
}

/// After a 101, the two upgraded connections are joined byte for byte; the
/// request stays "active" (for stats and least_request) while the tunnel lives.
async fn tunnel(
    down: hyper::upgrade::OnUpgrade,
    up: hyper::upgrade::OnUpgrade,
    listener: Arc<Listener>,
    cluster: Arc<Cluster>,
    abort: tokio_util::sync::CancellationToken,
    _guards: impl Send,
) {
    match tokio::try_join!(down, up) {
        Ok((down, up)) => {
            let joined = join_streams(
                TokioIo::new(down),
                TokioIo::new(up),
                &listener.stats,
                &cluster.stats,
                &abort,
            );
            if let Err(e) = joined.await {
                tracing::debug!("tunnel ended: {e}");
            }
        }
        Err(e) => tracing::debug!("upgrade failed: {e}"),
    }
}
