//! L4 forwarding: one upstream connection per downstream connection, to a
//! cluster chosen by weight; bytes copied both ways; a FIN on one side is
//! passed on as a FIN on the other. A listener's rate limit counts new
//! connections (over it, the connection closes) and its fault delays or
//! resets a share of them.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use tokio_util::sync::CancellationToken;

use crate::cluster::{self, Retry};
use crate::config::RetryPolicy;
use crate::egress;
use crate::http::server::source_of;
use crate::io::{join_streams, Stream};
use crate::pki::SpiffeId;
use crate::policy::fault;
use crate::shared::Shared;
use crate::snapshot::{Listener, Role};
use crate::stats::{Active, EgressResult};
use crate::telemetry::edges::{Outcome, NO_GRPC};
use crate::telemetry::exchange::{Exchange, Sinks};
use crate::telemetry::flags;

/// The policy a TCP connection's connect failures get (a route's default),
/// built once rather than per connection.
static DEFAULT_RETRY: LazyLock<RetryPolicy> = LazyLock::new(RetryPolicy::default);

/// `original`: the connection's original destination, when a transparent
/// listener handed it over (what an original_destination cluster connects to).
pub async fn forward(
    inbound: Stream,
    (peer, original): (SocketAddr, Option<SocketAddr>),
    peer_id: Option<Arc<SpiffeId>>,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    abort: CancellationToken,
) {
    let Role::Tcp { backends } = &listener.role else {
        return;
    };
    // One line per connection when the listener logs (TCP has no spans).
    let mut record = listener.access_log.clone().map(|log| {
        Exchange::connection(
            Sinks {
                log: Some(log),
                ..Sinks::default()
            },
            listener.direction,
            listener.label.clone(),
            peer,
            peer_id.clone(),
        )
    });
    let mut flags = 0;
    let finish = |record: Option<Box<Exchange>>, flags: u16| {
        if let Some(mut x) = record {
            x.flags |= flags;
            x.finish(true);
        }
    };
    if listener.deny {
        let what = format!("{peer} -> {} (deny listener)", listener.address);
        egress::count(&listener, EgressResult::Denied, &what);
        return finish(record, flags::DENIED);
    }
    if listener.authorize(peer_id.as_deref(), None, peer).is_some() {
        // Denied: counted and logged; the connection just closes.
        return finish(record, flags::DENIED);
    }
    if let Some(limiter) = &listener.rate_limit {
        if limiter.admit(peer_id.as_deref(), &listener.stats).is_err() {
            return finish(record, flags::RATE_LIMITED);
        }
    }
    if let Some(f) = &listener.fault {
        let injected = fault::inject(f, &listener.stats).await;
        if injected.delayed {
            flags |= flags::FAULT_DELAY;
        }
        // A tcp listener's abort is always a reset (the decoder allows nothing else).
        if injected.abort.is_some() {
            inbound.reset();
            return finish(record, flags | flags::FAULT_ABORT);
        }
    }
    let Some(cluster) = backends.pick() else {
        tracing::debug!(listener = %listener.name, "every backend has weight 0; closing");
        return finish(record, flags | flags::NO_HEALTHY_UPSTREAM);
    };
    let me = shared.snapshot.load().me.clone();
    let source = source_of(&listener, peer_id.as_deref(), &me);
    let edge = listener.unrouted.edge(
        &source,
        Arc::as_ptr(cluster) as usize,
        &shared.registry.edges,
        || {
            let verified = peer_id.is_some();
            listener.edge_labels(&source, verified, &me, &"".into(), Some(cluster), true)
        },
    );
    edge.opened.inc();
    let _edge_active = Active::enter(&edge, |e| &e.active);
    let closed = |failure: bool| {
        edge.outcomes.record(Outcome {
            code: 0,
            grpc: NO_GRPC,
            failure,
        });
    };
    if let Some(x) = &mut record {
        x.destination = edge.labels.destination.clone();
    }
    let hash = cluster.hash_key(None, peer.ip());
    let destination;
    let picked = if cluster.spec.original_destination {
        destination = original.and_then(|d| cluster.destination(&d.to_string()));
        destination.as_deref()
    } else {
        cluster.pick(hash)
    };
    let Some(mut ep) = picked else {
        cluster.stats.no_healthy_endpoint.inc();
        tracing::debug!(listener = %listener.name, cluster = %cluster.name, "no healthy endpoint; closing");
        closed(true);
        return finish(record, flags | flags::NO_HEALTHY_UPSTREAM);
    };
    let limit = cluster.spec.circuit_breakers.max_connections;
    let Some(_cluster_active) = Active::try_enter(&cluster.stats, |s| &s.active_connections, limit)
    else {
        cluster.stats.overflow.inc();
        tracing::debug!(cluster = %cluster.name, "max_connections reached; closing");
        closed(true);
        return finish(record, flags | flags::OVERFLOW);
    };
    cluster.stats.connections.inc();
    cluster.budget.deposit();
    // Nothing has been read from the client yet: a connect failure is retried on
    // another endpoint as an HTTP route's default policy would, within the budget.
    let policy = &*DEFAULT_RETRY;
    let mut retries = 0;
    let mut _retry_slot = None;
    let (upstream, _ep_active) = loop {
        ep.stats.requests.inc();
        let active = Active::enter(&ep.stats, |s| &s.active);
        let e = match ep.pool.connect_stream().await {
            Ok(s) => break (s, active),
            Err(e) => e,
        };
        cluster.report(ep, cluster::Outcome::ConnectFailure);
        tracing::debug!(cluster = %cluster.name, endpoint = %ep.address, "connect failed: {e}");
        match cluster.retry_endpoint(policy, &mut retries, hash, ep).await {
            Retry::Go(next, slot) => (ep, _retry_slot) = (next, Some(slot)),
            Retry::Stop | Retry::Overflow => {
                // Counted by the cluster.
                closed(true);
                return finish(record, flags | flags::UPSTREAM_FAILURE);
            }
        }
    };
    cluster.report(ep, cluster::Outcome::Answer(200));
    let joined = join_streams(
        inbound,
        upstream,
        (&listener.stats, &cluster.stats),
        Some(&edge),
        listener.limits.idle_timeout,
        &abort,
    );
    let (sent, received) = joined.await.unwrap_or_else(|e| {
        tracing::debug!(listener = %listener.name, "connection ended: {e}");
        (0, 0)
    });
    closed(false);
    if let Some(x) = &mut record {
        x.upstream = Some(ep.address.clone());
        x.retries = retries;
        x.request_bytes
            .store(sent, std::sync::atomic::Ordering::Relaxed);
        x.response_bytes = received;
        x.flags |= flags;
    }
    finish(record, 0);
}
