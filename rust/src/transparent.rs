//! Transparent listeners: connections redirected to the proxy by iptables
//! (REDIRECT keeps the original destination in conntrack, read back with
//! SO_ORIGINAL_DST). Each is served by the listener, bound or not, whose
//! address is its original destination, exactly as if it had connected
//! there; with no such listener the transparent listener's egress policy
//! decides: `allow_any` copies bytes to the original destination, else the
//! connection is closed (counted denied).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::drain::Drain;
use crate::egress;
use crate::io::join_streams;
use crate::listener;
use crate::shared::Shared;
use crate::snapshot::{Listener, Role};
use crate::stats::{Active, EgressResult, Refusal};
use crate::telemetry::exchange::{Exchange, Sinks};
use crate::telemetry::flags;

/// The destination the client connected to before REDIRECT (IPv4, or IPv6
/// through IP6T_SO_ORIGINAL_DST); the socket's own address when it was not
/// redirected.
#[cfg(target_os = "linux")]
pub fn original_dst(tcp: &tokio::net::TcpStream) -> std::io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(tcp);
    let local = tcp.local_addr()?;
    let addr = if local.is_ipv4() {
        sock.original_dst_v4()?
    } else {
        sock.original_dst_v6()?
    };
    addr.as_socket()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an IP address"))
}

#[cfg(not(target_os = "linux"))]
pub fn original_dst(_tcp: &tokio::net::TcpStream) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "SO_ORIGINAL_DST is Linux only",
    ))
}

/// Serves one connection accepted by transparent listener `l`.
pub async fn serve(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    l: Arc<Listener>,
    shared: Arc<Shared>,
    drain: Drain,
) {
    let dst = match original_dst(&tcp) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(listener = %l.name, %peer, "no original destination: {e}; closing");
            return;
        }
    };
    // Not redirected (a direct connection), or redirected to itself: no loop.
    if dst == l.address || tcp.local_addr().is_ok_and(|a| a == dst) {
        tracing::debug!(listener = %l.name, %peer, "original destination is the listener itself; closing");
        return;
    }
    let snapshot = shared.snapshot.load_full();
    let target = snapshot
        .by_address
        .get(&dst)
        .and_then(|id| Some((*id, snapshot.listeners.get(id)?.clone())))
        .filter(|(_, t)| !matches!(t.role, Role::Transparent | Role::Admin));
    drop(snapshot);
    let Some((id, target)) = target else {
        return unclaimed(tcp, peer, dst, &l, drain).await;
    };
    // Counted on the listener that serves it, within its limits, as at accept.
    let Some(_open) = Active::try_enter(
        &target.stats,
        |s| &s.active_connections,
        target.limits.max_connections,
    ) else {
        target.stats.refusals.inc(Refusal::MaxConnections);
        tracing::debug!(listener = %target.name, %peer, "max_connections reached; closing");
        return;
    };
    target.stats.connections.inc();
    listener::serve(tcp, peer, (id, target), shared, drain, Some(dst)).await
}

/// No listener has `dst`: passthrough under `allow_any`, else closed.
async fn unclaimed(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    l: &Listener,
    drain: Drain,
) {
    let mut record = l.access_log.clone().map(|log| {
        let sinks = Sinks {
            log: Some(log),
            ..Sinks::default()
        };
        Exchange::connection(sinks, l.direction, l.label.clone(), peer, None)
    });
    if let Some(x) = &mut record {
        x.upstream = Some(dst.to_string());
    }
    let finish = |record: Option<Box<Exchange>>, flags: u16| {
        if let Some(mut x) = record {
            x.flags |= flags;
            x.finish(true);
        }
    };
    let allowed = l
        .egress
        .as_ref()
        .filter(|e| e.policy == crate::config::EgressPolicy::AllowAny);
    let Some(egress) = allowed else {
        egress::count(
            l,
            EgressResult::Denied,
            &format!("{peer} -> {dst} (no listener)"),
        );
        return finish(record, flags::DENIED);
    };
    let Some(cluster) = egress.route.backends.first() else {
        return finish(record, flags::NO_HEALTHY_UPSTREAM);
    };
    let Some(ep) = cluster.destination(&dst.to_string()) else {
        return finish(record, flags::NO_HEALTHY_UPSTREAM);
    };
    let upstream = match ep.pool.connect_stream().await {
        Ok(s) => s,
        Err(e) => {
            cluster.stats.connect_failures.inc();
            tracing::debug!(listener = %l.name, %dst, "passthrough connect failed: {e}");
            return finish(record, flags::UPSTREAM_FAILURE);
        }
    };
    egress::count(l, EgressResult::Passthrough, &format!("{peer} -> {dst}"));
    let _active = Active::enter(&cluster.stats, |s| &s.active_connections);
    cluster.stats.connections.inc();
    let joined = join_streams(
        tcp,
        upstream,
        (&l.stats, &cluster.stats),
        None,
        l.limits.idle_timeout,
        &drain.abort,
    );
    let (sent, received) = joined.await.unwrap_or_else(|e| {
        tracing::debug!(listener = %l.name, "passthrough ended: {e}");
        (0, 0)
    });
    if let Some(x) = &mut record {
        x.request_bytes
            .store(sent, std::sync::atomic::Ordering::Relaxed);
        x.response_bytes = received;
    }
    finish(record, 0);
}
