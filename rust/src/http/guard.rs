//! What stands between an accepted HTTP connection and hyper: the raw
//! request-head checks (`strict`), and the connection's clocks — the head
//! must arrive within `header_timeout` once it starts (slowloris), and a
//! connection with nothing in flight closes after `idle_timeout`.
//!
//! The guard reads each HTTP/1.1 head into its own buffer and hands it to
//! hyper only once it passed, so hyper never holds half of a refused head:
//! a refusal is an end of input to hyper (it closes quietly), and the reply
//! is written when hyper shuts the connection down. Bodies with a length are
//! counted through, so that a pipelined head behind one is checked too; a
//! chunked body or a tunnel is passed through untouched.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Sleep;

use super::strict::{self, ChunkScan, Framing, Head, H2_PREFACE};
use crate::config::{ListenerLimits, RESET_WINDOW};
use crate::io::forward_writes;
use crate::stats::{ListenerStats, Refusal};

/// How long a refused connection's leftover input is read and dropped.
const LINGER: std::time::Duration = std::time::Duration::from_millis(500);
/// Reads per poll while lingering (4 KiB each), so that a fast sender cannot
/// keep one poll busy.
const LINGER_READS: usize = 16;

/// What the requests of one connection share with its guard and its serve
/// loop: how many are in flight, when the last one ended, and the stream
/// cancellations that tell a rapid-reset attack (CVE-2023-44487) apart.
#[derive(Debug)]
pub struct ConnState {
    epoch: Instant,
    busy: AtomicU32,
    /// Milliseconds since `epoch` at which the last request ended.
    last_done: AtomicU64,
    window_start: AtomicU64,
    opened: AtomicU32,
    cancelled: AtomicU32,
    /// Set when the serve loop should close the connection gracefully
    /// (GOAWAY on HTTP/2): abuse, or idle HTTP/2.
    closing: AtomicBool,
    abusive: AtomicBool,
    wake: Notify,
}

/// A request in flight; dropped when its response has been sent (or dropped).
pub struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_done.store(self.0.now_ms(), Relaxed);
        self.0.busy.fetch_sub(1, Relaxed);
    }
}

// === impl ConnState ===

impl ConnState {
    pub fn new() -> Arc<Self> {
        Arc::new(ConnState {
            epoch: Instant::now(),
            busy: AtomicU32::new(0),
            last_done: AtomicU64::new(0),
            window_start: AtomicU64::new(0),
            opened: AtomicU32::new(0),
            cancelled: AtomicU32::new(0),
            closing: AtomicBool::new(false),
            abusive: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn enter(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Relaxed);
        Busy(self.clone())
    }

    fn idle(&self) -> bool {
        self.busy.load(Relaxed) == 0
    }

    fn last_done(&self) -> Instant {
        self.epoch + std::time::Duration::from_millis(self.last_done.load(Relaxed))
    }

    /// Starts a new counting window when the current one is over.
    fn roll(&self) {
        let now = self.now_ms();
        let start = self.window_start.load(Relaxed);
        if now.saturating_sub(start) >= RESET_WINDOW.as_millis() as u64
            && self
                .window_start
                .compare_exchange(start, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.opened.store(0, Relaxed);
            self.cancelled.store(0, Relaxed);
        }
    }

    /// An HTTP/2 stream began.
    pub fn opened(&self) {
        self.roll();
        self.opened.fetch_add(1, Relaxed);
    }

    /// An HTTP/2 stream was dropped before its answer (the client reset it).
    /// Over `max` in the window, and over half the streams opened there (a
    /// client cancelling a few slow calls is not an attack), the
    /// connection is told to close.
    pub fn cancelled(&self, max: u32) {
        self.roll();
        let c = self.cancelled.fetch_add(1, Relaxed) + 1;
        if c >= max && c * 2 > self.opened.load(Relaxed) && !self.abusive.swap(true, Relaxed) {
            self.close();
        }
    }

    fn close(&self) {
        self.closing.store(true, Relaxed);
        self.wake.notify_one();
    }

    /// Ready when the connection should close gracefully; true for abuse.
    pub async fn close_wanted(&self) -> bool {
        while !self.closing.load(Relaxed) {
            self.wake.notified().await;
        }
        self.abusive.load(Relaxed)
    }
}

/// Where the guard is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// At a request head (or the HTTP/2 preface, on the first one).
    Head,
    /// Inside a body of known length: this many bytes to go.
    Body(u64),
    /// Inside a chunked body, followed to its end; framing the scan cannot
    /// follow (which hyper refuses) is unchecked until the connection is
    /// idle again.
    Chunked(ChunkScan),
    /// After an upgrade: not HTTP any more.
    Tunnel,
    /// Prior-knowledge HTTP/2 (h2's own limits apply); only idleness is watched.
    H2,
    /// Closed for idleness; reads end.
    Ended,
}

pub struct Guarded<S> {
    io: S,
    conn: Arc<ConnState>,
    stats: Arc<ListenerStats>,
    limits: ListenerLimits,
    mode: Mode,
    /// Bytes read ahead of hyper: the first `ready` of them passed.
    acc: BytesMut,
    ready: usize,
    first: bool,
    head_started: Option<Instant>,
    last_read: Instant,
    timer: Option<(Pin<Box<Sleep>>, Instant)>,
    /// A refusal's reply and how much of it is written; hyper sees the end of input.
    refusal: Option<(Vec<u8>, usize)>,
}

// === impl Guarded ===

impl<S: AsyncRead + AsyncWrite + Unpin> Guarded<S> {
    pub fn new(
        io: S,
        conn: Arc<ConnState>,
        stats: Arc<ListenerStats>,
        limits: ListenerLimits,
    ) -> Self {
        Guarded {
            io,
            conn,
            stats,
            limits,
            mode: Mode::Head,
            acc: BytesMut::new(),
            ready: 0,
            first: true,
            head_started: None,
            last_read: Instant::now(),
            timer: None,
            refusal: None,
        }
    }

    fn refuse(&mut self, refusal: Refusal, why: &str) {
        self.stats.refusals.inc(refusal);
        tracing::debug!("request refused: {why}");
        self.refusal = Some((strict::reply(refusal, why), 0));
        self.acc.clear();
        self.ready = 0;
    }

    /// Judges the head at the front of `acc`; false when it needs more bytes.
    fn decide(&mut self) -> bool {
        if self.first {
            let k = self.acc.len().min(H2_PREFACE.len());
            if self.acc[..k] == H2_PREFACE[..k] {
                if k < H2_PREFACE.len() {
                    return false;
                }
                self.mode = Mode::H2;
                self.ready = self.acc.len();
                return true;
            }
        }
        match strict::check(&self.acc, &self.limits) {
            Head::Partial => false,
            Head::Refused(r, why) => {
                self.refuse(r, why);
                true
            }
            Head::Passed { len, framing } => {
                self.first = false;
                self.head_started = None;
                // What passes now: the head, and what follows it as far as
                // the next head (if that is in `acc`, it is judged next).
                let all = self.acc.len();
                let rest = (all - len) as u64;
                (self.mode, self.ready) = match framing {
                    Framing::Empty => (Mode::Head, len),
                    Framing::Length(n) if n > rest => (Mode::Body(n - rest), all),
                    Framing::Length(n) => (Mode::Head, len + n as usize),
                    Framing::Chunked => {
                        let mut scan = ChunkScan::default();
                        match scan.feed(&self.acc[len..]) {
                            Some(end) => (Mode::Head, len + end),
                            None => (Mode::Chunked(scan), all),
                        }
                    }
                    Framing::Tunnel => (Mode::Tunnel, all),
                };
                true
            }
        }
    }

    /// Reads from the socket into `acc` (through hyper's buffer, which has
    /// the room); Ok(0) at the end of input.
    fn fill(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<usize>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        self.acc.extend_from_slice(&buf.filled()[before..]);
        buf.set_filled(before);
        if n > 0 {
            self.last_read = Instant::now();
        }
        Poll::Ready(Ok(n))
    }

    /// Nothing to read now: arms the clock that applies, or fires it.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (deadline, why) = match (self.mode, self.head_started) {
            (Mode::Head, Some(started)) => {
                (started + self.limits.header_timeout, Refusal::HeaderTimeout)
            }
            (Mode::Tunnel | Mode::Body(_) | Mode::Ended, _) => return Poll::Pending,
            _ if !self.conn.idle() || self.conn.closing.load(Relaxed) => return Poll::Pending,
            // HTTP/2 is idle when no stream is open, whatever frames pass:
            // the PINGs of its own keep-alive must not keep it open.
            (Mode::H2, _) => (
                self.conn.last_done() + self.limits.idle_timeout,
                Refusal::IdleTimeout,
            ),
            _ => (
                self.last_read.max(self.conn.last_done()) + self.limits.idle_timeout,
                Refusal::IdleTimeout,
            ),
        };
        loop {
            if Instant::now() >= deadline {
                return self.expire(why);
            }
            // Deadlines move later with every request: the timer is re-armed
            // when it would fire late, or has fired early, not once per request.
            let (sleep, armed) = self.timer.get_or_insert_with(|| {
                (
                    Box::pin(tokio::time::sleep_until(deadline.into())),
                    deadline,
                )
            });
            if *armed > deadline || sleep.is_elapsed() {
                sleep.as_mut().reset(deadline.into());
                *armed = deadline;
            }
            ready!(sleep.as_mut().poll(cx));
        }
    }

    fn expire(&mut self, why: Refusal) -> Poll<io::Result<()>> {
        self.timer = None;
        match why {
            Refusal::HeaderTimeout => self.refuse(why, "request head not received in time"),
            _ => {
                self.stats.refusals.inc(why);
                if self.mode == Mode::H2 {
                    // The serve loop sends GOAWAY; reads go on until it is out.
                    self.conn.close();
                    return Poll::Pending;
                }
                self.mode = Mode::Ended;
            }
        }
        // The end of input: hyper holds no partial head, so it closes quietly.
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.refusal.is_some() || this.mode == Mode::Ended || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                buf.put_slice(&this.acc[..n]);
                this.acc.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            match this.mode {
                Mode::Head => {
                    if !this.acc.is_empty() {
                        if this.decide() {
                            continue;
                        }
                        this.head_started.get_or_insert_with(Instant::now);
                    }
                    match this.fill(cx, buf) {
                        Poll::Pending => return this.wait(cx),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        // The client went away; a partial head is dropped with it.
                        Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                        Poll::Ready(Ok(_)) => continue,
                    }
                }
                Mode::Chunked(ChunkScan::Lost) if this.conn.idle() => {
                    this.mode = Mode::Head;
                    continue;
                }
                _ => {
                    let before = buf.filled().len();
                    match Pin::new(&mut this.io).poll_read(cx, buf) {
                        Poll::Pending => return this.wait(cx),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {}
                    }
                    let n = (buf.filled().len() - before) as u64;
                    if n > 0 {
                        this.last_read = Instant::now();
                    }
                    // Where the body ends in this read, if it does: what follows
                    // is the next head.
                    let end = match &mut this.mode {
                        Mode::Body(rest) if n < *rest => {
                            *rest -= n;
                            None
                        }
                        Mode::Body(rest) => Some(*rest as usize),
                        Mode::Chunked(scan) if *scan != ChunkScan::Lost => {
                            scan.feed(&buf.filled()[before..])
                        }
                        _ => None,
                    };
                    if let Some(end) = end {
                        let end = before + end;
                        this.acc.extend_from_slice(&buf.filled()[end..]);
                        buf.set_filled(end);
                        this.mode = Mode::Head;
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    forward_writes!(io);

    /// A refusal's reply goes out first, then a lingering close: what the
    /// client is still sending is read and dropped for a moment, because
    /// closing with unread bytes makes the kernel send a reset that can
    /// overtake the reply.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some((reply, written)) = &mut this.refusal else {
            return Pin::new(&mut this.io).poll_shutdown(cx);
        };
        while *written < reply.len() {
            let n = ready!(Pin::new(&mut this.io).poll_write(cx, &reply[*written..]))?;
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            *written += n;
        }
        if !reply.is_empty() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            // Written and half-closed: from here on only the linger is left.
            reply.clear();
            *written = 0;
            this.timer = Some((
                Box::pin(tokio::time::sleep(LINGER)),
                Instant::now() + LINGER,
            ));
        }
        let mut scratch = [0u8; 4096];
        for _ in 0..LINGER_READS {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => continue,
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        match &mut this.timer {
            Some((sleep, _)) => sleep.as_mut().poll(cx).map(Ok),
            None => Poll::Ready(Ok(())),
        }
    }
}
