//! The proxy's own HTTP/1.1 client (what an upstream answers) and the
//! listener guard's chunked-body scan: never a panic, never more bytes
//! claimed than given, and the same outcome however the bytes are split
//! (the first input byte says where, and whether the request was a HEAD).

#![no_main]

use _core::fuzzing::{upstream_head, ChunkScan, UpstreamChunked, UpstreamDecoded, UpstreamFraming};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// Everything a chunked decoder yields from `parts`, fed one after another.
fn decode(parts: &[&[u8]]) -> (Vec<u8>, Vec<String>, Option<bool>) {
    let mut state = UpstreamChunked::default();
    let mut buf = BytesMut::new();
    let (mut data, mut trailers) = (Vec::new(), Vec::new());
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            match state.decode(&mut buf) {
                Ok(UpstreamDecoded::Data(d)) => {
                    assert!(!d.is_empty());
                    data.extend_from_slice(&d);
                }
                Ok(UpstreamDecoded::Trailers(t)) => trailers.push(format!("{t:?}")),
                Ok(UpstreamDecoded::End) => return (data, trailers, Some(true)),
                Ok(UpstreamDecoded::More) => break,
                Err(_) => return (data, trailers, Some(false)),
            }
        }
    }
    (data, trailers, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else {
        return;
    };
    let cut = usize::from(flags >> 1).min(buf.len());
    if let Ok(Some(head)) = upstream_head(buf, flags & 1 == 1) {
        assert!(head.len <= buf.len());
        if head.framing == UpstreamFraming::Chunked {
            let body = &buf[head.len..];
            let whole = decode(&[body]);
            assert!(whole.0.len() <= body.len());
            let cut = cut.min(body.len());
            let split = decode(&[&body[..cut], &body[cut..]]);
            // Data may come in other pieces, but the same bytes, trailers and end.
            assert_eq!(whole, split);
        }
    }
    let mut scan = ChunkScan::default();
    let whole = scan.feed(buf);
    assert!(whole.is_none_or(|end| end <= buf.len()));
    let mut scan = ChunkScan::default();
    let split = match scan.feed(&buf[..cut]) {
        Some(end) => Some(end),
        None => scan.feed(&buf[cut..]).map(|end| cut + end),
    };
    assert_eq!(whole, split);
});
