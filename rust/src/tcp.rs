//! L4 forwarding: one upstream connection per downstream connection, bytes
//! copied both ways; a FIN on one side is passed on as a FIN on the other.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::balance::hash_bytes;
use crate::cluster::Cluster;
use crate::config::LbPolicy;
use crate::io::join_streams;
use crate::snapshot::{Listener, Role};
use crate::stats::{Active, ClusterStats};

/// Counts a cluster connection as active for its lifetime.
struct ActiveConnection(Arc<ClusterStats>);

impl ActiveConnection {
    fn enter(stats: &Arc<ClusterStats>) -> Self {
        stats.connections.inc();
        stats.active_connections.inc();
        ActiveConnection(stats.clone())
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.active_connections.dec();
    }
}

/// The hash key of a connection (ring_hash): its client address.
pub fn client_hash(cluster: &Cluster, peer: SocketAddr) -> Option<u64> {
    (cluster.spec.lb == LbPolicy::RingHash).then(|| hash_bytes(peer.ip().to_string().as_bytes()))
}

pub async fn forward(
    inbound: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    abort: CancellationToken,
) {
    let Role::Tcp { cluster } = &listener.role else {
        return;
    };
    let _conn = Active::enter(&listener.stats);
    listener.stats.connections.inc();
    let Some(ep) = cluster.pick(client_hash(cluster, peer)) else {
        cluster.stats.no_healthy_endpoint.inc();
        tracing::debug!(listener = %listener.name, cluster = %cluster.name, "no healthy endpoint; closing");
        return;
    };
    ep.stats.requests.inc();
    let _ep_active = Active::enter(&ep.stats);
    let _cluster_active = ActiveConnection::enter(&cluster.stats);
    let connect = tokio::time::timeout(
        cluster.spec.connect_timeout,
        TcpStream::connect(ep.address.as_str()),
    );
    let upstream = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            cluster.report_connect_failure(ep);
            tracing::debug!(cluster = %cluster.name, endpoint = %ep.address, "connect failed: {e}");
            return;
        }
        Err(_) => {
            cluster.report_connect_failure(ep);
            return;
        }
    };
    cluster.report_success(ep);
    let _ = upstream.set_nodelay(true);
    if let Err(e) = join_streams(inbound, upstream, &listener.stats, &cluster.stats, &abort).await {
        tracing::debug!(listener = %listener.name, "connection ended: {e}");
    }
}
