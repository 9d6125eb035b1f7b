//! One accepted HTTP connection: HTTP/1.1 or HTTP/2 (prior knowledge, so
//! gRPC works), served by hyper until it ends or the listener drains.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::guard::{ConnState, Guarded};
use super::{admin, cause, proxy};
use crate::config::ListenerLimits;
use crate::drain::Drain;
use crate::io::Stream;
use crate::pki::SpiffeId;
use crate::shared::Shared;
use crate::snapshot::{Listener, ListenerId, Role};
use crate::stats::Refusal;
use http::{Request, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

/// The hyper server settings of a listener, from its limits. hyper's own
/// head timeout is off: it would also cut idle keep-alive connections at the
/// head timeout, and the guard keeps the two apart.
pub fn builder(limits: &ListenerLimits) -> ServerBuilder {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_bytes)
        // Streams reset before we saw them, and streams we reset for the
        // client's errors (CVE-2023-44487, CVE-2025-8671): h2's GOAWAY past these.
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(256)
        .keep_alive_interval(Duration::from_secs(30));
    b
}

pub type ServerBuilder = auto::Builder<TokioExecutor>;

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
    /// Requests in flight on this connection, for its idle clock.
    pub state: Arc<ConnState>,
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
    let Some(server) = listener.server.clone() else {
        return;
    };
    let is_admin = matches!(listener.role, Role::Admin);
    let source = source_of(&listener, peer_id.as_deref(), &shared.snapshot.load().me);
    let state = ConnState::new();
    let info = Arc::new(ConnInfo {
        listener: id,
        peer,
        peer_id,
        source,
        drain: drain.clone(),
        state: state.clone(),
    });
    let max_resets = listener.limits.h2_max_resets;
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        let info = info.clone();
        async move {
            // An HTTP/2 stream whose future is dropped unanswered was reset by the client.
            let mut cancel = (req.version() == Version::HTTP_2).then(|| {
                info.state.opened();
                Cancelled(&info.state, max_resets)
            });
            let resp = if is_admin {
                admin::handle(&shared, req)
            } else {
                proxy::handle(&shared, &info, req).await
            };
            if let Some(c) = cancel.take() {
                std::mem::forget(c);
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let io = Guarded::new(
        stream,
        state.clone(),
        listener.stats.clone(),
        listener.limits,
    );
    let conn = server.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                refused(&listener, &*e);
                tracing::debug!(%peer, "connection ended with error: {e}");
            }
            return;
        }
        _ = drain.stop.cancelled() => {}
        abuse = state.close_wanted() => {
            if abuse {
                listener.stats.refusals.inc(Refusal::H2Abuse);
                tracing::debug!(%peer, "closing an HTTP/2 connection: too many streams reset");
            }
        }
    }
    // Draining: finish the requests in flight, then close.
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = drain.abort.cancelled() => {}
    }
}

/// Counts a stream cancellation when dropped (`forget` it once answered).
struct Cancelled<'a>(&'a ConnState, u32);

impl Drop for Cancelled<'_> {
    fn drop(&mut self) {
        self.0.cancelled(self.1);
    }
}

/// Counts what hyper or h2 refused by themselves (a head the guard let
/// through but hyper could not parse; an HTTP/2 peer h2 sent GOAWAY for).
fn refused(listener: &Listener, e: &(dyn std::error::Error + 'static)) {
    let why = match (cause::<hyper::Error>(e), cause::<h2::Error>(e)) {
        (Some(h), _) if h.is_parse_too_large() => Refusal::HeaderTooLarge,
        (Some(h), _) if h.is_parse() => Refusal::BadRequest,
        (_, Some(h2)) if h2.is_go_away() && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) => {
            Refusal::H2Abuse
        }
        _ => return,
    };
    listener.stats.refusals.inc(why);
}
