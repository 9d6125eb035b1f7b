//! The checks an HTTP/1.1 request head gets before hyper sees it, on the
//! raw bytes, because hyper quietly repairs what a proxy must refuse: with
//! both Content-Length and Transfer-Encoding it drops the length (RFC 9112
//! §6.3 lets a server do that, but a proxy that forwards such a request is
//! half of a smuggling pair). The head's size and header count are bounded
//! here too, so that an over-long head is answered 431 before it is buffered
//! whole. What is checked per request after parsing (Host, h2c) is in
//! `proxy`; this module only reads bytes.

use http::StatusCode;

use crate::config::ListenerLimits;
use crate::stats::Refusal;

/// The HTTP/2 connection preface (RFC 9113 §3.4): prior-knowledge HTTP/2.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How the message after a head is framed, so that the next head is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: the next head follows at once.
    Empty,
    Length(u64),
    /// A chunked body: its end is found by `ChunkScan`.
    Chunked,
    /// An upgrade or CONNECT: what follows may be anything.
    Tunnel,
}

/// What a buffer that starts with a request head holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// Not a whole head yet, and within the limits.
    Partial,
    /// A head of `len` bytes that passed.
    Passed {
        len: usize,
        framing: Framing,
    },
    Refused(Refusal, &'static str),
}

/// Header lines parsed on the stack; more only when a listener allows more.
const STACK_HEADERS: usize = 100;

/// Checks the head at the start of `buf`.
pub fn check(buf: &[u8], limits: &ListenerLimits) -> Head {
    // One more slot than allowed, so that "too many" is told from "just enough".
    let wanted = limits.max_headers + 1;
    if wanted <= STACK_HEADERS + 1 {
        let mut headers = [httparse::EMPTY_HEADER; STACK_HEADERS + 1];
        parse(buf, &mut headers[..wanted], limits)
    } else {
        let mut headers = vec![httparse::EMPTY_HEADER; wanted];
        parse(buf, &mut headers, limits)
    }
}

fn parse<'b>(buf: &'b [u8], headers: &mut [httparse::Header<'b>], limits: &ListenerLimits) -> Head {
    let max_headers = headers.len() - 1;
    let mut req = httparse::Request::new(headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > limits.header_bytes => {
            return Head::Refused(Refusal::HeaderTooLarge, "request head too large")
        }
        Ok(httparse::Status::Partial) => return Head::Partial,
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::TooManyHeaders) => {
            return Head::Refused(Refusal::HeaderTooLarge, "too many header lines")
        }
        Err(_) => return Head::Refused(Refusal::BadRequest, "malformed request head"),
    };
    if len > limits.header_bytes {
        return Head::Refused(Refusal::HeaderTooLarge, "request head too large");
    }
    if req.headers.len() > max_headers {
        return Head::Refused(Refusal::HeaderTooLarge, "too many header lines");
    }
    match framing(&req) {
        Ok(framing) => Head::Passed { len, framing },
        Err(why) => Head::Refused(Refusal::BadRequest, why),
    }
}

/// The body's framing by RFC 9112 §6, refusing what is ambiguous.
fn framing(req: &httparse::Request<'_, '_>) -> Result<Framing, &'static str> {
    let http11 = req.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut tunnel = req.method == Some("CONNECT");
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            // `5, 5` is one length said twice; anything else is not a length.
            for part in h.value.split(|&b| b == b',') {
                let n = content_length(part.trim_ascii()).ok_or("invalid Content-Length")?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length values");
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return Err("Transfer-Encoding in an HTTP/1.0 request");
            }
            // Only the last coding decides; it must be chunked for a request.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("upgrade") && http11 {
            // h2c is taken out by the proxy (never forwarded as an upgrade), so
            // a request asking only for it stays an ordinary one.
            tunnel |= h
                .value
                .split(|&b| b == b',')
                .any(|t| !t.trim_ascii().eq_ignore_ascii_case(b"h2c"));
        }
    }
    match (length, chunked) {
        (Some(_), Some(_)) => Err("both Content-Length and Transfer-Encoding"),
        (_, Some(false)) => Err("Transfer-Encoding does not end in chunked"),
        _ if tunnel => Ok(Framing::Tunnel),
        (_, Some(true)) => Ok(Framing::Chunked),
        (Some(0) | None, None) => Ok(Framing::Empty),
        (Some(n), None) => Ok(Framing::Length(n)),
    }
}

/// 1*DIGIT, no sign, no spaces, within u64.
fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The status a refused request is answered with.
pub fn status(refusal: Refusal) -> StatusCode {
    match refusal {
        Refusal::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        Refusal::HeaderTimeout | Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The bytes written for a refusal: a complete response that closes.
pub fn reply(refusal: Refusal, why: &str) -> Vec<u8> {
    let status = status(refusal);
    let body = format!("meshctl: {why}\n");
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         x-meshctl-error: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        crate::stats::Reason::name(refusal),
        body.len(),
    )
    .into_bytes()
}

/// Follows a chunked request body through the bytes that pass, to find
/// where it ends and the next head begins (RFC 9112 section 7.1). Only the
/// framing is read; the data is skipped by count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkScan {
    /// In a chunk-size: the size so far and its digits.
    Size(u64, u8),
    /// In chunk extensions (or the whitespace before them).
    Ext(u64),
    /// The LF ending a chunk-size line.
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final blank line.
    Line,
    InLine,
    LineLf,
    EndLf,
    /// The body ended.
    Done,
    /// Framing hyper will refuse (or reads otherwise): not followed further.
    Lost,
}

impl Default for ChunkScan {
    fn default() -> Self {
        ChunkScan::Size(0, 0)
    }
}

impl ChunkScan {
    /// Reads `bytes` on: the offset just past the body's end when it ends
    /// within them.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut at = 0;
        while at < bytes.len() {
            if let ChunkScan::Data(left) = *self {
                let take = (bytes.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                at += take;
                let left = left - take as u64;
                *self = if left == 0 {
                    ChunkScan::DataCr
                } else {
                    ChunkScan::Data(left)
                };
                continue;
            }
            let b = bytes[at];
            at += 1;
            *self = match (*self, b) {
                (ChunkScan::Size(n, d), _) if b.is_ascii_hexdigit() && d < 15 => ChunkScan::Size(
                    n * 16 + u64::from(char::from(b).to_digit(16).unwrap_or(0)),
                    d + 1,
                ),
                (ChunkScan::Size(n, d), b';' | b' ' | b'\t') if d > 0 => ChunkScan::Ext(n),
                (ChunkScan::Size(n, d), b'\r') if d > 0 => ChunkScan::SizeLf(n),
                (ChunkScan::Ext(n), b'\r') => ChunkScan::SizeLf(n),
                (ChunkScan::Ext(_), b'\n') => ChunkScan::Lost,
                (ChunkScan::Ext(n), _) => ChunkScan::Ext(n),
                (ChunkScan::SizeLf(0), b'\n') => ChunkScan::Line,
                (ChunkScan::SizeLf(n), b'\n') => ChunkScan::Data(n),
                (ChunkScan::DataCr, b'\r') => ChunkScan::DataLf,
                (ChunkScan::DataLf, b'\n') => ChunkScan::Size(0, 0),
                (ChunkScan::Line, b'\r') => ChunkScan::EndLf,
                (ChunkScan::Line | ChunkScan::InLine, b'\n') => ChunkScan::Lost,
                (ChunkScan::InLine, b'\r') => ChunkScan::LineLf,
                (ChunkScan::Line | ChunkScan::InLine, _) => ChunkScan::InLine,
                (ChunkScan::LineLf, b'\n') => ChunkScan::Line,
                (ChunkScan::EndLf, b'\n') => {
                    *self = ChunkScan::Done;
                    return Some(at);
                }
                (ChunkScan::Done, _) => return Some(at - 1),
                _ => ChunkScan::Lost,
            };
            if *self == ChunkScan::Lost {
                return None;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        check(text.as_bytes(), &ListenerLimits::default())
    }

    #[test]
    fn chunk_scan_finds_the_body_end_across_any_split() {
        let body = b"5;name=v\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nx-t: 1\r\n\r\n";
        let wire = [&body[..], b"GET /next HTTP/1.1\r\n"].concat();
        for cut in 0..wire.len() {
            let mut scan = ChunkScan::default();
            let end = match scan.feed(&wire[..cut]) {
                Some(end) => end,
                None => cut + scan.feed(&wire[cut..]).expect("the end"),
            };
            assert_eq!(end, body.len(), "cut at {cut}");
        }
        // Without trailers, and a chunk-size with whitespace before its extension.
        assert_eq!(
            ChunkScan::default().feed(b"3 ;x\r\nabc\r\n0\r\n\r\nrest"),
            Some(16)
        );
    }

    #[test]
    fn chunk_scan_stops_following_what_is_not_chunked() {
        for bad in [
            &b"5\nhello\n0\n\n"[..],
            b"x\r\n",
            b"\r\n",
            b"3\r\nabcXY",
            b"1234567890abcdef0\r\n",
        ] {
            let mut scan = ChunkScan::default();
            assert_eq!(scan.feed(bad), None);
            assert_eq!(scan, ChunkScan::Lost, "{bad:?}");
        }
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let cases = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        ];
        for c in cases {
            assert!(
                matches!(head(c), Head::Refused(Refusal::BadRequest, _)),
                "{c:?} -> {:?}",
                head(c)
            );
        }
    }

    #[test]
    fn framing_finds_the_next_head() {
        let passed = |c: &str| match head(c) {
            Head::Passed { len, framing } => (len, framing),
            other => panic!("{c:?} -> {other:?}"),
        };
        let get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(passed(get), (get.len(), Framing::Empty));
        assert_eq!(
            passed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello").1,
            Framing::Length(5)
        );
        assert_eq!(
            passed("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").1,
            Framing::Chunked
        );
        assert_eq!(
            passed("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").1,
            Framing::Tunnel
        );
        assert_eq!(
            passed("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n").1,
            Framing::Empty
        );
        assert_eq!(head("GET / HTTP/1.1\r\nHost: a\r\n"), Head::Partial);
    }

    #[test]
    fn heads_over_the_limits_are_refused() {
        let limits = ListenerLimits {
            header_bytes: 1024,
            max_headers: 3,
            ..ListenerLimits::default()
        };
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(2000)
        );
        assert!(matches!(
            check(big.as_bytes(), &limits),
            Head::Refused(Refusal::HeaderTooLarge, _)
        ));
        // Refused before the head ends: nothing unbounded is buffered.
        assert!(matches!(
            check(&big.as_bytes()[..1500], &limits),
            Head::Refused(Refusal::HeaderTooLarge, _)
        ));
        let many = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert!(matches!(
            check(many.as_bytes(), &limits),
            Head::Refused(Refusal::HeaderTooLarge, _)
        ));
        let enough = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
        assert!(matches!(
            check(enough.as_bytes(), &limits),
            Head::Passed { .. }
        ));
    }
}
