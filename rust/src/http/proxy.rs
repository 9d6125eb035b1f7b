//! The forwarding path of one HTTP request: rate limits, route, faults,
//! pick (or redirect), rewrite headers and URL, mirror, send through the
//! cluster's pool with retries, stream the answer back.

use std::sync::Arc;
use std::time::Instant;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::admission::{abort_reply, rate_limit};
use super::attempt::{
    answer_retriable, attempt, is_grpc, keeps_copy, overflow, overflow_reply, Failed,
};
use super::body::ProxyBody;
use super::headers::{
    add_forwarded, ensure_request_id, request_authority, request_host, set_client_identity,
    strip_hop_by_hop, wants_upgrade,
};
use super::local_reply;
use super::mirror;
use super::pool::Checkin;
use super::replay::Replay;
use super::server::ConnInfo;
use crate::cluster::{Cluster, Endpoint, Retry};
use crate::config::{RedirectConfig, RetryOn, UpstreamProtocol};
use crate::filter::{redirect_location, rewrite_path, with_query, RequestUrl};
use crate::io::join_streams;
use crate::policy::fault;
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
        if let Some(answer) = fault::inject(f, &listener.stats).await {
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
        Some(replay)
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
        let (next, slot) = match cluster.retry_endpoint(policy, &mut retries, hash, ep).await {
            Retry::Go(next, slot) => (next, slot),
            Retry::Overflow => return overflow_reply(cluster, "max_retries"),
            Retry::Stop => match last {
                Ok(reply) => return reply,
                Err(answer) => break answer,
            },
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
