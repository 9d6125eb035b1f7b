//! HTTP/2 frame writes coalesced across streams. h2 flushes its connection
//! each time it runs, and it runs once per answered stream: when responses
//! come back from many upstream connections, each would become a TLS record
//! and a syscall of its own. Here a flush with bytes waiting first lets the
//! worker run everything else that is ready (the task wakes itself and goes
//! to the back of the run queue, on either scheduler: tokio queues a task
//! woken while it runs as a yield), so that the frames of every stream
//! answered meanwhile leave in one write.
//!
//! Only HTTP/2 is held back: an HTTP/1.1 connection has one exchange at a
//! time, and a delay would buy nothing but latency.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::io::read_seen;

/// Bytes held back before a write goes out regardless.
const LIMIT: usize = 64 * 1024;

/// The largest buffer a connection keeps between writes (a gateway may hold
/// thousands of HTTP/2 connections).
const KEPT: usize = 16 * 1024;

/// The client preface every HTTP/2 connection starts with (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A server connection before its first bytes: HTTP/2 or not.
    Undecided,
    Off,
    On,
}

pub struct Coalesce<S> {
    io: S,
    mode: Mode,
    held: Vec<u8>,
    /// How much of `held` has been written.
    sent: usize,
    /// The flush has given the worker its one turn (see `poll_flush`).
    waited: bool,
}

// === impl Coalesce ===

impl<S> Coalesce<S> {
    /// A server connection: coalesced when it turns out to be HTTP/2.
    pub fn server(io: S) -> Self {
        Self::with(io, Mode::Undecided)
    }

    /// A client connection that speaks HTTP/2.
    pub fn http2(io: S) -> Self {
        Self::with(io, Mode::On)
    }

    fn with(io: S, mode: Mode) -> Self {
        Coalesce {
            io,
            mode,
            held: Vec::new(),
            sent: 0,
            waited: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out everything held.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        if self.held.capacity() > KEPT {
            // A burst's buffer is not kept by an idle connection.
            self.held = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: Ready(false) when they are too many
    /// to hold and should be written straight through.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.held.len() + len > LIMIT {
            ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(len < LIMIT))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mode = &mut this.mode;
        read_seen(&mut this.io, cx, buf, |read| {
            if *mode == Mode::Undecided && !read.is_empty() {
                let n = read.len().min(PREFACE.len());
                *mode = if read[..n] == PREFACE[..n] {
                    Mode::On
                } else {
                    Mode::Off
                };
            }
        })
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.mode != Mode::On {
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        if !ready!(this.poll_room(cx, data.len()))? {
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        this.held.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.mode != Mode::On {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        let len = bufs.iter().map(|b| b.len()).sum();
        if !ready!(this.poll_room(cx, len))? {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.held.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        // Held writes take slices as they come; otherwise the stream's own answer.
        self.mode == Mode::On || self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.sent < this.held.len() {
            // One turn for the other streams' answers before the write.
            if !this.waited {
                this.waited = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_send(cx))?;
            this.waited = false;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn held_until_flushed_then_one_write() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut c = Coalesce::http2(a);
        c.write_all(b"one").await.unwrap();
        c.write_all(b"two").await.unwrap();
        let mut buf = [0u8; 16];
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut buf));
        assert!(early.await.is_err(), "nothing leaves before the flush");
        c.flush().await.unwrap();
        let n = b.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"onetwo");
    }

    #[tokio::test]
    async fn over_the_limit_goes_out_without_a_flush() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut c = Coalesce::http2(a);
        let big = vec![7u8; LIMIT + 1];
        c.write_all(b"x").await.unwrap();
        c.write_all(&big).await.unwrap();
        let mut got = vec![0u8; LIMIT + 2];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got[0], b'x');
        assert!(got[1..].iter().all(|&x| x == 7));
    }

    #[tokio::test]
    async fn a_server_connection_is_held_only_for_http2() {
        for (first, held) in [(&b"GET / HTTP/1.1\r\n"[..], false), (PREFACE, true)] {
            let (a, mut b) = tokio::io::duplex(1 << 16);
            let mut c = Coalesce::server(a);
            b.write_all(first).await.unwrap();
            let mut buf = [0u8; 64];
            let _ = c.read(&mut buf).await.unwrap();
            c.write_all(b"reply").await.unwrap();
            let mut out = [0u8; 8];
            let read = tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut out));
            assert_eq!(read.await.is_err(), held, "first bytes {first:?}");
            c.shutdown().await.unwrap();
        }
    }
}
