//! Sockets and accept loops. A bound socket keeps its [`ListenerId`] across
//! config updates; each accepted connection is dispatched by what the
//! current snapshot says that listener is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::Shared;
use crate::http;
use crate::io::Stream;
use crate::snapshot::{Listener, ListenerId, Role};
use crate::tcp;

/// Lets a listener stop accepting, ask its connections to finish, and at
/// last cut them off.
#[derive(Clone, Default)]
pub struct Drain {
    /// Stop accepting; HTTP connections close once their requests finish.
    pub stop: CancellationToken,
    /// Cut everything still open.
    pub abort: CancellationToken,
    /// Every task of the listener: its accept loop and connections.
    pub tracker: TaskTracker,
}

impl Drain {
    /// Stops accepting and waits for connections up to `grace`, then aborts them.
    pub async fn drain(&self, grace: Duration) {
        drain_all(std::slice::from_ref(self), grace).await;
    }
}

/// Drains several listeners at once, under one deadline.
pub async fn drain_all(drains: &[Drain], grace: Duration) {
    for d in drains {
        d.stop.cancel();
        d.tracker.close();
    }
    let wait_all = || async {
        for d in drains {
            d.tracker.wait().await;
        }
    };
    if tokio::time::timeout(grace, wait_all()).await.is_err() {
        for d in drains {
            d.abort.cancel();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), wait_all()).await;
    }
}

/// Binds with SO_REUSEADDR (quick rebinds after a restart) and a deep backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

pub async fn accept_loop(listener: TcpListener, id: ListenerId, shared: Arc<Shared>, drain: Drain) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(l) = shared.snapshot.load().listeners.get(&id).cloned() else {
            continue;
        };
        drain.tracker.spawn(connection(
            stream,
            peer,
            id,
            l,
            shared.clone(),
            drain.clone(),
        ));
    }
}

/// One accepted connection: its TLS handshake when the listener has TLS,
/// then HTTP or TCP as the listener says.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    id: ListenerId,
    l: Arc<Listener>,
    shared: Arc<Shared>,
    drain: Drain,
) {
    let (stream, peer_id) = match &l.tls {
        None => (Stream::Plain(tcp), None),
        Some(tls) => {
            let accepted = tokio::select! {
                a = tls.accept(tcp, &l.stats) => a,
                _ = drain.abort.cancelled() => None,
            };
            match accepted {
                Some(a) => (a.stream, a.peer),
                None => return,
            }
        }
    };
    match &l.role {
        Role::Tcp { .. } => tcp::forward(stream, peer, peer_id, l, drain.abort.clone()).await,
        Role::Http { .. } | Role::Admin => {
            http::server::serve(stream, peer, peer_id, id, l, shared, drain).await;
        }
    }
}
