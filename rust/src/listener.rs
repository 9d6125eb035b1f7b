//! Sockets and accept loops. A bound socket keeps its [`ListenerId`] across
//! config updates; each accepted connection is dispatched by what the
//! current snapshot says that listener is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio::runtime::Handle;

use crate::drain::Drain;
use crate::http;
use crate::io::Stream;
use crate::shared::Shared;
use crate::snapshot::{Listener, ListenerId, Role};
use crate::stats::{Active, ListenerStats, Refusal, WorkerLoad};
use crate::tcp;
use crate::transparent;

/// Binds with SO_REUSEADDR (quick rebinds after a restart) and a deep backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Accepts on `listener` (on worker 0) and gives each connection to the
/// worker with the fewest open (`workers`, in worker order), where it stays:
/// its TLS, requests and upstream connections run there. The kernel's own
/// spreading (every worker waiting on the socket) was tried: the first
/// worker woke first and took every connection while it was not busy.
pub async fn accept_loop(
    listener: TcpListener,
    id: ListenerId,
    shared: Arc<Shared>,
    drain: Drain,
    workers: Arc<[Handle]>,
) {
    let loads = shared.registry.workers.loads(workers.len());
    let here = crate::worker::index();
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
        // Counted from accept (handshakes included), so that the limit
        // bounds what the listener holds, not only what it serves.
        let Some(open) = Active::try_enter(
            &l.stats,
            |s| &s.active_connections,
            l.limits.max_connections,
        ) else {
            l.stats.refusals.inc(Refusal::MaxConnections);
            tracing::debug!(listener = %l.name, %peer, "max_connections reached; closing");
            continue;
        };
        l.stats.connections.inc();
        let (worker, load) = (loads.iter().enumerate())
            .min_by_key(|(_, w)| w.active.get())
            .expect("a worker at least");
        load.accepted.inc();
        let opened = Opened {
            id,
            listener: l,
            open,
            on_worker: Active::enter(load, |w| &w.active),
        };
        let (shared, d) = (shared.clone(), drain.clone());
        if worker == here {
            drain
                .tracker
                .spawn(connection(stream, peer, opened, shared, d));
            continue;
        }
        // To another worker: its own runtime watches the socket from now on.
        let moved = match stream.into_std() {
            Ok(moved) => moved,
            Err(e) => {
                tracing::warn!(%peer, "handing a connection to worker {worker} failed: {e}");
                continue;
            }
        };
        let adopted = async move {
            match tokio::net::TcpStream::from_std(moved) {
                Ok(stream) => connection(stream, peer, opened, shared, d).await,
                Err(e) => tracing::warn!(%peer, "worker {worker} could not take a connection: {e}"),
            }
        };
        drain.tracker.spawn_on(adopted, &workers[worker]);
    }
}

/// An accepted connection's place: its listener, and what counts it open
/// (on the listener and on its worker) until it ends.
struct Opened {
    id: ListenerId,
    listener: Arc<Listener>,
    open: Active<ListenerStats>,
    on_worker: Active<WorkerLoad>,
}

/// One accepted connection. A transparent listener hands it to the listener
/// of its original destination (or its egress policy); any other serves it.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    opened: Opened,
    shared: Arc<Shared>,
    drain: Drain,
) {
    let Opened {
        id,
        listener: l,
        open: _open,
        on_worker: _on_worker,
    } = opened;
    if matches!(l.role, Role::Transparent) {
        transparent::serve(tcp, peer, l, shared, drain).await
    } else {
        serve(tcp, peer, (id, l), shared, drain, None).await
    }
}

/// A connection as listener `l` serves it: its TLS handshake when the
/// listener has TLS, then HTTP or TCP as the listener says. `original`: the
/// connection's original destination, when a transparent listener handed it over.
pub async fn serve(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    (id, l): (ListenerId, Arc<Listener>),
    shared: Arc<Shared>,
    drain: Drain,
    original: Option<SocketAddr>,
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
        Role::Tcp { .. } => {
            let abort = drain.abort.clone();
            tcp::forward(stream, (peer, original), peer_id, l, shared, abort).await
        }
        Role::Http { .. } | Role::Admin => {
            http::server::serve(stream, peer, peer_id, id, l, shared, drain).await;
        }
        // Handed over only to listeners that serve connections themselves.
        Role::Transparent => {}
    }
}
