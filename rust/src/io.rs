//! Byte streams that count what they read, so that long-lived tunnels and
//! TCP connections show their traffic in stats while they run.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::stats::{ClusterStats, ListenerStats, Meter, Refusal};
use crate::telemetry::edges::EdgeStats;

/// Per-direction copy buffer: large enough that bulk transfers are not
/// syscall-bound (tokio defaults to 8 KiB).
const COPY_BUFFER: usize = 64 * 1024;

/// When bytes last moved either way through a pair of joined streams.
pub struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Relaxed);
    }

    /// Ready once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.epoch + Duration::from_millis(self.last_ms.load(Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

pub struct Metered<'a, T> {
    inner: T,
    meter: Meter,
    activity: &'a Activity,
}

impl<'a, T> Metered<'a, T> {
    /// Counts every byte read from `inner` with `meter`.
    pub fn new(inner: T, meter: Meter, activity: &'a Activity) -> Self {
        Metered {
            inner,
            meter,
            activity,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let n = buf.filled().len() - before;
            if n > 0 {
                this.meter.record(n as u64);
                this.activity.touch();
            }
        }
        res
    }
}

/// The writing calls of a wrapper that changes only how it reads (or shuts
/// down): each goes straight to the wrapped stream in `self.$field`.
macro_rules! forward_writes {
    ($field:ident) => {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            data: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.get_mut().$field).poll_write(cx, data)
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().$field).poll_flush(cx)
        }

        fn poll_write_vectored(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.get_mut().$field).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.$field.is_write_vectored()
        }
    };
}
pub(crate) use forward_writes;

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<'_, T> {
    forward_writes!(inner);

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Connects to `addr` (host:port) within `timeout`, with TCP_NODELAY set;
/// a host name goes through the process-wide cache, refreshed every
/// `dns::DEFAULT_REFRESH` (an engine's clusters use its own cache, see
/// `dns::Resolver::connect`).
pub async fn connect(
    addr: &str,
    timeout: std::time::Duration,
) -> io::Result<tokio::net::TcpStream> {
    crate::dns::Resolver::global()
        .connect(addr, timeout, crate::dns::DEFAULT_REFRESH)
        .await
}

/// Copies both ways between a downstream and an upstream stream, counting
/// bytes as they pass, until both sides are done, nothing has moved for
/// `idle` (counted on the listener), or `abort` fires.
pub async fn join_streams<D, U>(
    down: D,
    up: U,
    stats: (&Arc<ListenerStats>, &Arc<ClusterStats>),
    edge: Option<&Arc<EdgeStats>>,
    idle: Duration,
    abort: &tokio_util::sync::CancellationToken,
) -> io::Result<(u64, u64)>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (listener, cluster) = stats;
    let activity = Activity::new();
    let meter = |direction| Meter::new(listener, cluster, direction, edge);
    let mut down = Metered::new(down, meter(crate::stats::Direction::Request), &activity);
    let mut up = Metered::new(up, meter(crate::stats::Direction::Response), &activity);
    tokio::select! {
        res = tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, COPY_BUFFER, COPY_BUFFER) => res,
        _ = activity.idle_for(idle) => {
            listener.refusals.inc(Refusal::IdleTimeout);
            Ok((0, 0))
        }
        _ = abort.cancelled() => Ok((0, 0)),
    }
}

/// A connection as the proxy carries it: plain TCP, or TLS as the server
/// (inbound, edge) or as the client (to a peer sidecar).
pub enum Stream {
    Plain(tokio::net::TcpStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

/// Calls the same method on whichever stream is inside.
macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $call
            }
            Stream::ServerTls($s) => {
                let $s = Pin::new($s.as_mut());
                $call
            }
            Stream::ClientTls($s) => {
                let $s = Pin::new($s.as_mut());
                $call
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, data))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::ServerTls(s) => s.is_write_vectored(),
            Stream::ClientTls(s) => s.is_write_vectored(),
        }
    }
}

// === impl Stream ===

impl Stream {
    /// Closes with a TCP reset instead of a FIN (zero linger), as an
    /// injected fault: the peer sees the connection fail, not end.
    pub fn reset(self) {
        let tcp = match &self {
            Stream::Plain(s) => s,
            Stream::ServerTls(s) => s.get_ref().0,
            Stream::ClientTls(s) => s.get_ref().0,
        };
        if let Err(e) = socket2::SockRef::from(tcp).set_linger(Some(std::time::Duration::ZERO)) {
            tracing::debug!("cannot set a zero linger: {e}");
        }
        drop(self);
    }
}
