//! Header handling on the forwarding path: host and authority as routing
//! reads them, the h2c upgrade taken out, hop-by-hop stripping, the
//! forwarding and client-identity headers. Never a panic, and each leaves the headers as it promises.

#![no_main]

use std::net::IpAddr;

use _core::fuzzing::{
    add_forwarded, request_authority, request_host, set_client_identity, strip_hop_by_hop,
    take_h2c, wants_upgrade, SpiffeId,
};
use arbitrary::Arbitrary;
use http::header::{self, HeaderName};
use libfuzzer_sys::fuzz_target;
use meshctl_fuzz::{RequestSpec, Word};

#[derive(Debug, Arbitrary)]
struct Input {
    request: RequestSpec,
    client: IpAddr,
    peer: Option<Word>,
}

/// Always removed by `strip_hop_by_hop` (`upgrade` and `te` have their own rules).
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "proxy-authenticate",
    "proxy-authorization",
];

fuzz_target!(|input: Input| {
    let Some(parts) = input.request.parts() else {
        return;
    };
    let host = request_host(&parts.uri, &parts.headers);
    assert!(!host.bytes().any(|b| b.is_ascii_uppercase()), "{host}");
    let authority = request_authority(&parts.uri, &parts.headers);
    if let Some(a) = parts.uri.authority() {
        assert_eq!(authority, a.as_str());
    }
    // As the proxy does first: an h2c upgrade is never passed on.
    let mut headers = parts.headers.clone();
    if take_h2c(&mut headers) {
        assert!(!headers.contains_key("http2-settings"));
    }
    let h2c = |v: &http::HeaderValue| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("h2c")))
    };
    assert!(!headers.get_all(header::UPGRADE).iter().any(h2c));
    let upgrade = wants_upgrade(&headers);
    // The names the Connection header lists, read as the proxy reads them.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    strip_hop_by_hop(&mut headers, upgrade);
    for name in HOP_BY_HOP {
        assert!(!headers.contains_key(*name), "{name} kept");
    }
    for name in &named {
        // Host is end-to-end whatever a client says: it routes the request upstream.
        let own_rule = [
            header::CONNECTION,
            header::UPGRADE,
            header::TE,
            header::HOST,
        ]
        .contains(name);
        assert!(
            own_rule || !headers.contains_key(name),
            "{name} named by Connection, kept"
        );
    }
    if let Some(te) = headers.get(header::TE) {
        assert_eq!(te, "trailers");
    }
    assert_eq!(headers.contains_key(header::UPGRADE), upgrade);
    assert_eq!(headers.contains_key(header::CONNECTION), upgrade);

    add_forwarded(&mut headers, input.client);
    let xff = headers
        .get("x-forwarded-for")
        .expect("set")
        .to_str()
        .expect("ASCII");
    let last = xff.rsplit(", ").next().expect("one");
    assert_eq!(last, input.client.to_string());
    assert!(headers.contains_key("x-forwarded-proto"));

    let peer = input.peer.as_ref().and_then(|p| SpiffeId::parse(&p.0));
    set_client_identity(&mut headers, peer.as_ref());
    let cert = headers.get_all("x-forwarded-client-cert").iter().count();
    assert_eq!(cert, usize::from(peer.is_some()));
});
