//! The HTTP/1.1 wire format of the upstream client (RFC 9112): the request
//! head written from its `Parts`, the response head parsed with httparse,
//! and a chunked response body decoded as it streams. Strict where a lax
//! reading could let two parties frame one message differently: a response
//! with both Content-Length and Transfer-Encoding, or with two lengths, is
//! refused rather than guessed at.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

/// The largest response head read (hyper's read buffer stops about here).
pub const MAX_HEAD: usize = 400 * 1024;
/// Header lines in one response head, and in one trailer section.
const MAX_HEADERS: usize = 128;
/// A chunk-size line (size and extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;

/// Why an upstream's response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Head,
    TooLarge,
    Length,
    Framing,
    Chunk,
    Trailers,
    UnexpectedUpgrade,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Malformed::Head => "malformed response head",
            Malformed::TooLarge => "response head too large",
            Malformed::Length => "bad Content-Length in response",
            Malformed::Framing => "response has both Content-Length and Transfer-Encoding",
            Malformed::Chunk => "malformed chunk in response body",
            Malformed::Trailers => "malformed response trailers",
            Malformed::UnexpectedUpgrade => "101 Switching Protocols to a request without Upgrade",
        })
    }
}

impl std::error::Error for Malformed {}

/// How the rest of a request body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// Nothing more (the body is done, or there was none).
    Done,
    /// As much as Content-Length said: what the body sends, as it is.
    Length,
    /// As chunks, a last chunk (with any trailers) at the end.
    Chunked,
}

/// Writes the request line and headers for `parts` into `out` and says how
/// the body is framed. `body`: None for a body that is already over, else
/// its exact length when known.
pub fn encode_head(
    parts: &http::request::Parts,
    body: Option<Option<u64>>,
    out: &mut BytesMut,
) -> Outgoing {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let size: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(parts.method.as_str().len() + target.len() + size + 48);
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    // A length the request already names is the framing (the server side
    // checked the body against it); else the body's own.
    let framing = if parts.headers.contains_key(header::CONTENT_LENGTH) {
        match body {
            None => Outgoing::Done,
            Some(_) => Outgoing::Length,
        }
    } else {
        match body {
            None => {
                // Servers may refuse these without a length (411).
                if [Method::POST, Method::PUT, Method::PATCH].contains(&parts.method) {
                    out.put_slice(b"content-length: 0\r\n");
                }
                Outgoing::Done
            }
            Some(Some(n)) => {
                out.put_slice(b"content-length: ");
                out.put_slice(itoa(n, &mut [0; 20]));
                out.put_slice(b"\r\n");
                if n == 0 {
                    Outgoing::Done
                } else {
                    Outgoing::Length
                }
            }
            Some(None) => {
                out.put_slice(b"transfer-encoding: chunked\r\n");
                Outgoing::Chunked
            }
        }
    };
    out.put_slice(b"\r\n");
    framing
}

/// `n` in decimal, written into the end of `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The size line of a chunk of `len` bytes.
pub fn chunk_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// The last chunk, with the trailers when there are any.
pub fn last_chunk(trailers: Option<&HeaderMap>) -> Bytes {
    let mut out = BytesMut::from(&b"0\r\n"[..]);
    for (name, value) in trailers.into_iter().flatten() {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// How a response body is framed (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// Bytes of the head, blank line included.
    pub len: usize,
    pub framing: Framing,
    /// The upstream keeps the connection open after this response.
    pub keep_alive: bool,
}

/// The response head at the front of `buf`: None until it is all there.
/// `head_request`: the request was HEAD, so no body follows whatever the
/// head says.
pub fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, Malformed> {
    // Uninitialised: zeroing 4 KB of slots on every parse would cost more
    // than the parse.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Malformed::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Malformed::TooLarge),
        Err(_) => return Err(Malformed::Head),
    };
    let code = resp.code.ok_or(Malformed::Head)?;
    let status = StatusCode::from_u16(code).map_err(|_| Malformed::Head)?;
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut keep_alive = version == Version::HTTP_11;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Malformed::Head)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| Malformed::Head)?;
        if name == header::CONTENT_LENGTH {
            for part in h.value.split(|&b| b == b',') {
                let n = parse_length(part.trim_ascii()).ok_or(Malformed::Length)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Malformed::Length);
                }
                length = Some(n);
            }
        } else if name == header::TRANSFER_ENCODING {
            // Only the last coding says whether the body is chunked.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .find(|c| !c.is_empty())
                .map(|c| c.eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    keep_alive = true;
                }
            }
        }
        headers.append(name, value);
    }
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match (chunked, length) {
        _ if no_body => Framing::Length(0),
        (Some(_), Some(_)) => return Err(Malformed::Framing),
        (Some(true), None) => Framing::Chunked,
        // A coding other than chunked last: the body runs to the close.
        (Some(false), None) => Framing::Close,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::Close,
    };
    if framing == Framing::Close {
        keep_alive = false;
    }
    Ok(Some(Head {
        status,
        version,
        headers,
        len,
        framing,
        keep_alive,
    }))
}

/// 1*DIGIT, and no more than fits.
fn parse_length(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// What the chunked decoder took from the buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is over (after its trailers, if any).
    End,
    /// More bytes are needed.
    More,
}

/// A chunked body, decoded as its bytes come.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// At a chunk-size line.
    #[default]
    Size,
    /// In a chunk's data, this many bytes still to come.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
    Done,
}

impl Chunked {
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                        return if buf.len() > MAX_CHUNK_LINE {
                            Err(Malformed::Chunk)
                        } else {
                            Ok(Decoded::More)
                        };
                    };
                    if eol > MAX_CHUNK_LINE {
                        return Err(Malformed::Chunk);
                    }
                    let size = chunk_size(&buf[..eol]).ok_or(Malformed::Chunk)?;
                    buf.advance(eol + 2);
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed::Chunk);
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let (len, fields) = match httparse::parse_headers(buf, &mut slots) {
                        Ok(httparse::Status::Complete(done)) => done,
                        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                            return Err(Malformed::Trailers)
                        }
                        Ok(httparse::Status::Partial) => return Ok(Decoded::More),
                        Err(_) => return Err(Malformed::Trailers),
                    };
                    let mut trailers = HeaderMap::with_capacity(fields.len());
                    for f in fields {
                        let name = HeaderName::from_bytes(f.name.as_bytes())
                            .map_err(|_| Malformed::Trailers)?;
                        let value =
                            HeaderValue::from_bytes(f.value).map_err(|_| Malformed::Trailers)?;
                        trailers.append(name, value);
                    }
                    buf.advance(len);
                    *self = Chunked::Done;
                    if !trailers.is_empty() {
                        return Ok(Decoded::Trailers(trailers));
                    }
                }
                Chunked::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// The size of a chunk-size line: hex digits, then optional extensions
/// (`;name=value`, ignored); none of it may hold a bare CR or LF.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let (hex, ext) = match line.iter().position(|&b| b == b';') {
        Some(at) => (&line[..at], &line[at..]),
        None => (line, &[][..]),
    };
    // Whitespace may come before extensions (RFC 9112's BWS), nothing else.
    let digits = hex
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |last| last + 1);
    let hex = &hex[..digits];
    if hex.is_empty() || hex.len() > 15 || ext.iter().any(|&b| b == b'\r' || b == b'\n') {
        return None;
    }
    let mut size = 0u64;
    for &b in hex {
        size = size * 16 + char::from(b).to_digit(16)? as u64;
    }
    Some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, Malformed> {
        parse_head(text.as_bytes(), false)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.framing, h.keep_alive, h.len),
            (Framing::Length(5), true, 38)
        );
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), true));
        let h = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(0));
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\nconnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(3), false));
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        assert!(head("HTTP/1.1 200 OK\r\ncontent-length: 1")
            .unwrap()
            .is_none());
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0x3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length:\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{bad:?}");
        }
        // Obsolete line folding and garbage are not heads.
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n").unwrap_err(),
            Malformed::Head
        );
        assert_eq!(
            head("HTTX/1.1 200 OK\r\n\r\n").unwrap_err(),
            Malformed::Head
        );
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "a: b\r\n".repeat(200));
        assert_eq!(head(&many).unwrap_err(), Malformed::TooLarge);
        let long = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD + 1));
        assert_eq!(head(&long).unwrap_err(), Malformed::TooLarge);
    }

    #[test]
    fn chunks_decode_across_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n3\r\n ab\r\n0\r\ngrpc-status: 0\r\n\r\n";
        for cut in 0..wire.len() {
            let mut state = Chunked::default();
            let mut buf = BytesMut::from(&wire[..cut]);
            let (mut data, mut trailers, mut ended) = (Vec::new(), None, false);
            let mut rest = &wire[cut..];
            loop {
                match state.decode(&mut buf).unwrap() {
                    Decoded::Data(d) => data.extend_from_slice(&d),
                    Decoded::Trailers(t) => trailers = Some(t),
                    Decoded::End => {
                        ended = true;
                        break;
                    }
                    Decoded::More if rest.is_empty() => break,
                    Decoded::More => {
                        buf.extend_from_slice(&rest[..1]);
                        rest = &rest[1..];
                    }
                }
            }
            assert!(ended, "cut {cut}");
            assert_eq!(data, b"hello ab");
            assert_eq!(trailers.unwrap()["grpc-status"], "0");
        }
    }

    #[test]
    fn bad_chunks_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"1000000000000000\r\n",
            b"-1\r\n",
            b"5 ; a\rb\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            let mut state = Chunked::default();
            let mut outcome = Ok(Decoded::More);
            for _ in 0..4 {
                outcome = state.decode(&mut buf);
                if !matches!(outcome, Ok(Decoded::Data(_))) {
                    break;
                }
            }
            assert!(outcome.is_err(), "{bad:?}: {outcome:?}");
        }
        let mut buf = BytesMut::from(&vec![b'1'; MAX_CHUNK_LINE + 1][..]);
        assert!(Chunked::default().decode(&mut buf).is_err());
    }

    #[test]
    fn request_heads_frame_their_bodies() {
        let mut out = BytesMut::new();
        let (mut parts, ()) = http::Request::post("/p?q=1")
            .header("host", "a")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(encode_head(&parts, None, &mut out), Outgoing::Done);
        assert_eq!(
            &out[..],
            b"POST /p?q=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n"
        );
        out.clear();
        assert_eq!(
            encode_head(&parts, Some(Some(12)), &mut out),
            Outgoing::Length
        );
        assert!(out.ends_with(b"content-length: 12\r\n\r\n"));
        out.clear();
        assert_eq!(encode_head(&parts, Some(None), &mut out), Outgoing::Chunked);
        assert!(out.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
        out.clear();
        parts
            .headers
            .insert("content-length", HeaderValue::from_static("7"));
        assert_eq!(encode_head(&parts, Some(None), &mut out), Outgoing::Length);
        assert!(!out.windows(8).any(|w| w == b"transfer"));
        parts.method = Method::GET;
        parts.headers.remove("content-length");
        out.clear();
        assert_eq!(encode_head(&parts, None, &mut out), Outgoing::Done);
        assert_eq!(&out[..], b"GET /p?q=1 HTTP/1.1\r\nhost: a\r\n\r\n");
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("9"));
        assert_eq!(&last_chunk(Some(&trailers))[..], b"0\r\nx-sum: 9\r\n\r\n");
        assert_eq!(&chunk_line(255)[..], b"ff\r\n");
    }
}
