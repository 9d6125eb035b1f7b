//! The one body type the proxy moves in both directions: a streamed body that
//! meters its bytes (and holds in-flight guards until it ends), or a short
//! local reply.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::stats::Meter;

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
    },
    Local(Full<Bytes>),
}

impl ProxyBody {
    pub fn streamed(inner: Incoming, meter: Meter, guards: Option<Guards>) -> Self {
        ProxyBody::Streamed {
            inner,
            meter,
            _guards: guards,
            peeked: None,
        }
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
                ..
            } => {
                let frame = match peeked.take() {
                    Some(frame) => frame,
                    None => ready!(Pin::new(inner).poll_frame(cx)),
                };
                if let Some(Ok(f)) = &frame {
                    if let Some(data) = f.data_ref() {
                        meter.record(data.len() as u64);
                    }
                }
                Poll::Ready(frame)
            }
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
        }
    }
}
