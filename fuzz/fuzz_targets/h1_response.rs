//! The load generator's HTTP/1.1 response parser (head, framing, chunked
//! bodies with trailers): never a panic, and never claims more bytes than it
//! was given. The first input byte says whether the request was a HEAD.

#![no_main]

use _core::fuzzing::{h1_chunked, h1_response_head, H1Framing};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else {
        return;
    };
    // Any three digits are a status to httparse (and to a load generator).
    if let Ok(Some((_status, head, framing, _keep_alive))) = h1_response_head(buf, flags & 1 == 1) {
        assert!(head <= buf.len());
        if let H1Framing::Chunked = framing {
            let mut body = BytesMut::from(&buf[head..]);
            let _ = h1_chunked(&mut body);
        }
    }
    let mut chunked = BytesMut::from(buf);
    if let Ok(Some(size)) = h1_chunked(&mut chunked) {
        let consumed = buf.len() - chunked.len();
        assert!(
            size <= consumed as u64,
            "a body of {size} in {consumed} bytes"
        );
        assert_eq!(&chunked[..], &buf[consumed..]);
    }
});
