//! Passive health: what real requests tell about an endpoint. Failures in
//! a row eject it for base x (its ejections), capped; an answer below 500
//! clears the streaks. Ejections end lazily, when a pick finds them over.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use super::{Cluster, Endpoint};
use crate::clock::now_ms;

/// How a try on an endpoint ended, as outlier detection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Answer(u16),
    /// No connection could be made.
    ConnectFailure,
    /// The connection or stream failed, or timed out, before an answer.
    Reset,
}

/// An endpoint's health state, shared by every worker.
#[derive(Debug, Default)]
pub struct Health {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// 0 when not ejected.
    ejected_until: AtomicU64,
    /// Ejections so far, which lengthen the next one; reset after a calm spell.
    ejections: AtomicU32,
    last_ejected: AtomicU64,
    /// The active health check's verdict (true until it says otherwise).
    probe_failing: AtomicBool,
}

impl Health {
    pub fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Relaxed)
    }

    pub fn probe_failing(&self) -> bool {
        self.probe_failing.load(Relaxed)
    }

    /// Sets the active check's verdict; true when it changed.
    pub fn set_probe_failing(&self, failing: bool) -> bool {
        self.probe_failing.swap(failing, Relaxed) != failing
    }
}

// === impl Cluster (outlier detection) ===

impl Cluster {
    /// Counts a try's outcome toward the endpoint's streaks, and ejects it
    /// when one reaches its threshold.
    pub fn report(&self, ep: &Endpoint, outcome: Outcome) {
        let h = &ep.health;
        let (server_error, gateway_error) = match outcome {
            Outcome::Answer(s) if s < 500 => {
                // Read first: no shared write on the common, healthy path.
                if h.consecutive_5xx.load(Relaxed) != 0 {
                    h.consecutive_5xx.store(0, Relaxed);
                }
                if h.consecutive_gateway.load(Relaxed) != 0 {
                    h.consecutive_gateway.store(0, Relaxed);
                }
                return;
            }
            Outcome::Answer(s) => (true, matches!(s, 502..=504)),
            Outcome::ConnectFailure => {
                self.stats.connect_failures.inc();
                ep.stats.connect_failures.inc();
                (true, true)
            }
            Outcome::Reset => (true, true),
        };
        let o = &self.spec.outlier;
        let mut trip = false;
        if server_error {
            ep.stats.errors_5xx.inc();
            let n = h.consecutive_5xx.fetch_add(1, Relaxed) + 1;
            trip |= o.consecutive_5xx > 0 && n >= o.consecutive_5xx;
        }
        if gateway_error {
            let n = h.consecutive_gateway.fetch_add(1, Relaxed) + 1;
            trip |= o.consecutive_gateway_errors > 0 && n >= o.consecutive_gateway_errors;
        } else if h.consecutive_gateway.load(Relaxed) != 0 {
            h.consecutive_gateway.store(0, Relaxed);
        }
        if trip {
            self.eject(ep);
        }
    }

    /// Ejects `ep` unless it is ejected already, it is the last endpoint
    /// available, or the cluster is at its maximum ejection percentage (one
    /// ejection is always allowed).
    fn eject(&self, ep: &Endpoint) {
        let h = &ep.health;
        if h.ejected_until.load(Relaxed) != 0 {
            return;
        }
        let o = &self.spec.outlier;
        let total = self.endpoints.len();
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.health.ejected_until.load(Relaxed) != 0)
            .count();
        let allowed = (total * o.max_ejection_percent as usize / 100).max(1);
        let available = (0..total).filter(|&i| self.available(i)).count();
        if ejected >= allowed || available <= 1 {
            return;
        }
        let now = now_ms();
        let max = o.max_ejection.as_millis() as u64;
        // A calm spell as long as the longest ejection forgives the past ones.
        if now.saturating_sub(h.last_ejected.load(Relaxed))
            > max + o.base_ejection.as_millis() as u64
        {
            h.ejections.store(0, Relaxed);
        }
        let n = h.ejections.load(Relaxed) + 1;
        let length = (o.base_ejection.as_millis() as u64)
            .saturating_mul(n as u64)
            .min(max);
        if h.ejected_until
            .compare_exchange(0, now + length, Relaxed, Relaxed)
            .is_ok()
        {
            h.ejections.store(n, Relaxed);
            h.last_ejected.store(now, Relaxed);
            h.consecutive_5xx.store(0, Relaxed);
            h.consecutive_gateway.store(0, Relaxed);
            ep.stats.ejections.inc();
            self.recount();
            tracing::warn!(cluster = %self.name, endpoint = %ep.address, "ejected for {length} ms (ejection {n})");
        }
    }

    /// Ends `ep`'s ejection if its time is over; true when it is still ejected.
    pub(super) fn still_ejected(&self, ep: &Endpoint) -> bool {
        let until = ep.health.ejected_until.load(Relaxed);
        if until == 0 {
            return false;
        }
        if until > now_ms() {
            return true;
        }
        if ep
            .health
            .ejected_until
            .compare_exchange(until, 0, Relaxed, Relaxed)
            .is_ok()
        {
            self.recount();
        }
        false
    }
}
