//! Local rate limits, Linkerd's model: a total bucket, one bucket per caller
//! identity, and overrides giving named callers their own. Each bucket is a
//! GCRA cell (one atomic theoretical-arrival time): lock-free, exact over
//! time, and it tells a refused caller when to come back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::clock::now_ns;
use crate::config::{Bucket, RateLimitConfig};
use crate::pki::SpiffeId;
use crate::stats::ListenerStats;

/// Distinct callers tracked at once; beyond this, new ones share a bucket.
const MAX_IDENTITIES: usize = 10_000;

/// One token bucket as GCRA: `tat` is when the bucket would be full again.
#[derive(Debug)]
pub struct Cell {
    tat: AtomicU64,
    /// Nanoseconds per token.
    interval: u64,
    /// How far ahead of now `tat` may run: burst x interval.
    tolerance: u64,
}

impl Cell {
    pub fn new(b: Bucket) -> Self {
        let interval = (1e9 / b.rps).max(1.0) as u64;
        Cell {
            tat: AtomicU64::new(0),
            interval,
            tolerance: interval.saturating_mul(b.burst as u64),
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&self) -> Result<(), Duration> {
        let now = now_ns();
        let mut tat = self.tat.load(Relaxed);
        loop {
            let next = tat.max(now) + self.interval;
            if next - now > self.tolerance {
                return Err(Duration::from_nanos(next - now - self.tolerance));
            }
            match self.tat.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }
}

/// Callers' buckets, made on first sight.
type Cells = RwLock<HashMap<String, Arc<Cell>>>;

pub struct RateLimiter {
    total: Option<Cell>,
    per_identity: Option<(Bucket, Cells)>,
    overrides: HashMap<String, Cell>,
}

// === impl RateLimiter ===

impl RateLimiter {
    pub fn new(cfg: &RateLimitConfig) -> Self {
        RateLimiter {
            total: cfg.total.map(Cell::new),
            per_identity: cfg.per_identity.map(|b| (b, RwLock::default())),
            overrides: cfg
                .overrides
                .iter()
                .flat_map(|o| {
                    o.identities
                        .iter()
                        .map(|id| (id.clone(), Cell::new(o.bucket)))
                })
                .collect(),
        }
    }

    /// `check` for a listener's request or connection from `caller` (its
    /// mTLS identity, if any), a refusal counted on the listener.
    pub fn admit(&self, caller: Option<&SpiffeId>, stats: &ListenerStats) -> Result<(), Duration> {
        let verdict = self.check(caller.map(SpiffeId::as_str));
        if verdict.is_err() {
            stats.rate_limited.inc();
        }
        verdict
    }

    /// Ok to go on; Err with the wait a refused caller is told to take.
    /// `caller` is the SPIFFE ID from mTLS, when there is one.
    pub fn check(&self, caller: Option<&str>) -> Result<(), Duration> {
        if let Some(total) = &self.total {
            total.take()?;
        }
        if let Some(cell) = caller.and_then(|c| self.overrides.get(c)) {
            return cell.take();
        }
        let Some((bucket, cells)) = &self.per_identity else {
            return Ok(());
        };
        let key = caller.unwrap_or("");
        if let Some(cell) = cells.read().unwrap_or_else(|e| e.into_inner()).get(key) {
            return cell.take();
        }
        let mut cells = cells.write().unwrap_or_else(|e| e.into_inner());
        // Past the cap, unknown callers share the anonymous bucket.
        let key = if cells.len() >= MAX_IDENTITIES {
            ""
        } else {
            key
        };
        let cell = cells
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(Cell::new(*bucket)))
            .clone();
        drop(cells);
        cell.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimitOverride;

    fn bucket(rps: f64, burst: u32) -> Bucket {
        Bucket { rps, burst }
    }

    #[test]
    fn a_bucket_lets_its_burst_through_then_its_rate() {
        let cell = Cell::new(bucket(10.0, 3));
        for _ in 0..3 {
            assert!(cell.take().is_ok());
        }
        let wait = cell.take().unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        std::thread::sleep(wait + Duration::from_millis(5));
        assert!(cell.take().is_ok());
    }

    #[test]
    fn callers_get_their_own_buckets_and_overrides_theirs() {
        let rl = RateLimiter::new(&RateLimitConfig {
            total: None,
            per_identity: Some(bucket(1.0, 1)),
            overrides: vec![RateLimitOverride {
                identities: vec!["spiffe://td/vip".into()],
                bucket: bucket(1.0, 5),
            }],
        });
        assert!(rl.check(Some("spiffe://td/a")).is_ok());
        assert!(rl.check(Some("spiffe://td/a")).is_err());
        assert!(rl.check(Some("spiffe://td/b")).is_ok());
        assert!(rl.check(None).is_ok());
        assert!(
            rl.check(None).is_err(),
            "callers without identity share one"
        );
        for _ in 0..5 {
            assert!(rl.check(Some("spiffe://td/vip")).is_ok());
        }
        assert!(rl.check(Some("spiffe://td/vip")).is_err());
    }
}
