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

pub enum ProxyBody {
    Streamed {
        inner: Incoming,
        meter: Meter,
        _guards: Option<Guards>,
    },
    Local(Full<Bytes>),
}

impl ProxyBody {
    pub fn streamed(inner: Incoming, meter: Meter, guards: Option<Guards>) -> Self {
        ProxyBody::Streamed {
            inner,
            meter,
            _guards: guards,
        }
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
            ProxyBody::Streamed { inner, meter, .. } => {
                let frame = ready!(Pin::new(inner).poll_frame(cx));
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
            ProxyBody::Streamed { inner, .. } => inner.is_end_stream(),
            ProxyBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Streamed { inner, .. } => inner.size_hint(),
            ProxyBody::Local(full) => full.size_hint(),
        }
    }
}
