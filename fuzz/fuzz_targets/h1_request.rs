//! The HTTP/1.1 request-head checks every listener runs before hyper
//! (`http::strict`): never a panic; a head that passes is no longer than the
//! buffer or the limit and passes the same way on its own; a shorter piece
//! of it never passes; its framing agrees with the headers it has; and a
//! refusal's reply is one whole response that closes. The first input byte
//! picks the limits, so that the small ones are reached too.

#![no_main]

use _core::fuzzing::{
    h1_request_head, h1_response_head, refusal_reply, H1Framing, H1Head, H1RequestFraming,
    ListenerLimits,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, buf)) = data.split_first() else {
        return;
    };
    let limits = ListenerLimits {
        header_bytes: if pick & 1 == 1 { 1024 } else { 60 * 1024 },
        max_headers: usize::from((pick >> 1) & 0x0f) + 1,
        ..ListenerLimits::default()
    };
    match h1_request_head(buf, &limits) {
        H1Head::Partial => assert!(buf.len() <= limits.header_bytes),
        H1Head::Refused(refusal, why) => {
            let reply = refusal_reply(refusal, why);
            let Ok(Some((status, head, H1Framing::Length(n), keep_alive))) =
                h1_response_head(&reply, false)
            else {
                panic!("a refusal that is not a framed response: {reply:?}");
            };
            assert!((400..500).contains(&status));
            assert!(!keep_alive, "a refusal closes");
            assert_eq!(head + n as usize, reply.len());
        }
        H1Head::Passed { len, framing } => {
            assert!(len <= buf.len() && len <= limits.header_bytes);
            let head = &buf[..len];
            assert_eq!(
                h1_request_head(head, &limits),
                H1Head::Passed { len, framing }
            );
            for cut in [len / 2, len.saturating_sub(1)] {
                assert!(!matches!(
                    h1_request_head(&head[..cut], &limits),
                    H1Head::Passed { .. }
                ));
            }
            let text = String::from_utf8_lossy(head).to_ascii_lowercase();
            let has = |name: &str| text.contains(&format!("\n{name}:"));
            match framing {
                H1RequestFraming::Length(_) => assert!(has("content-length")),
                H1RequestFraming::Chunked => {
                    assert!(has("transfer-encoding") && !has("content-length"))
                }
                H1RequestFraming::Empty | H1RequestFraming::Tunnel => {}
            }
            assert!(!(has("content-length") && has("transfer-encoding")));
        }
    }
});
