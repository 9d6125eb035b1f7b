//! One accepted HTTP connection: HTTP/1.1 or HTTP/2 (prior knowledge, so
//! gRPC works), served by hyper until it ends or the listener drains.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{admin, proxy};
use crate::drain::Drain;
use crate::io::Stream;
use crate::pki::SpiffeId;
use crate::shared::Shared;
use crate::snapshot::{Listener, ListenerId, Role};
use crate::stats::Active;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

fn builder() -> &'static auto::Builder<TokioExecutor> {
    static BUILDER: OnceLock<auto::Builder<TokioExecutor>> = OnceLock::new();
    BUILDER.get_or_init(|| {
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .keep_alive(true);
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(1024)
            .keep_alive_interval(Duration::from_secs(30));
        b
    })
}

/// What a request handler knows about its connection.
pub struct ConnInfo {
    pub listener: ListenerId,
    pub peer: SocketAddr,
    /// The peer's verified SPIFFE ID (mesh mTLS listeners only).
    pub peer_id: Option<Arc<SpiffeId>>,
    /// Who is calling, for metrics: an outbound listener's own service, or
    /// the peer's service ("namespace/name"; "" when not a mesh peer).
    pub source: Arc<str>,
    pub drain: Drain,
}

/// The metrics source of a connection to `listener` (see `ConnInfo::source`).
pub fn source_of(listener: &Listener, peer_id: Option<&SpiffeId>, me: &Arc<str>) -> Arc<str> {
    match listener.direction {
        crate::config::Direction::Outbound => me.clone(),
        _ => match peer_id.and_then(|p| Some((p.namespace()?, p.service()?))) {
            Some((ns, svc)) => format!("{ns}/{svc}").into(),
            None => "".into(),
        },
    }
}

pub async fn serve(
    stream: Stream,
    peer: SocketAddr,
    peer_id: Option<Arc<SpiffeId>>,
    id: ListenerId,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    drain: Drain,
) {
    let _active = Active::enter(&listener.stats, |s| &s.active_connections);
    listener.stats.connections.inc();
    let is_admin = matches!(listener.role, Role::Admin);
    let source = source_of(&listener, peer_id.as_deref(), &shared.snapshot.load().me);
    let info = Arc::new(ConnInfo {
        listener: id,
        peer,
        peer_id,
        source,
        drain: drain.clone(),
    });
    let service = service_fn(move |req| {
        let shared = shared.clone();
        let info = info.clone();
        async move {
            let resp = if is_admin {
                admin::handle(&shared, req)
            } else {
                proxy::handle(&shared, &info, req).await
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = builder().serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, "connection ended with error: {e}");
            }
            return;
        }
        _ = drain.stop.cancelled() => {}
    }
    // Draining: finish the requests in flight, then close.
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = drain.abort.cancelled() => {}
    }
}
