//! Our own HTTP/1.1 client for pooled upstream connections. The exchange
//! runs in the request's own task: no connection task, no channel and no
//! wake-up between the two; the head goes out in one write, the response
//! head is parsed in place, and the connection goes back to its pool the
//! moment the response body ends. Upgrades (101) stay with hyper's client.
//!
//! The request body keeps streaming while the response does (as hyper's
//! client lets it): the response body drives whatever is left to write.

pub mod codec;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::AsyncWrite;

use super::body::{BoxError, ProxyBody};
use super::pool::Home;
use crate::io::Stream;
use crate::stats::{Active, ClusterStats};
use codec::{Chunked, Decoded, Framing, Outgoing};

/// The first read buffer of a connection; it grows while reads fill it.
const READ_FIRST: usize = 8 * 1024;
const READ_MAX: usize = 64 * 1024;
/// Slices handed to one vectored write.
const MAX_SLICES: usize = 16;

/// An open upstream connection, idle or in one exchange.
pub struct Conn {
    io: Stream,
    /// Read but not yet taken: the rest of a response, or a head's start.
    buf: BytesMut,
    read_size: usize,
    /// Counts the connection as one of its cluster's open ones.
    _open: Active<ClusterStats>,
}

// === impl Conn ===

impl Conn {
    pub fn new(io: Stream, open: Active<ClusterStats>) -> Box<Self> {
        Box::new(Conn {
            io,
            buf: BytesMut::new(),
            read_size: READ_FIRST,
            _open: open,
        })
    }

    /// True when an idle connection can take a request: nothing has come
    /// on it since its last response (neither a close nor stray bytes).
    /// tokio remembers that the socket had nothing more to read, so this
    /// usually costs no system call.
    pub fn usable(&mut self, cx: &mut Context<'_>) -> bool {
        self.buf.is_empty() && self.poll_read(cx).is_pending()
    }

    /// `usable`, asked outside any task (nothing is woken later).
    pub fn still_usable(&mut self) -> bool {
        self.usable(&mut Context::from_waker(Waker::noop()))
    }

    /// Reads what has come into `buf`: Ok(0) at the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = std::task::ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ))?;
        if n == room && self.read_size < READ_MAX {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }
}

/// Why writing the request failed.
enum Pump {
    /// The request body broke (the client's fault, judged by its verdict).
    Body(BoxError),
    /// The connection would not take more.
    Write(io::Error),
}

/// One request on one connection: what is left to write, and what is read.
struct Exchange {
    /// None once the connection went back to its pool, or was closed.
    conn: Option<Box<Conn>>,
    /// Bytes still to write, in order.
    out: VecDeque<Bytes>,
    /// The request body still to read, framed as `outgoing` says.
    body: Option<ProxyBody>,
    outgoing: Outgoing,
    /// All of the request is written and flushed.
    sent: bool,
    /// Writing stopped: the connection cannot be used again.
    broken: bool,
    /// Why writing stopped, told if no answer comes either.
    write_error: Option<io::Error>,
    head_request: bool,
    home: Option<Home>,
}

// === impl Exchange ===

impl Exchange {
    /// Writes as much of the request as the connection takes now.
    fn pump(&mut self, cx: &mut Context<'_>) -> Result<(), Pump> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(());
            };
            if !self.out.is_empty() {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for (slot, chunk) in slices.iter_mut().zip(self.out.iter()) {
                    *slot = IoSlice::new(chunk);
                    count += 1;
                }
                let io = Pin::new(&mut conn.io);
                let written = match io.poll_write_vectored(cx, &slices[..count]) {
                    Poll::Ready(Ok(0)) => Err(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(result) => result,
                    Poll::Pending => return Ok(()),
                };
                let mut n = written.map_err(Pump::Write)?;
                while n > 0 {
                    let front = &mut self.out[0];
                    if front.len() <= n {
                        n -= front.len();
                        self.out.pop_front();
                    } else {
                        front.advance(n);
                        n = 0;
                    }
                }
                continue;
            }
            if let Some(body) = self.body.as_mut() {
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => self.queue(frame),
                    Poll::Ready(Some(Err(e))) => return Err(Pump::Body(e)),
                    Poll::Ready(None) => self.end(None),
                    Poll::Pending => {
                        // What is written so far goes out while the body waits.
                        return match Pin::new(&mut conn.io).poll_flush(cx) {
                            Poll::Ready(Err(e)) => Err(Pump::Write(e)),
                            _ => Ok(()),
                        };
                    }
                }
                continue;
            }
            return match Pin::new(&mut conn.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.sent = true;
                    Ok(())
                }
                Poll::Ready(Err(e)) => Err(Pump::Write(e)),
                Poll::Pending => Ok(()),
            };
        }
    }

    /// A frame of the request body, framed for the wire.
    fn queue(&mut self, frame: Frame<Bytes>) {
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => {
                if self.outgoing == Outgoing::Chunked {
                    self.out.push_back(codec::chunk_line(data.len()));
                    self.out.push_back(data);
                    self.out.push_back(Bytes::from_static(b"\r\n"));
                } else {
                    self.out.push_back(data);
                }
            }
            // Trailers end the body; only chunks can carry them.
            Err(frame) => self.end(frame.into_trailers().ok()),
        }
    }

    fn end(&mut self, trailers: Option<http::HeaderMap>) {
        if self.outgoing == Outgoing::Chunked {
            self.out.push_back(codec::last_chunk(trailers.as_ref()));
        }
        self.outgoing = Outgoing::Done;
        self.body = None;
    }

    /// Writes what it can (unless writing has stopped); a write failure
    /// stops writing but not reading, since an answer may be on its way.
    fn write(&mut self, cx: &mut Context<'_>) -> Result<(), BoxError> {
        if self.sent || self.broken {
            return Ok(());
        }
        match self.pump(cx) {
            Ok(()) => Ok(()),
            Err(Pump::Body(e)) => Err(e),
            Err(Pump::Write(e)) => {
                self.broken = true;
                self.body = None;
                self.out.clear();
                self.write_error = Some(e);
                Ok(())
            }
        }
    }

    /// A read that came to nothing: the stream ended (or failed) early.
    fn cut_short(&mut self, read: io::Result<usize>, what: &str) -> BoxError {
        self.broken = true;
        self.conn = None;
        match (self.write_error.take(), read) {
            (Some(e), _) | (None, Err(e)) => Box::new(e),
            (None, Ok(_)) => Box::new(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                what.to_string(),
            )),
        }
    }

    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<codec::Head, BoxError>> {
        loop {
            self.write(cx)?;
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(Err("connection closed".into()));
            };
            if let Some(head) = codec::parse_head(&conn.buf, self.head_request)? {
                conn.buf.advance(head.len);
                if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
                    return Poll::Ready(Err(codec::Malformed::UnexpectedUpgrade.into()));
                }
                // Interim answers (100 Continue, 103) end at their head.
                if head.status.is_informational() {
                    continue;
                }
                return Poll::Ready(Ok(head));
            }
            match std::task::ready!(conn.poll_read(cx)) {
                Ok(n) if n > 0 => {}
                read => {
                    let why = "upstream closed the connection before answering";
                    return Poll::Ready(Err(self.cut_short(read, why)));
                }
            }
        }
    }

    /// The response is over: the connection goes back to its pool if both
    /// sides are done with it and the upstream keeps it open.
    fn finish(&mut self, keep_alive: bool) {
        let conn = self.conn.take();
        let home = self.home.take();
        if let (Some(conn), Some(home)) = (conn, home) {
            if keep_alive && self.sent && !self.broken && conn.buf.is_empty() {
                home.put(conn);
            }
        }
        self.broken = true;
    }
}

/// Sends `req` on `conn` and reads the response head; the body streams
/// from the connection, which goes `home` once both bodies are done.
pub async fn send(
    conn: Box<Conn>,
    req: Request<ProxyBody>,
    home: Home,
) -> Result<Response<Box<Body>>, BoxError> {
    let (parts, body) = req.into_parts();
    let mut head = BytesMut::new();
    let length = (!body.is_end_stream()).then(|| body.size_hint().exact());
    let outgoing = codec::encode_head(&parts, length, &mut head);
    let mut out = VecDeque::with_capacity(4);
    out.push_back(head.freeze());
    // On the heap from the start: the exchange becomes the response body,
    // and every move of it after this is a pointer's.
    let mut resp = Box::new(Body {
        exchange: Exchange {
            conn: Some(conn),
            out,
            body: (outgoing != Outgoing::Done).then_some(body),
            outgoing,
            sent: false,
            broken: false,
            write_error: None,
            head_request: parts.method == Method::HEAD,
            home: Some(home),
        },
        framing: In::Done,
        keep_alive: false,
    });
    drop(parts);
    let head = std::future::poll_fn(|cx| resp.exchange.poll_head(cx)).await?;
    resp.keep_alive = head.keep_alive;
    resp.framing = match head.framing {
        Framing::Length(n) => In::Length(n),
        Framing::Chunked => In::Chunked(Chunked::default()),
        Framing::Close => In::Close,
    };
    if resp.framing == In::Length(0) {
        resp.end(true);
    }
    let mut response = Response::new(resp);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    Ok(response)
}

/// Where a response body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

/// A response body read from our own connection.
pub struct Body {
    exchange: Exchange,
    framing: In,
    keep_alive: bool,
}

// === impl Body ===

impl Body {
    /// The body is over; `whole`: it ended where its framing said, so the
    /// connection may serve again (if the upstream keeps it open).
    fn end(&mut self, whole: bool) {
        self.framing = In::Done;
        self.exchange.finish(whole && self.keep_alive);
    }

    /// The next piece in the buffer, if there is one.
    fn take(&mut self) -> Result<Option<Frame<Bytes>>, BoxError> {
        let Some(conn) = self.exchange.conn.as_mut() else {
            return Ok(None);
        };
        let buf = &mut conn.buf;
        match &mut self.framing {
            In::Length(left) if !buf.is_empty() => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(take).freeze();
                *left -= take as u64;
                if *left == 0 {
                    self.end(true);
                }
                Ok(Some(Frame::data(data)))
            }
            In::Chunked(state) => match state.decode(buf)? {
                Decoded::Data(data) => Ok(Some(Frame::data(data))),
                // Trailers are the last frame: a server may not ask again.
                Decoded::Trailers(t) => {
                    self.end(true);
                    Ok(Some(Frame::trailers(t)))
                }
                Decoded::End => {
                    self.end(true);
                    Ok(None)
                }
                Decoded::More => Ok(None),
            },
            In::Close if !buf.is_empty() => Ok(Some(Frame::data(buf.split().freeze()))),
            _ => Ok(None),
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.framing == In::Done {
                return Poll::Ready(None);
            }
            if let Err(e) = this.exchange.write(cx) {
                this.end(false);
                return Poll::Ready(Some(Err(e)));
            }
            match this.take() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) if this.framing == In::Done => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    this.end(false);
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let Some(conn) = this.exchange.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match std::task::ready!(conn.poll_read(cx)) {
                Ok(n) if n > 0 => {}
                // The end of a body that runs to the close.
                Ok(_) if this.framing == In::Close => {
                    this.end(false);
                    return Poll::Ready(None);
                }
                read => {
                    this.framing = In::Done;
                    let e = this
                        .exchange
                        .cut_short(read, "upstream closed mid-response");
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == In::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            In::Length(n) => SizeHint::with_exact(n),
            In::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
