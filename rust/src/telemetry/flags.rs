//! Response flags in Envoy's spirit: why an exchange ended as it did, for
//! access logs and tap.

pub const NO_ROUTE: u16 = 1;
pub const UPSTREAM_FAILURE: u16 = 1 << 1;
pub const UPSTREAM_TIMEOUT: u16 = 1 << 2;
pub const OVERFLOW: u16 = 1 << 3;
pub const RATE_LIMITED: u16 = 1 << 4;
pub const FAULT_DELAY: u16 = 1 << 5;
pub const FAULT_ABORT: u16 = 1 << 6;
pub const DENIED: u16 = 1 << 7;
pub const NO_HEALTHY_UPSTREAM: u16 = 1 << 8;
pub const RETRIED: u16 = 1 << 9;
pub const CLIENT_RESET: u16 = 1 << 10;

const NAMES: [(u16, &str); 11] = [
    (NO_ROUTE, "no_route"),
    (UPSTREAM_FAILURE, "upstream_failure"),
    (UPSTREAM_TIMEOUT, "upstream_timeout"),
    (OVERFLOW, "overflow"),
    (RATE_LIMITED, "rate_limited"),
    (FAULT_DELAY, "fault_delay"),
    (FAULT_ABORT, "fault_abort"),
    (DENIED, "denied"),
    (NO_HEALTHY_UPSTREAM, "no_healthy_upstream"),
    (RETRIED, "retried"),
    (CLIENT_RESET, "client_reset"),
];

pub fn names(flags: u16) -> Vec<&'static str> {
    NAMES
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// The flag of one of the proxy's own replies, by its `x-meshctl-error` kind.
pub fn of_local_reply(kind: &[u8]) -> u16 {
    match kind {
        b"no_route" => NO_ROUTE,
        b"connect_failure" | b"upstream_error" | b"dns_failure" => UPSTREAM_FAILURE,
        b"timeout" => UPSTREAM_TIMEOUT,
        b"overflow" => OVERFLOW,
        b"rate_limited" => RATE_LIMITED,
        b"fault" => FAULT_ABORT,
        b"denied" | b"egress_denied" => DENIED,
        b"no_healthy_endpoint" | b"no_backend" => NO_HEALTHY_UPSTREAM,
        _ => 0,
    }
}
