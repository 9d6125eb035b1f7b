//! A request kept for another try or a mirror: its head, and a copy of its
//! body taken as it streams out (a tee), up to `MAX_REPLAY_BODY`. Nothing
//! waits for the body: a try starts at once, and a copy is replayable only
//! once the body has ended within the limit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use hyper::body::Body;
use tokio::sync::Notify;

use super::body::ProxyBody;

/// Bodies up to this are kept for replay; a longer one is retried only
/// when none of it was sent, and not mirrored.
pub const MAX_REPLAY_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Recording,
    Complete,
    /// Too long, or the stream failed or was dropped before its end.
    Lost,
}

struct Tape {
    chunks: Vec<Bytes>,
    len: usize,
    trailers: Option<HeaderMap>,
    state: State,
}

/// The copy of one request body, shared by the tee and whoever replays.
pub struct Recording {
    tape: Mutex<Tape>,
    done: Notify,
}

impl Recording {
    fn new() -> Arc<Self> {
        Arc::new(Recording {
            tape: Mutex::new(Tape {
                chunks: Vec::new(),
                len: 0,
                trailers: None,
                state: State::Recording,
            }),
            done: Notify::new(),
        })
    }

    fn tape(&self) -> std::sync::MutexGuard<'_, Tape> {
        self.tape.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn data(&self, chunk: &Bytes) {
        let mut t = self.tape();
        if t.state != State::Recording {
            return;
        }
        t.len += chunk.len();
        if t.len > MAX_REPLAY_BODY {
            t.chunks.clear();
            t.state = State::Lost;
            drop(t);
            self.done.notify_waiters();
        } else {
            t.chunks.push(chunk.clone());
        }
    }

    pub fn trailers(&self, trailers: &HeaderMap) {
        self.tape().trailers = Some(trailers.clone());
    }

    /// The body ended (`complete`) or will not (an error, or dropped early).
    pub fn end(&self, complete: bool) {
        let mut t = self.tape();
        if t.state == State::Recording {
            t.state = if complete {
                State::Complete
            } else {
                State::Lost
            };
            drop(t);
            self.done.notify_waiters();
        }
    }

    /// The whole body again, when it has ended within the limit.
    fn replay(&self) -> Option<ProxyBody> {
        let t = self.tape();
        (t.state == State::Complete)
            .then(|| ProxyBody::replayed(t.chunks.iter().cloned().collect(), t.trailers.clone()))
    }

    /// Waits (up to `limit`) for the body to end; its copy when complete.
    async fn finished(&self, limit: Duration) -> Option<ProxyBody> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.done.notified();
            if self.tape().state != State::Recording {
                return self.replay();
            }
            tokio::time::timeout_at(deadline, notified).await.ok()?;
        }
    }
}

/// Ends the recording as lost if its body is dropped before the end.
pub struct Tee(pub Arc<Recording>);

impl Drop for Tee {
    fn drop(&mut self) {
        self.0.end(false);
    }
}

/// What a new copy of the request is built from.
pub struct Replay {
    head: http::request::Parts,
    /// None: the request had no body.
    body: Option<Arc<Recording>>,
}

impl Replay {
    /// Keeps `req`'s head and starts a copy of its body (if any), which
    /// fills as the returned request's body is read.
    pub fn keep(req: Request<ProxyBody>) -> (Request<ProxyBody>, Replay) {
        let (parts, body) = req.into_parts();
        let head = copy_head(&parts);
        let (body, recording) = if body.is_end_stream() {
            (body, None)
        } else {
            let rec = Recording::new();
            (body.tee(Tee(rec.clone())), Some(rec))
        };
        (
            Request::from_parts(parts, body),
            Replay {
                head,
                body: recording,
            },
        )
    }

    /// Another handle on the same copy (for a mirror's task).
    pub fn share(&self) -> Replay {
        Replay {
            head: copy_head(&self.head),
            body: self.body.clone(),
        }
    }

    /// The request once more, when its body (if any) was recorded whole.
    pub fn again(&self) -> Option<Request<ProxyBody>> {
        let body = match &self.body {
            None => ProxyBody::empty(),
            Some(rec) => rec.replay()?,
        };
        Some(Request::from_parts(copy_head(&self.head), body))
    }

    /// The request once more, waiting up to `limit` for its body to end.
    pub async fn again_when_read(&self, limit: Duration) -> Option<Request<ProxyBody>> {
        let body = match &self.body {
            None => ProxyBody::empty(),
            Some(rec) => rec.finished(limit).await?,
        };
        Some(Request::from_parts(copy_head(&self.head), body))
    }
}

/// `Parts` is not `Clone` (extensions may not be); the proxy sets none.
fn copy_head(p: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    req.into_parts().0
}

/// A replayed body's frames.
pub struct Frames {
    pub chunks: VecDeque<Bytes>,
    pub trailers: Option<HeaderMap>,
}
