//! Upstream connections per endpoint and per worker thread. HTTP/1.1
//! connections are checked out for one exchange (our own client, in the
//! request's task) and come back when the response body ends; an HTTP/2
//! connection is shared by every request of its worker. A worker only
//! touches its own slot, so the slot locks are never contended.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::body::{BoxError, Inner, ProxyBody};
use super::h1::{self, Conn};
use super::headers::wants_upgrade;
use crate::config::{CircuitBreakers, ClusterConfig, UpstreamProtocol};
use crate::dns::Resolver;
use crate::io::Stream;
use crate::stats::{Active, ClusterStats, TlsFailure};
use crate::tls::client::ClientTls;

/// Held by an open upstream connection: one of the cluster's active ones.
type OpenConnection = Active<ClusterStats>;

/// Idle HTTP/1.1 connections older than this are closed rather than reused:
/// servers close idle connections too, and a request must not race that.
const MAX_IDLE: Duration = Duration::from_secs(50);
const MAX_IDLE_PER_SLOT: usize = 1024;

pub enum SendError {
    /// No connection could be made: nothing was sent, and the request is
    /// handed back (once `send` has it) so that it may go elsewhere.
    Connect(String, Option<Unsent>),
    /// As `Connect`, because the endpoint's host name did not resolve.
    Unresolved(String, Option<Unsent>),
    /// A new connection was needed and a circuit breaker (the named limit)
    /// refused it: nothing was sent.
    Overflow(&'static str),
    /// The exchange failed after the request went out (or may have).
    Upstream(BoxError),
}

/// A request that never left, body untouched.
pub type Unsent = Box<http::Request<ProxyBody>>;

impl SendError {
    fn unsent(self, req: http::Request<ProxyBody>) -> SendError {
        match self {
            SendError::Connect(why, _) => SendError::Connect(why, Some(Box::new(req))),
            SendError::Unresolved(why, _) => SendError::Unresolved(why, Some(Box::new(req))),
            other => other,
        }
    }
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

impl Idle {
    fn expired(&self) -> bool {
        self.since.elapsed() > MAX_IDLE
    }
}

#[derive(Default)]
struct Slot {
    /// Oldest first: taken from the back (the newest, likeliest still open).
    http1: VecDeque<Idle>,
    http2: Option<http2::SendRequest<ProxyBody>>,
}

pub struct Pool {
    address: String,
    connect_timeout: Duration,
    /// Resolves the endpoint's host name (cached for `dns_refresh`).
    resolver: Arc<Resolver>,
    dns_refresh: Duration,
    /// Mesh mTLS to the endpoint, when the cluster asks for it.
    tls: Option<Arc<ClientTls>>,
    slots: Vec<Mutex<Slot>>,
    /// The cluster's: its connection and pending-request gauges are shared
    /// by every endpoint's pool, so its limits hold for the whole cluster.
    stats: Arc<ClusterStats>,
    limits: CircuitBreakers,
}

/// Where an HTTP/1.1 connection goes back when its exchange is over.
pub struct Home {
    pool: Arc<Pool>,
    slot: usize,
}

// === impl Home ===

impl Home {
    /// (Closed and expired connections at the bottom of a slot are left to
    /// the cluster's sweeps, not looked for on every check-in.)
    pub fn put(self, conn: Box<Conn>) {
        let mut slot = self.pool.slot(self.slot);
        if slot.http1.len() < MAX_IDLE_PER_SLOT {
            slot.http1.push_back(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

// === impl Pool ===

impl Pool {
    pub fn new(
        address: &str,
        spec: &ClusterConfig,
        tls: Option<Arc<ClientTls>>,
        stats: Arc<ClusterStats>,
        resolver: Arc<Resolver>,
        workers: usize,
    ) -> Self {
        Pool {
            address: address.to_string(),
            connect_timeout: spec.connect_timeout,
            resolver,
            dns_refresh: spec.dns_refresh,
            tls,
            slots: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
            stats,
            limits: spec.circuit_breakers,
        }
    }

    fn slot_index(&self) -> usize {
        crate::worker::index() % self.slots.len()
    }

    fn slot(&self, index: usize) -> std::sync::MutexGuard<'_, Slot> {
        self.slots[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the idle HTTP/1.1 connections that expired or that their
    /// upstream closed, in every slot: now and then (the cluster's sweeps),
    /// and before a circuit breaker refuses a connection that the dead
    /// ones count against.
    pub fn sweep(&self) {
        for index in 0..self.slots.len() {
            self.slot(index)
                .http1
                .retain_mut(|idle| !idle.expired() && idle.conn.still_usable());
        }
    }

    /// A new connection to the endpoint, TLS included when configured (the
    /// handshake counts against the connect timeout too).
    pub async fn connect_stream(&self) -> std::io::Result<Stream> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let tcp = self
            .resolver
            .connect(&self.address, self.connect_timeout, self.dns_refresh)
            .await?;
        let Some(tls) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let host = self
            .address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(h, _)| h);
        match tokio::time::timeout_at(deadline, tls.connect(host, tcp)).await {
            Ok(Ok(s)) => Ok(Stream::ClientTls(Box::new(s))),
            Ok(Err(e)) => {
                self.stats.tls_failures.inc(crate::tls::failure_reason(&e));
                Err(std::io::Error::new(
                    e.kind(),
                    format!("mTLS handshake failed: {e}"),
                ))
            }
            Err(_) => {
                self.stats.tls_failures.inc(TlsFailure::Timeout);
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "mTLS handshake timed out",
                ))
            }
        }
    }

    /// A new HTTP connection within the cluster's circuit breakers: the
    /// request waits for it as a pending request, and the connection holds
    /// the returned guard for as long as it is open.
    async fn connect(&self) -> Result<(Stream, OpenConnection), SendError> {
        let limits = &self.limits;
        let _pending = Active::try_enter(
            &self.stats,
            |s| &s.pending_requests,
            limits.max_pending_requests,
        )
        .ok_or(SendError::Overflow("max_pending_requests"))?;
        let enter = || {
            Active::try_enter(
                &self.stats,
                |s| &s.active_connections,
                limits.max_connections,
            )
        };
        let open = enter()
            .or_else(|| {
                self.sweep();
                enter()
            })
            .ok_or(SendError::Overflow("max_connections"))?;
        let stream = self.connect_stream().await.map_err(|e| {
            if crate::dns::is_unresolved(&e) {
                SendError::Unresolved(e.to_string(), None)
            } else {
                SendError::Connect(e.to_string(), None)
            }
        })?;
        self.stats.connections.inc();
        Ok((stream, open))
    }

    /// A connection through hyper's client, for a request that may switch
    /// protocols (the upgraded connection leaves the pool for good).
    async fn connect_upgradable(&self) -> Result<http1::SendRequest<ProxyBody>, SendError> {
        let (io, open) = self.connect().await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| SendError::Connect(e.to_string(), None))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection ended: {e}");
            }
            drop(open);
        });
        Ok(sender)
    }

    async fn connect_http2(&self) -> Result<http2::SendRequest<ProxyBody>, SendError> {
        let (io, open) = self.connect().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| SendError::Connect(e.to_string(), None))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream h2 connection ended: {e}");
            }
            drop(open);
        });
        Ok(sender)
    }

    /// An idle HTTP/1.1 connection of this worker that can take a request
    /// (the newest first: the likeliest to be warm and still open).
    async fn idle_http1(&self, slot: usize) -> Option<Box<Conn>> {
        std::future::poll_fn(|cx| {
            let mut s = self.slot(slot);
            while let Some(idle) = s.http1.pop_back() {
                if idle.expired() {
                    continue;
                }
                let mut conn = idle.conn;
                if conn.usable(cx) {
                    return std::task::Poll::Ready(Some(conn));
                }
            }
            std::task::Poll::Ready(None)
        })
        .await
    }

    /// Sends `req` upstream; the response, its body streaming from the
    /// connection (which goes back to the pool when the body is done).
    pub async fn send(
        self: &Arc<Self>,
        req: http::Request<ProxyBody>,
        protocol: UpstreamProtocol,
    ) -> Result<Response<Inner>, SendError> {
        match protocol {
            UpstreamProtocol::Http1 if upgradable(&req) => self.send_upgradable(req).await,
            UpstreamProtocol::Http1 => self.send_http1(req).await,
            UpstreamProtocol::Http2 => self.send_http2(req).await.map(|r| r.map(Inner::Left)),
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        req: http::Request<ProxyBody>,
    ) -> Result<Response<Inner>, SendError> {
        let slot = self.slot_index();
        let conn = match self.idle_http1(slot).await {
            Some(conn) => conn,
            // Boxed: a new connection is the cold path, and its handshake
            // futures would otherwise swell every request's future.
            None => match Box::pin(self.connect()).await {
                Ok((io, open)) => Conn::new(io, open),
                Err(e) => return Err(e.unsent(req)),
            },
        };
        let home = Home {
            pool: self.clone(),
            slot,
        };
        match h1::send(conn, req, home).await {
            Ok(resp) => Ok(resp.map(Inner::Right)),
            Err(e) => Err(SendError::Upstream(e)),
        }
    }

    async fn send_upgradable(
        &self,
        req: http::Request<ProxyBody>,
    ) -> Result<Response<Inner>, SendError> {
        let mut sender = match Box::pin(self.connect_upgradable()).await {
            Ok(sender) => sender,
            Err(e) => return Err(e.unsent(req)),
        };
        match sender.send_request(req).await {
            Ok(resp) => Ok(resp.map(Inner::Left)),
            Err(e) => Err(SendError::Upstream(e.into())),
        }
    }

    async fn send_http2(
        &self,
        req: http::Request<ProxyBody>,
    ) -> Result<Response<hyper::body::Incoming>, SendError> {
        let slot = self.slot_index();
        let shared = self
            .slot(slot)
            .http2
            .as_ref()
            .filter(|h| !h.is_closed())
            .cloned();
        let mut req = req;
        if let Some(mut sender) = shared {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(req).await {
                    Ok(resp) => return Ok(resp),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(SendError::Upstream(e.into_error().into())),
                    },
                }
            }
        }
        let mut sender = match Box::pin(self.connect_http2()).await {
            Ok(sender) => sender,
            Err(e) => return Err(e.unsent(req)),
        };
        self.slot(slot).http2 = Some(sender.clone());
        let upstream = |e: hyper::Error| SendError::Upstream(e.into());
        sender.ready().await.map_err(upstream)?;
        sender.send_request(req).await.map_err(upstream)
    }
}

/// True for a request that may switch protocols on its connection: an
/// upgrade (WebSocket) or a CONNECT.
fn upgradable<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::CONNECT || wants_upgrade(req.headers())
}
