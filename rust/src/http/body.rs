//! The one body type the proxy moves in both directions: a streamed body that
//! meters its bytes (and holds in-flight guards until it ends), or a short
//! local reply.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use tokio::time::Sleep;

use super::guard::Busy;
use super::replay::{Frames, Tee};
use crate::stats::{ListenerStats, Meter, Refusal};
use crate::telemetry::edges::{EdgeStats, Outcome};
use crate::telemetry::exchange::Exchange;

/// Dropped with the body: releases in-flight gauges once the stream is done.
pub type Guards = Box<dyn Send>;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A frame read ahead of the server's first poll (`None`: the body had ended).
type Peeked = Option<Result<Frame<Bytes>, BoxError>>;

/// Where a streamed body's bytes come from: `Left`, hyper's (a client's
/// request, or an HTTP/2 or upgradable upstream's answer); `Right`, our own
/// HTTP/1.1 client's answer.
pub type Inner = Either<Incoming, Box<super::h1::Body>>;

/// What went wrong with a request body on the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// Broken framing (a bad chunk size, a short body) or the client went away.
    Malformed = 1,
    /// Over the route's `max_request_bytes`.
    TooLarge = 2,
    /// Nothing for the listener's `body_timeout`.
    Stalled = 3,
}

impl BodyFault {
    pub fn refusal(self) -> Refusal {
        match self {
            BodyFault::Malformed => Refusal::BadRequest,
            BodyFault::TooLarge => Refusal::BodyTooLarge,
            BodyFault::Stalled => Refusal::BodyTimeout,
        }
    }
}

impl std::fmt::Display for BodyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BodyFault::Malformed => "malformed request body",
            BodyFault::TooLarge => "request body too large",
            BodyFault::Stalled => "request body stalled",
        })
    }
}

impl std::error::Error for BodyFault {}

/// The fault a request body met, if any: set by the body as it streams,
/// read by the forwarding path when the upstream exchange fails, so that
/// the client's fault is answered 4xx and never blamed on the upstream.
#[derive(Debug, Default)]
pub struct Verdict {
    /// A `BodyFault` as its number, 0 for none.
    fault: AtomicU8,
    answered: AtomicBool,
}

impl Verdict {
    /// The upstream has answered: from now on the body may pause as long as
    /// it likes (a gRPC client stream, a bidirectional one), as the
    /// response may too.
    pub fn answered(&self) {
        self.answered.store(true, Relaxed);
    }

    pub fn fault(&self) -> Option<BodyFault> {
        match self.fault.load(Relaxed) {
            1 => Some(BodyFault::Malformed),
            2 => Some(BodyFault::TooLarge),
            3 => Some(BodyFault::Stalled),
            _ => None,
        }
    }
}

/// The checks on a request body as it streams in from the client. The
/// idle clock runs only until the upstream answers.
pub struct Inbound {
    limit: u64,
    seen: u64,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    moved: bool,
    verdict: Arc<Verdict>,
    stats: Arc<ListenerStats>,
}

impl Inbound {
    pub fn new(limit: Option<u64>, idle: Duration, stats: Arc<ListenerStats>) -> Box<Self> {
        Box::new(Inbound {
            limit: limit.unwrap_or(u64::MAX),
            seen: 0,
            idle,
            timer: None,
            moved: true,
            verdict: Arc::default(),
            stats,
        })
    }

    fn fault(&mut self, f: BodyFault) -> BoxError {
        if self.verdict.fault.swap(f as u8, Relaxed) == 0 {
            self.stats.refusals.inc(f.refusal());
        }
        Box::new(f)
    }

    /// The client sent nothing now: the idle clock runs (from the last piece).
    fn stalled(&mut self, cx: &mut Context<'_>) -> Option<BoxError> {
        if self.verdict.answered.load(Relaxed) {
            self.timer = None;
            return None;
        }
        let deadline = tokio::time::Instant::now() + self.idle;
        match &mut self.timer {
            Some(t) if self.moved => t.as_mut().reset(deadline),
            Some(_) => {}
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.moved = false;
        let t = self.timer.as_mut()?;
        t.as_mut()
            .poll(cx)
            .is_ready()
            .then(|| self.fault(BodyFault::Stalled))
    }

    fn frame(
        &mut self,
        frame: Option<Result<Frame<Bytes>, BoxError>>,
    ) -> Option<Result<Frame<Bytes>, BoxError>> {
        self.moved = true;
        match frame? {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    self.seen += d.len() as u64;
                    if self.seen > self.limit {
                        return Some(Err(self.fault(BodyFault::TooLarge)));
                    }
                }
                Some(Ok(f))
            }
            Err(e) => {
                tracing::debug!("request body failed: {e}");
                Some(Err(self.fault(BodyFault::Malformed)))
            }
        }
    }
}

// Streamed is what nearly every body is: boxing it would allocate per body,
// to save moves of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub enum ProxyBody {
    Streamed {
        inner: Inner,
        meter: Meter,
        _guards: Option<Guards>,
        peeked: Option<Peeked>,
        /// A copy of what passes, kept for another try or a mirror.
        tee: Option<Tee>,
        /// A response's outcome, counted when it ends.
        done: Option<Done>,
        /// A request body's checks.
        inbound: Option<Box<Inbound>>,
    },
    Local(Full<Bytes>),
    /// A request body recorded earlier, sent again (boxed: rare, and the
    /// enum's size is what every request moves around).
    Replayed(Box<Frames>),
}

impl ProxyBody {
    pub fn streamed(inner: Inner, meter: Meter, guards: Option<Guards>) -> Self {
        ProxyBody::Streamed {
            inner,
            meter,
            _guards: guards,
            peeked: None,
            tee: None,
            done: None,
            inbound: None,
        }
    }

    /// The body checked as a request body from a client.
    pub fn checked(mut self, checks: Box<Inbound>) -> Self {
        if let ProxyBody::Streamed { inbound, .. } = &mut self {
            *inbound = Some(checks);
        }
        self
    }

    /// Where this request body's fault will be, when it is checked.
    pub fn verdict(&self) -> Option<Arc<Verdict>> {
        match self {
            ProxyBody::Streamed {
                inbound: Some(i), ..
            } => Some(i.verdict.clone()),
            _ => None,
        }
    }

    /// Counts `done` when the body ends (or is dropped unfinished); at once
    /// for a body that has nothing more to send.
    pub fn finish_with(&mut self, mut d: Done) {
        if self.is_end_stream() {
            d.ended = true;
        }
        match self {
            ProxyBody::Streamed { done, .. } if !d.ended => *done = Some(d),
            _ => {
                d.ended = true;
                drop(d);
            }
        }
    }

    /// The body with a copy of each frame recorded as it passes.
    pub fn tee(mut self, t: Tee) -> Self {
        if let ProxyBody::Streamed { tee, .. } = &mut self {
            *tee = Some(t);
        }
        self
    }

    pub fn replayed(
        chunks: std::collections::VecDeque<Bytes>,
        trailers: Option<http::HeaderMap>,
    ) -> Self {
        ProxyBody::Replayed(Box::new(Frames { chunks, trailers }))
    }

    /// Reads the first frame ahead when it is there now, or after one turn of
    /// the runtime (the upstream connection's task usually holds it already):
    /// the server then writes the response head and its first bytes together,
    /// one write (and one TLS record) instead of two. Never waits longer, so
    /// a stream that sends its head alone (SSE, gRPC streaming) is not held.
    pub async fn prefetch(mut self) -> Self {
        if let ProxyBody::Streamed { inner, peeked, .. } = &mut self {
            if inner.is_end_stream() {
                return self;
            }
            let mut yielded = false;
            std::future::poll_fn(|cx| match Pin::new(&mut *inner).poll_frame(cx) {
                Poll::Ready(frame) => {
                    *peeked = Some(frame);
                    Poll::Ready(())
                }
                Poll::Pending if !yielded => {
                    yielded = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Pending => Poll::Ready(()),
            })
            .await;
        }
        self
    }

    /// A request body whose first piece, read ahead, is already broken.
    pub fn broken(&self) -> bool {
        matches!(
            self,
            ProxyBody::Streamed {
                peeked: Some(Some(Err(_))),
                ..
            }
        )
    }

    pub fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody::Local(Full::new(text.into()))
    }

    pub fn empty() -> Self {
        ProxyBody::Local(Full::new(Bytes::new()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Streamed {
                inner,
                meter,
                peeked,
                tee,
                done,
                inbound,
                ..
            } => {
                let polled = match peeked.take() {
                    Some(frame) => frame,
                    None => match Pin::new(&mut *inner).poll_frame(cx) {
                        Poll::Ready(frame) => frame,
                        Poll::Pending => {
                            let Some(e) = inbound.as_mut().and_then(|i| i.stalled(cx)) else {
                                return Poll::Pending;
                            };
                            if let Some(Tee(rec)) = tee {
                                rec.end(false);
                            }
                            return Poll::Ready(Some(Err(e)));
                        }
                    },
                };
                let frame = match inbound {
                    Some(i) => i.frame(polled),
                    None => polled,
                };
                if let Some(Ok(f)) = &frame {
                    if let Some(data) = f.data_ref() {
                        meter.record(data.len() as u64);
                    }
                }
                if let Some(d) = done {
                    d.observe(&frame, inner.is_end_stream());
                }
                if let Some(Tee(rec)) = tee {
                    match &frame {
                        Some(Ok(f)) => {
                            if let Some(data) = f.data_ref() {
                                rec.data(data);
                            } else if let Some(t) = f.trailers_ref() {
                                rec.trailers(t);
                            }
                            if inner.is_end_stream() {
                                rec.end(true);
                            }
                        }
                        Some(Err(_)) => rec.end(false),
                        None => rec.end(true),
                    }
                }
                Poll::Ready(frame)
            }
            ProxyBody::Replayed(frames) => Poll::Ready(match frames.chunks.pop_front() {
                Some(chunk) => Some(Ok(Frame::data(chunk))),
                None => frames.trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
            ProxyBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Streamed {
                peeked: Some(frame),
                ..
            } => frame.is_none(),
            ProxyBody::Streamed { inner, .. } => inner.is_end_stream(),
            ProxyBody::Local(full) => full.is_end_stream(),
            ProxyBody::Replayed(f) => f.chunks.is_empty() && f.trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Streamed { inner, peeked, .. } => {
                // What was read ahead is still to come: count it back in (the
                // server frames the response, Content-Length included, from this).
                let ahead = match peeked {
                    Some(Some(Ok(f))) => f.data_ref().map_or(0, |d| d.len() as u64),
                    _ => 0,
                };
                let inner = inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + ahead);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + ahead);
                }
                hint
            }
            ProxyBody::Local(full) => full.size_hint(),
            ProxyBody::Replayed(f) => match f.trailers {
                // Exact unless trailers follow (then the length is framed as chunks).
                None => SizeHint::with_exact(f.chunks.iter().map(|c| c.len() as u64).sum()),
                Some(_) => SizeHint::default(),
            },
        }
    }
}

/// How a response ended, counted on its edge when the body is done or
/// dropped: the status, the gRPC status (from the head of a trailers-only
/// answer, or the trailers), whether it ended cleanly, and the request's
/// record when one is kept.
pub struct Done {
    pub edge: std::sync::Arc<EdgeStats>,
    pub status: u16,
    pub grpc: Option<u16>,
    pub ended: bool,
    pub bytes: u64,
    pub record: Option<Box<Exchange>>,
    /// Keeps the connection from counting as idle until the response is out.
    pub busy: Option<Busy>,
}

impl Done {
    fn observe(&mut self, frame: &Option<Result<Frame<Bytes>, BoxError>>, at_end: bool) {
        match frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                } else if let Some(t) = f.trailers_ref() {
                    self.grpc = grpc_status(t).or(self.grpc);
                }
                if at_end {
                    self.ended = true;
                }
            }
            Some(Err(_)) => {}
            None => self.ended = true,
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.edge
            .outcomes
            .record(Outcome::http(self.status, self.grpc, self.ended));
        if let Some(mut x) = self.record.take() {
            x.grpc_status = self.grpc;
            x.response_bytes = self.bytes;
            x.finish(self.ended);
        }
    }
}

/// `grpc-status` of a head or trailers.
pub fn grpc_status(h: &http::HeaderMap) -> Option<u16> {
    std::str::from_utf8(h.get("grpc-status")?.as_bytes())
        .ok()?
        .parse()
        .ok()
}
