//! The forwarding path of one HTTP request: rate limits, route, faults,
//! pick (or redirect), rewrite headers and URL, mirror, send through the
//! cluster's pool with retries, stream the answer back.

use std::sync::Arc;
use std::time::Instant;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;

use super::admission::{abort_reply, rate_limit};
use super::attempt::{
    answer_retriable, attempt, is_grpc, keeps_copy, overflow, overflow_reply, Failed,
};
use super::body::{grpc_status, Done, Inbound, Inner, ProxyBody};
use super::egress;
use super::headers::{
    add_forwarded, ensure_request_id, request_authority, request_host, set_client_identity,
    strip_hop_by_hop, take_h2c, wants_upgrade,
};
use super::local_reply;
use super::mirror;
use super::replay::Replay;
use super::server::ConnInfo;
use crate::cluster::{Cluster, Endpoint, Retry};
use crate::config::{RedirectConfig, RetryOn, UpstreamProtocol};
use crate::filter::{redirect_location, rewrite_path, with_query, RequestUrl};
use crate::io::join_streams;
use crate::policy::fault;
use crate::route::{RequestView, Route};
use crate::shared::Shared;
use crate::snapshot::{Listener, Role, Snapshot};
use crate::stats::{self, Active, ClusterStats, EndpointStats, Meter, Reason, Refusal, Registry};
use crate::telemetry::context::SpanContext;
use crate::telemetry::edges::{EdgeLabels, EdgeStats};
use crate::telemetry::exchange::{Exchange, Sinks};
use crate::telemetry::flags;

pub async fn handle(
    shared: &Shared,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
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
    let busy = conn.state.enter();
    listener.stats.requests.inc();
    // Before the record is made, which names it.
    ensure_request_id(req.headers_mut());
    // This hop's span: the next hop sees it as the parent.
    let trace = snapshot.tracer.as_ref().map(|t| {
        let ctx = SpanContext::start(req.headers(), t.sample_rate());
        ctx.inject(req.headers_mut());
        ctx
    });
    let mut hop = Hop {
        registry: &shared.registry,
        me: &snapshot.me,
        route: None,
        edge: None,
        fault_delayed: false,
        record: record(shared, &snapshot, listener, conn, &req, trace),
    };
    let mut resp = route(listener, conn, req, &mut hop).await;
    let status = resp.status().as_u16();
    let head = received.elapsed();
    listener.stats.responses.record(status);
    listener.stats.latency.record(head);
    let edge = match hop.edge.take() {
        Some(edge) => edge,
        None => unrouted_edge(listener, conn, &hop),
    };
    edge.latency.record(head);
    let mut record = hop.record.take();
    if let Some(x) = &mut record {
        x.status = status;
        if hop.fault_delayed {
            x.flags |= flags::FAULT_DELAY;
        }
        // The proxy's own replies say why in a header; an upstream's never count.
        if matches!(resp.body(), ProxyBody::Local(_)) {
            if let Some(kind) = resp.headers().get("x-meshctl-error") {
                x.flags |= flags::of_local_reply(kind.as_bytes());
            }
        }
        if let Some(r) = hop.route.and_then(|i| route_at(listener, i)) {
            x.route = r.label.clone();
        }
    }
    let done = Done {
        edge,
        status,
        grpc: grpc_status(resp.headers()),
        ended: false,
        bytes: 0,
        record,
        busy: Some(busy),
    };
    resp.body_mut().finish_with(done);
    resp
}

/// The request's record, when the access log, an exported span or a tap wants one.
fn record(
    shared: &Shared,
    snapshot: &Snapshot,
    listener: &Listener,
    conn: &ConnInfo,
    req: &Request<Incoming>,
    trace: Option<SpanContext>,
) -> Option<Box<Exchange>> {
    let taps = &shared.registry.taps;
    let sinks = Sinks {
        log: listener.access_log.clone(),
        tracer: snapshot
            .tracer
            .as_ref()
            .filter(|t| t.exports() && trace.is_some_and(|c| c.sampled))
            .cloned(),
        tap: taps.active().then(|| taps.clone()),
    };
    if !sinks.any() {
        return None;
    }
    let uri = req.uri();
    Some(Exchange::http(
        sinks,
        listener.direction,
        listener.label.clone(),
        conn.peer,
        conn.peer_id.clone(),
        req.method().clone(),
        uri,
        req.version(),
        req.headers(),
        trace,
    ))
}

/// What the forwarding steps learn about a request, for its metrics and
/// its record (access log, span, tap).
struct Hop<'a> {
    registry: &'a Registry,
    me: &'a Arc<str>,
    /// The route that took it (its index).
    route: Option<usize>,
    /// The edge of the backend it went to.
    edge: Option<Arc<EdgeStats>>,
    fault_delayed: bool,
    record: Option<Box<Exchange>>,
}

fn route_at(listener: &Listener, i: usize) -> Option<&Route<Arc<Cluster>>> {
    match &listener.role {
        Role::Http { routes } => routes.get(i),
        _ => None,
    }
}

/// The labels of an HTTP edge on `listener` (see `Listener::edge_labels`).
fn edge_labels(
    listener: &Listener,
    conn: &ConnInfo,
    me: &Arc<str>,
    route: &Arc<str>,
    destination: Option<&Cluster>,
) -> EdgeLabels {
    let verified = conn.peer_id.is_some();
    listener.edge_labels(&conn.source, verified, me, route, destination, false)
}

/// The edge of a request that reached no backend (its route's, when one took it).
fn unrouted_edge(listener: &Listener, conn: &ConnInfo, hop: &Hop<'_>) -> Arc<EdgeStats> {
    let (registry, me) = (hop.registry, hop.me);
    match hop.route.and_then(|i| route_at(listener, i)) {
        Some(r) => r.edges.edge(&conn.source, 0, &registry.edges, || {
            edge_labels(listener, conn, me, &r.label, None)
        }),
        None => listener
            .unrouted
            .edge(&conn.source, 0, &registry.edges, || {
                edge_labels(listener, conn, me, &"".into(), None)
            }),
    }
}

async fn route(
    listener: &Arc<Listener>,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    hop: &mut Hop<'_>,
) -> Response<ProxyBody> {
    let Role::Http { routes } = &listener.role else {
        return local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "meshctl: listener changed protocol\n".into(),
        );
    };
    if let Some(refused) = strict_request(listener, &mut req) {
        return refused;
    }
    if let Some(denied) = authorize(listener, conn, &req) {
        return denied;
    }
    if let Some(refused) = rate_limit(listener, listener.rate_limit.as_ref(), conn) {
        return refused;
    }
    if let Some(answered) = egress::before_routing(listener, conn, &mut req, &mut hop.record).await
    {
        return answered;
    }
    let host = request_host(req.uri(), req.headers());
    let view = RequestView {
        method: req.method(),
        host: &host,
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
    };
    let route = match routes
        .iter()
        .enumerate()
        .find(|(_, r)| r.matcher.matches(&view))
    {
        Some((index, route)) => {
            hop.route = Some(index);
            route
        }
        None => match egress::unrouted(listener, &req, &host) {
            Ok(passthrough) => passthrough,
            Err(reply) => return reply,
        },
    };
    if let Some(refused) = over_size(listener, route, &req) {
        return refused;
    }
    if let Some(refused) = rate_limit(listener, route.rate_limit.as_ref(), conn) {
        return refused;
    }
    if let Some(f) = &route.fault {
        let injected = fault::inject(f, &listener.stats).await;
        hop.fault_delayed = injected.delayed;
        if let Some(answer) = injected.abort {
            return abort_reply(answer);
        }
    }
    if route.deny {
        let what = format!(
            "{} {host}{} (route '{}')",
            req.method(),
            req.uri().path(),
            route.name
        );
        return egress::denied(listener, &what);
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
    let (registry, me) = (hop.registry, hop.me);
    let key = Arc::as_ptr(cluster) as usize;
    let edge = route.edges.edge(&conn.source, key, &registry.edges, || {
        edge_labels(listener, conn, me, &route.label, Some(cluster))
    });
    if let Some(x) = &mut hop.record {
        x.destination = edge.labels.destination.clone();
    }
    hop.edge = Some(edge.clone());
    // Boxed: a future is copied whole each time it is made or moved (hyper
    // moves the request's into its connection, and spawns a task with it per
    // HTTP/2 stream), and forwarding is most of its size (profiled: memmove
    // was the top user-space symbol).
    let forwarded = Box::pin(forward(
        listener,
        route,
        cluster,
        conn,
        req,
        &edge,
        &mut hop.record,
    ));
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

/// RFC 9112's rules hyper leaves to us, for each HTTP/1.x request: exactly
/// one Host (§3.2: 400 otherwise); an `h2c` upgrade is taken out, never
/// forwarded (the h2c smuggling vector: a proxy that passes it lets a client
/// talk HTTP/2 to the upstream past every route and policy).
fn strict_request(listener: &Listener, req: &mut Request<Incoming>) -> Option<Response<ProxyBody>> {
    if req.version() >= Version::HTTP_2 {
        return None;
    }
    let hosts = req.headers().get_all(header::HOST).iter().count();
    let why = match hosts {
        0 if req.version() == Version::HTTP_11 => {
            Some("meshctl: an HTTP/1.1 request needs a Host header\n")
        }
        0 | 1 => None,
        _ => Some("meshctl: more than one Host header\n"),
    };
    if let Some(why) = why {
        return Some(refusal(listener, Refusal::BadRequest, why));
    }
    if take_h2c(req.headers_mut()) {
        listener.stats.refusals.inc(Refusal::H2cUpgrade);
    }
    None
}

/// A request whose declared length is over the route's limit: 413 before
/// anything is forwarded. (A chunked one is cut while it streams.)
fn over_size(
    listener: &Listener,
    route: &Route<Arc<Cluster>>,
    req: &Request<Incoming>,
) -> Option<Response<ProxyBody>> {
    let limit = route.max_request_bytes?;
    (req.body().size_hint().lower() > limit).then(|| {
        refusal(
            listener,
            Refusal::BodyTooLarge,
            "meshctl: request body too large\n",
        )
    })
}

/// A refusal of the client's request, counted; the connection closes after
/// it (the rest of what the client sends cannot be trusted to frame).
fn refusal(listener: &Listener, why: Refusal, text: &str) -> Response<ProxyBody> {
    listener.stats.refusals.inc(why);
    refusal_reply(why, text)
}

/// The reply to a refused request (counted where it was decided).
pub(super) fn refusal_reply(why: Refusal, text: &str) -> Response<ProxyBody> {
    let mut resp = local_reply(super::strict::status(why), why.name(), text.to_string());
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
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

/// Where a request body's bytes count besides the listener and cluster: its
/// edge, and its record when one is kept.
type Tally = (Arc<EdgeStats>, Option<Arc<std::sync::atomic::AtomicU64>>);

fn tally(edge: &Arc<EdgeStats>, record: &Option<Box<Exchange>>) -> Tally {
    (
        edge.clone(),
        record.as_ref().map(|x| x.request_bytes.clone()),
    )
}

/// The request counted active on its cluster and endpoint while it lives.
type ActiveGuards = (Active<ClusterStats>, Active<EndpointStats>);

/// What the response step needs to know of the downstream request.
struct Downstream {
    version: Version,
    /// The edge its bytes and outcome count on.
    edge: Arc<EdgeStats>,
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
    edge: &Arc<EdgeStats>,
    record: &mut Option<Box<Exchange>>,
) -> Response<ProxyBody> {
    let started = Instant::now();
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
    let destination;
    let picked = if cluster.spec.original_destination {
        destination = egress::destination(&req).and_then(|d| cluster.destination(&d));
        destination.as_deref()
    } else {
        cluster.pick(hash)
    };
    let Some(mut ep) = picked else {
        cluster.stats.no_healthy_endpoint.inc();
        let msg = format!(
            "meshctl: no healthy endpoint in cluster '{}'\n",
            cluster.name
        );
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "no_healthy_endpoint", msg);
    };
    cluster.budget.deposit();
    ep.stats.requests.inc();
    if let Some(x) = record.as_mut() {
        x.upstream = Some(ep.address.clone());
    }
    let mut ep_active = Active::enter(&ep.stats, |s| &s.active);
    let Prepared {
        mut request,
        protocol,
        downstream,
    } = match prepare(listener, route, cluster, ep, conn, req, tally(edge, record)) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let body_verdict = request.body().verdict();
    if body_verdict.is_some() {
        // The first piece of a body usually comes with the head: read it
        // ahead, so that a broken one (a bad chunk size) is refused before
        // anything reaches the upstream, and head and piece go out together.
        let (parts, body) = request.into_parts();
        let body = body.prefetch().await;
        if body.broken() {
            let text = "meshctl: malformed request body\n";
            return refusal(listener, Refusal::BadRequest, text);
        }
        request = Request::from_parts(parts, body);
    }
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
    let resp = loop {
        let (again, last) = match attempt(
            cluster,
            ep,
            request,
            protocol,
            policy,
            body_verdict.as_deref(),
        )
        .await
        {
            Ok(answer) if !(idempotent && answer_retriable(policy, &answer)) => break answer,
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
        if let Some(x) = record.as_mut() {
            x.retries = retries;
            x.upstream = Some(ep.address.clone());
        }
        ep.stats.requests.inc();
        ep_active = Active::enter(&ep.stats, |s| &s.active);
        request = again;
    };
    if let Some(v) = &body_verdict {
        v.answered();
    }
    if let Some(x) = record.as_mut() {
        x.upstream_head = Some(started.elapsed());
    }
    finish(
        listener,
        route,
        cluster,
        conn,
        downstream,
        resp,
        (in_flight, ep_active),
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
    (edge, record_bytes): Tally,
) -> Result<Prepared, Response<ProxyBody>> {
    let version = req.version();
    let upgrade = version == Version::HTTP_11 && wants_upgrade(req.headers());
    let downstream = Downstream {
        version,
        edge: edge.clone(),
        upgrade: upgrade.then(|| hyper::upgrade::on(&mut req)),
    };
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    add_forwarded(&mut parts.headers, conn.peer.ip());
    if listener.tls.as_ref().is_some_and(|t| t.is_mesh()) {
        // Only the mesh's own TLS may tell the app who is calling.
        set_client_identity(&mut parts.headers, conn.peer_id.as_deref());
    }
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
    let mut meter = Meter::new(
        &listener.stats,
        &cluster.stats,
        stats::Direction::Request,
        Some(&edge),
    );
    meter.record = record_bytes;
    let mut body = ProxyBody::streamed(Inner::Left(body), meter, None);
    if !body.is_end_stream() {
        let checks = Inbound::new(
            route.max_request_bytes,
            listener.limits.body_timeout,
            listener.stats.clone(),
        );
        body = body.checked(checks);
    }
    Ok(Prepared {
        request: Request::from_parts(parts, body),
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
/// route's response edits. `held` (the active-request guards) lives as long
/// as the body or the tunnel.
async fn finish(
    listener: &Arc<Listener>,
    route: &Route<Arc<Cluster>>,
    cluster: &Arc<Cluster>,
    conn: &ConnInfo,
    downstream: Downstream,
    mut resp: Response<Inner>,
    held: ActiveGuards,
) -> Response<ProxyBody> {
    let edge = &downstream.edge;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(down) = downstream.upgrade {
            let up = hyper::upgrade::on(&mut resp);
            let abort = conn.drain.abort.clone();
            let tunnel = tunnel(
                down,
                up,
                listener.clone(),
                cluster.clone(),
                edge.clone(),
                abort,
                held,
            );
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
    let meter = Meter::new(
        &listener.stats,
        &cluster.stats,
        stats::Direction::Response,
        Some(edge),
    );
    let body = ProxyBody::streamed(body, meter, Some(Box::new(held)))
        .prefetch()
        .await;
    Response::from_parts(parts, body)
}

/// An upgraded connection (WebSocket) with no byte either way for this long
/// is closed: a TCP listener's default, not the keep-alive idle of HTTP.
pub(super) const TUNNEL_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

/// After a 101, the two upgraded connections are joined byte for byte; the
/// request stays "active" (for stats and least_request) while the tunnel lives.
async fn tunnel(
    down: hyper::upgrade::OnUpgrade,
    up: hyper::upgrade::OnUpgrade,
    listener: Arc<Listener>,
    cluster: Arc<Cluster>,
    edge: Arc<EdgeStats>,
    abort: tokio_util::sync::CancellationToken,
    _guards: impl Send,
) {
    match tokio::try_join!(down, up) {
        Ok((down, up)) => {
            let joined = join_streams(
                TokioIo::new(down),
                TokioIo::new(up),
                (&listener.stats, &cluster.stats),
                Some(&edge),
                TUNNEL_IDLE,
                &abort,
            );
            if let Err(e) = joined.await {
                tracing::debug!("tunnel ended: {e}");
            }
        }
        Err(e) => tracing::debug!("upgrade failed: {e}"),
    }
}
