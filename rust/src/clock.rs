//! A cheap monotonic clock in milliseconds, for ejections and budgets.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the process first asked; never 0 (0 can mean "unset").
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Nanoseconds since the process first asked, for rate limits.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}
