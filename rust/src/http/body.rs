//! The one body type the proxy moves in both directions: a streamed body that
//! meters its bytes (and holds in-flight guards until it ends), or a short
//! local reply.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::replay::{Frames, Tee};
use crate::stats::Meter;
use crate::telemetry::edges::{EdgeStats, Outcome};
use crate::telemetry::exchange::Exchange;

/// Dropped with the body: releases in-flight gauges once the stream is done.
pub type Guards = Box<dyn Send>;

/// A frame read ahead of the server's first poll (`None`: the body had ended).
type Peeked = Option<Result<Frame<Bytes>, hyper::Error>>;

pub enum ProxyBody {
    Streamed {
        inner: Incoming,
        meter: Meter,
        _guards: Option<Guards>,
        peeked: Option<Peeked>,
        /// A copy of what passes, kept for another try or a mirror.
        tee: Option<Tee>,
        /// A response's outcome, counted when it ends.
        done: Option<Done>,
    },
    Local(Full<Bytes>),
    /// A request body recorded earlier, sent again (boxed: rare, and the
    /// enum's size is what every request moves around).
    Replayed(Box<Frames>),
}

impl ProxyBody {
    pub fn streamed(inner: Incoming, meter: Meter, guards: Option<Guards>) -> Self {
        ProxyBody::Streamed {
            inner,
            meter,
            _guards: guards,
            peeked: None,
            tee: None,
            done: None,
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

    pub fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody::Local(Full::new(text.into()))
    }

    pub fn empty() -> Self {
        ProxyBody::Local(Full::new(Bytes::new()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Streamed {
                inner,
                meter,
                peeked,
                tee,
                done,
                ..
            } => {
                let frame = match peeked.take() {
                    Some(frame) => frame,
                    None => ready!(Pin::new(&mut *inner).poll_frame(cx)),
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
}

impl Done {
    fn observe(&mut self, frame: &Option<Result<Frame<Bytes>, hyper::Error>>, at_end: bool) {
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
