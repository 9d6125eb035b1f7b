//! A lean HTTP/1.1 client for the load generator: the request is serialized
//! once and written with one syscall; responses are parsed in place from one
//! reusable buffer. A general client (hyper) spends more per request than
//! the proxies we measure, and the generator must not be the bottleneck.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::spec::BenchSpec;

/// Why an exchange failed; the connection is unusable afterwards.
#[derive(Debug, PartialEq, Eq)]
pub enum H1Error {
    Io,
    Malformed,
}

/// The request bytes, built once per run.
pub fn serialize(spec: &BenchSpec, host: &str, path: &str) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\nhost: {}\r\n", spec.method, path, host).into_bytes();
    for (name, value) in &spec.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !spec.body.is_empty() || matches!(spec.method.as_str(), "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(format!("content-length: {}\r\n", spec.body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&spec.body);
    out
}

pub enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// What the head of a response says: (status, head length, framing, keep-alive).
pub fn parse_head(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(u16, usize, Framing, bool)>, H1Error> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(H1Error::Malformed),
    };
    let status = resp.code.ok_or(H1Error::Malformed)?;
    let mut framing = Framing::UntilClose;
    let mut keep_alive = resp.version == Some(1);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(H1Error::Malformed)?;
            if !matches!(framing, Framing::Chunked) {
                framing = Framing::Length(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if h.value.eq_ignore_ascii_case(b"chunked") {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = h.value.to_ascii_lowercase();
            if v == b"close" {
                keep_alive = false;
            } else if v == b"keep-alive" {
                keep_alive = true;
            }
        }
    }
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Length(0);
    }
    Ok(Some((status, len, framing, keep_alive)))
}

/// Consumes a complete chunked body from the front of `buf`; Ok(None) if more is needed.
pub fn take_chunked(buf: &mut BytesMut) -> Result<Option<u64>, H1Error> {
    let mut pos = 0;
    let mut body = 0u64;
    loop {
        let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = &buf[pos..pos + eol];
        let hex = line.split(|&b| b == b';').next().unwrap_or(line);
        let size = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| usize::from_str_radix(h.trim(), 16).ok())
            .ok_or(H1Error::Malformed)?;
        pos += eol + 2;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    buf.advance(pos);
                    return Ok(Some(body));
                }
            }
        }
        // A size near usize::MAX must not wrap the end back into the buffer
        // (found by the h1_response fuzz target: an endless loop in release).
        let end = pos
            .checked_add(size)
            .and_then(|e| e.checked_add(2))
            .ok_or(H1Error::Malformed)?;
        if buf.len() < end {
            return Ok(None);
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(H1Error::Malformed);
        }
        body += size as u64;
        pos = end;
    }
}

pub struct H1Client {
    stream: TcpStream,
    buf: BytesMut,
    head_request: bool,
}

impl H1Client {
    pub fn new(stream: TcpStream, spec: &BenchSpec) -> Self {
        H1Client {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            head_request: spec.method == http::Method::HEAD,
        }
    }

    async fn fill(&mut self) -> Result<usize, H1Error> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(64 * 1024);
        }
        self.stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|_| H1Error::Io)
    }

    /// Sends `request` and reads one whole response: (status, body bytes, keep-alive).
    pub async fn exchange(&mut self, request: &[u8]) -> Result<(u16, u64, bool), H1Error> {
        self.stream
            .write_all(request)
            .await
            .map_err(|_| H1Error::Io)?;
        let (status, head, framing, keep_alive) = loop {
            if let Some(h) = parse_head(&self.buf, self.head_request)? {
                break h;
            }
            if self.fill().await? == 0 {
                return Err(H1Error::Io);
            }
        };
        self.buf.advance(head);
        let body = match framing {
            Framing::Length(n) => {
                while self.buf.len() < n {
                    if self.fill().await? == 0 {
                        return Err(H1Error::Io);
                    }
                }
                self.buf.advance(n);
                n as u64
            }
            Framing::Chunked => loop {
                if let Some(n) = take_chunked(&mut self.buf)? {
                    break n;
                }
                if self.fill().await? == 0 {
                    return Err(H1Error::Io);
                }
            },
            Framing::UntilClose => {
                while self.fill().await? != 0 {}
                let n = self.buf.len() as u64;
                self.buf.clear();
                return Ok((status, n, false));
            }
        };
        Ok((status, body, keep_alive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_with_trailers() {
        let mut b =
            BytesMut::from(&b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-t: 1\r\n\r\nNEXT"[..]);
        assert_eq!(take_chunked(&mut b), Ok(Some(11)));
        assert_eq!(&b[..], b"NEXT");
        let mut partial = BytesMut::from(&b"5\r\nhel"[..]);
        assert_eq!(take_chunked(&mut partial), Ok(None));
        let mut bad = BytesMut::from(&b"zz\r\n"[..]);
        assert_eq!(take_chunked(&mut bad), Err(H1Error::Malformed));
        // Without overflow checks its end wrapped to 0: this line, read forever.
        let mut huge = BytesMut::from(&b"ffffffffffffffec\r\nx\r\n"[..]);
        assert_eq!(take_chunked(&mut huge), Err(H1Error::Malformed));
        let mut unterminated = BytesMut::from(&b"2\r\nabc\r\n0\r\n\r\n"[..]);
        assert_eq!(take_chunked(&mut unterminated), Err(H1Error::Malformed));
    }

    #[test]
    fn heads_and_framing() {
        let (status, len, framing, ka) =
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false)
                .unwrap()
                .unwrap();
        assert_eq!((status, len, ka), (200, 38, true));
        assert!(matches!(framing, Framing::Length(3)));
        let (_, _, framing, ka) =
            parse_head(b"HTTP/1.1 204 No\r\nConnection: close\r\n\r\n", false)
                .unwrap()
                .unwrap();
        assert!(matches!(framing, Framing::Length(0)));
        assert!(!ka);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-", false)
            .unwrap()
            .is_none());
        assert!(parse_head(b"garbage\r\n\r\n", false).is_err());
    }
}
