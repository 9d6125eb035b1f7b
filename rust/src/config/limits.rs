//! A listener's `limits`: how much of a connection and a request head it
//! takes, and how long it waits, before refusing. The defaults sit where
//! Envoy's and HAProxy's usual settings do; every one is per listener.

use std::time::Duration;

use serde_json::Value;

use super::decode::Decoder;

/// What one listener tolerates. Sizes in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connections open at once (handshakes included); more are closed at once.
    pub max_connections: u64,
    /// HTTP/1.1: the request line and headers together (431 over it).
    pub header_bytes: usize,
    /// HTTP/1.1: header lines in one request head (431 over it).
    pub max_headers: usize,
    /// HTTP/1.1: the whole request head must be in within this once its
    /// first byte is (slowloris); the connection is closed otherwise.
    pub header_timeout: Duration,
    /// HTTP: a connection with no request in flight for this long is
    /// closed (GOAWAY on HTTP/2). TCP: no byte either way for this long.
    pub idle_timeout: Duration,
    /// A request body that sends nothing for this long: 408.
    pub body_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_header_list_bytes: u32,
    /// Streams a client may cancel within `RESET_WINDOW` (when they are also
    /// over half the streams it opened there) before it gets GOAWAY.
    pub h2_max_resets: u32,
}

/// The window `h2_max_resets` counts in.
pub const RESET_WINDOW: Duration = Duration::from_secs(10);

/// HTTP keep-alive idle by default; TCP listeners default to an hour
/// (Envoy's tcp_proxy idle), long-lived database connections included.
const HTTP_IDLE: Duration = Duration::from_secs(60);
const TCP_IDLE: Duration = Duration::from_secs(3600);

impl ListenerLimits {
    pub fn defaults(tcp: bool) -> Self {
        ListenerLimits {
            max_connections: 10_000,
            header_bytes: 60 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            idle_timeout: if tcp { TCP_IDLE } else { HTTP_IDLE },
            body_timeout: Duration::from_secs(30),
            h2_max_concurrent_streams: 100,
            h2_max_header_list_bytes: 60 * 1024,
            h2_max_resets: 200,
        }
    }
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self::defaults(false)
    }
}

// === impl Decoder (limits) ===

impl Decoder {
    pub(super) fn limits(&mut self, v: Option<&Value>, path: &str, tcp: bool) -> ListenerLimits {
        let mut l = ListenerLimits::defaults(tcp);
        let Some(v) = v else { return l };
        let Some(f) = self.object(
            v,
            path,
            &[
                "max_connections",
                "header_bytes",
                "max_headers",
                "header_timeout_ms",
                "idle_timeout_ms",
                "body_timeout_ms",
                "h2_max_concurrent_streams",
                "h2_max_header_list_bytes",
                "h2_max_resets",
            ],
        ) else {
            return l;
        };
        if tcp {
            // Only what a byte stream has; an HTTP field here is a mistake worth saying.
            for key in f.keys() {
                if !matches!(key, "max_connections" | "idle_timeout_ms") {
                    self.err(
                        f.at(key),
                        "tcp listeners take only max_connections and idle_timeout_ms",
                    );
                }
            }
        }
        let ms = Duration::from_millis;
        if let Some(n) = self.uint(&f, "max_connections", 1, 1_000_000) {
            l.max_connections = n;
        }
        // hyper's read buffer floor is 8 KiB; below 1 KiB no real client fits.
        if let Some(n) = self.uint(&f, "header_bytes", 1024, 1024 * 1024) {
            l.header_bytes = n as usize;
        }
        if let Some(n) = self.uint(&f, "max_headers", 1, 1000) {
            l.max_headers = n as usize;
        }
        if let Some(n) = self.uint(&f, "header_timeout_ms", 1, 3_600_000) {
            l.header_timeout = ms(n);
        }
        if let Some(n) = self.uint(&f, "idle_timeout_ms", 1, 86_400_000) {
            l.idle_timeout = ms(n);
        }
        if let Some(n) = self.uint(&f, "body_timeout_ms", 1, 3_600_000) {
            l.body_timeout = ms(n);
        }
        if let Some(n) = self.uint(&f, "h2_max_concurrent_streams", 1, 100_000) {
            l.h2_max_concurrent_streams = n as u32;
        }
        if let Some(n) = self.uint(&f, "h2_max_header_list_bytes", 1024, 1024 * 1024) {
            l.h2_max_header_list_bytes = n as u32;
        }
        if let Some(n) = self.uint(&f, "h2_max_resets", 1, 1_000_000) {
            l.h2_max_resets = n as u32;
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn limits_are_checked_by_field_path() {
        let got = issues(
            "listeners:\n \
             - {name: web, address: 127.0.0.1:1, routes: [], limits: {header_bytes: 10, idle_timeout_ms: x, nope: 1}}\n \
             - {name: db, address: 127.0.0.1:2, protocol: tcp, cluster: a, limits: {max_headers: 5}}\n\
             clusters: [{name: a, endpoints: []}]\n",
        );
        for want in [
            "listeners[0].limits.header_bytes: 10 is out of range 1024..=1048576",
            "listeners[0].limits.idle_timeout_ms: expected a whole number, got a string",
            "listeners[0].limits.nope: unknown field",
            "listeners[1].limits.max_headers: tcp listeners take only max_connections and idle_timeout_ms",
        ] {
            assert!(got.iter().any(|g| g.starts_with(want)), "{want} not in {got:?}");
        }
    }
}
