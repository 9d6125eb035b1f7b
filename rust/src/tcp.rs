//! L4 forwarding: one upstream connection per downstream connection, to a
//! cluster chosen by weight; bytes copied both ways; a FIN on one side is
//! passed on as a FIN on the other. A listener's rate limit counts new
//! connections (over it, the connection closes) and its fault delays or
//! resets a share of them.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use tokio_util::sync::CancellationToken;

use crate::cluster::{Outcome, Retry};
use crate::config::RetryPolicy;
use crate::io::{join_streams, Stream};
use crate::pki::SpiffeId;
use crate::policy::fault;
use crate::snapshot::{Listener, Role};
use crate::stats::Active;

/// The policy a TCP connection's connect failures get (a route's default),
/// built once rather than per connection.
static DEFAULT_RETRY: LazyLock<RetryPolicy> = LazyLock::new(RetryPolicy::default);

pub async fn forward(
    inbound: Stream,
    peer: SocketAddr,
    peer_id: Option<Arc<SpiffeId>>,
    listener: Arc<Listener>,
    abort: CancellationToken,
) {
    let Role::Tcp { backends } = &listener.role else {
        return;
    };
    let _conn = Active::enter(&listener.stats, |s| &s.active_connections);
    listener.stats.connections.inc();
    if listener.authorize(peer_id.as_deref(), None, peer).is_some() {
        return; // denied: counted and logged; the connection just closes
    }
    if let Some(limiter) = &listener.rate_limit {
        if limiter.admit(peer_id.as_deref(), &listener.stats).is_err() {
            return; // refused: counted; the connection just closes
        }
    }
    if let Some(f) = &listener.fault {
        // A tcp listener's abort is always a reset (the decoder allows nothing else).
        if fault::inject(f, &listener.stats).await.is_some() {
            inbound.reset();
            return;
        }
    }
    let Some(cluster) = backends.pick() else {
        tracing::debug!(listener = %listener.name, "every backend has weight 0; closing");
        return;
    };
    let hash = cluster.hash_key(None, peer.ip());
    let Some(mut ep) = cluster.pick(hash) else {
        cluster.stats.no_healthy_endpoint.inc();
        tracing::debug!(listener = %listener.name, cluster = %cluster.name, "no healthy endpoint; closing");
        return;
    };
    let limit = cluster.spec.circuit_breakers.max_connections;
    let Some(_cluster_active) = Active::try_enter(&cluster.stats, |s| &s.active_connections, limit)
    else {
        cluster.stats.overflow.inc();
        tracing::debug!(cluster = %cluster.name, "max_connections reached; closing");
        return;
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
        cluster.report(ep, Outcome::ConnectFailure);
        tracing::debug!(cluster = %cluster.name, endpoint = %ep.address, "connect failed: {e}");
        match cluster.retry_endpoint(policy, &mut retries, hash, ep).await {
            Retry::Go(next, slot) => (ep, _retry_slot) = (next, Some(slot)),
            Retry::Stop | Retry::Overflow => return, // counted
        }
    };
    cluster.report(ep, Outcome::Answer(200));
    if let Err(e) = join_streams(inbound, upstream, &listener.stats, &cluster.stats, &abort).await {
        tracing::debug!(listener = %listener.name, "connection ended: {e}");
    }
}
