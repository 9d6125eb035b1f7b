//! Header hygiene for a proxy hop (RFC 9110 section 7.6.1): hop-by-hop
//! headers stay on their hop, the forwarding headers are set.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

fn tokens(v: &HeaderValue) -> impl Iterator<Item = &str> {
    v.to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// True for an HTTP/1.1 request asking to switch protocols (WebSocket).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")))
}

/// Takes `h2c` out of a request's Upgrade (and its HTTP2-Settings): the
/// request goes on as a plain one, or with its other upgrade. True when
/// there was one.
pub fn take_h2c(headers: &mut HeaderMap) -> bool {
    let asked = headers
        .get_all(header::UPGRADE)
        .iter()
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("h2c")));
    if !asked {
        return false;
    }
    let others: Vec<String> = headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|v| tokens(v).filter(|t| !t.eq_ignore_ascii_case("h2c")))
        .map(str::to_string)
        .collect();
    headers.remove(header::UPGRADE);
    headers.remove("http2-settings");
    if let Ok(v) = HeaderValue::from_str(&others.join(", ")) {
        if !others.is_empty() {
            headers.insert(header::UPGRADE, v);
        }
    }
    true
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TRANSFER_ENCODING,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::UPGRADE,
        &header::TE,
    ]
    .contains(&name)
}

/// Removes hop-by-hop headers. With `upgrade`, keeps `Upgrade` and answers
/// `Connection: upgrade` so the next hop sees the switch request.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none: one pass over the names beats eight lookups.
    if !upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(tokens)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        // Host is end-to-end and routes the request upstream: a client
        // naming it in Connection must not make it vanish there.
        if !(upgrade && name == header::UPGRADE) && name != header::TE && name != header::HOST {
            headers.remove(&name);
        }
    }
    headers.remove(header::CONNECTION);
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::PROXY_AUTHORIZATION);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
    // TE is hop-by-hop, but "trailers" must pass: gRPC depends on it.
    if let Some(te) = headers.remove(header::TE) {
        if tokens(&te).any(|t| t.eq_ignore_ascii_case("trailers")) {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Formats into a stack buffer: these headers are set on every request.
struct StackWriter {
    buf: [u8; 128],
    len: usize,
}

impl StackWriter {
    fn new() -> Self {
        StackWriter {
            buf: [0; 128],
            len: 0,
        }
    }

    fn value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(&self.buf[..self.len]).ok()
    }
}

impl std::fmt::Write for StackWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The header that tells the app which mesh identity called it (Envoy's name).
pub const CLIENT_CERT_HEADER: &str = "x-forwarded-client-cert";

/// Replaces whatever the request claims with the verified peer's SPIFFE ID
/// (`URI=<id>`), or removes it for a plaintext peer.
pub fn set_client_identity(headers: &mut HeaderMap, peer: Option<&crate::pki::SpiffeId>) {
    headers.remove(CLIENT_CERT_HEADER);
    if let Some(value) = peer.and_then(|p| HeaderValue::try_from(format!("URI={p}")).ok()) {
        headers.insert(CLIENT_CERT_HEADER, value);
    }
}

/// Appends the client to `x-forwarded-for`, and sets the proto if unset.
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr) {
    use std::fmt::Write;
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => HeaderValue::from_str(&format!("{prior}, {client}")).ok(),
        None => {
            let mut w = StackWriter::new();
            write!(w, "{client}").ok().and_then(|_| w.value())
        }
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
}

/// Keeps an incoming `x-request-id`, or makes a random (v4 UUID) one.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    if headers.contains_key(&X_REQUEST_ID) {
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let r = fastrand::u128(..);
    // Version 4, variant 10.
    let r = (r & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let mut out = [b'-'; 36];
    let mut nibble = 32;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        nibble -= 1;
        *slot = HEX[((r >> (nibble * 4)) & 0xf) as usize];
    }
    if let Ok(v) = HeaderValue::from_bytes(&out) {
        headers.insert(X_REQUEST_ID.clone(), v);
    }
}

/// The request's authority as sent, port included: `:authority` for HTTP/2
/// (or an absolute-form target), `Host` for HTTP/1.1; empty when neither.
pub fn request_authority<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> &'a str {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("")
}

/// The request's host, lower-cased and without port: `:authority` for
/// HTTP/2, `Host` for HTTP/1.1. Borrowed unless it had capitals.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Cow<'a, str> {
    let raw = uri
        .authority()
        .map(|a| a.host())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let host = if raw.starts_with('[') {
        raw.split(']').next().map(|h| &h[1..]).unwrap_or(raw)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers, deflate"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept", "te"]);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn host_named_in_connection_stays() {
        let mut h = map(&[("connection", "host, x-hop"), ("host", "a"), ("x-hop", "1")]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["host"]);
    }

    #[test]
    fn keeps_upgrade_when_tunnelling() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
        add_forwarded(&mut h, "127.0.0.1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn request_id_kept_or_made() {
        let mut h = map(&[("x-request-id", "abc")]);
        ensure_request_id(&mut h);
        assert_eq!(h["x-request-id"], "abc");
        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        let s = h["x-request-id"].to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_eq!(s.matches('-').count(), 4);
    }

    #[test]
    fn host_forms() {
        let h = map(&[("host", "Example.COM:8080")]);
        assert_eq!(request_host(&"/x".parse().unwrap(), &h), "example.com");
        assert_eq!(
            request_host(&"http://[::1]:80/".parse().unwrap(), &HeaderMap::new()),
            "::1"
        );
        assert_eq!(request_host(&"/".parse().unwrap(), &HeaderMap::new()), "");
        assert_eq!(
            request_authority(&"/x".parse().unwrap(), &h),
            "Example.COM:8080"
        );
    }
}
