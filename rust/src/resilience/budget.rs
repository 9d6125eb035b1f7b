//! Linkerd's retry budget: over a sliding window, retries may add at most a
//! percentage of the requests, plus a few per second so that a quiet
//! cluster can still retry. A failing upstream therefore never has its load
//! multiplied by retries. Lock-free: the window is ten slices of counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::clock::now_ms;
use crate::config::RetryBudget;

const SLICES: usize = 10;

#[derive(Default)]
struct Slice {
    /// Which slice of time the counts belong to (`now / slice length`).
    epoch: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

pub struct Budget {
    config: RetryBudget,
    slice_ms: u64,
    slices: [Slice; SLICES],
}

// === impl Budget ===

impl Budget {
    pub fn new(config: RetryBudget) -> Self {
        Budget {
            config,
            slice_ms: (config.window.as_millis() as u64 / SLICES as u64).max(1),
            slices: Default::default(),
        }
    }

    /// The slice for `epoch`, emptied first when it last counted an older one.
    fn slice(&self, epoch: u64) -> &Slice {
        let s = &self.slices[epoch as usize % SLICES];
        let seen = s.epoch.load(Relaxed);
        if seen != epoch
            && s.epoch
                .compare_exchange(seen, epoch, Relaxed, Relaxed)
                .is_ok()
        {
            // Racing increments may land in the old counts; the budget is an
            // estimate, and a slice's error is a handful of requests.
            s.requests.store(0, Relaxed);
            s.retries.store(0, Relaxed);
        }
        s
    }

    /// Counts a request (its first try).
    pub fn deposit(&self) {
        self.deposit_at(now_ms());
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(now_ms())
    }

    fn deposit_at(&self, now: u64) {
        self.slice(now / self.slice_ms)
            .requests
            .fetch_add(1, Relaxed);
    }

    fn withdraw_at(&self, now: u64) -> bool {
        let epoch = now / self.slice_ms;
        let current = self.slice(epoch);
        let (mut requests, mut retries) = (0, 0);
        for s in &self.slices {
            if epoch.saturating_sub(s.epoch.load(Relaxed)) < SLICES as u64 {
                requests += s.requests.load(Relaxed);
                retries += s.retries.load(Relaxed);
            }
        }
        let window_s = (self.slice_ms * SLICES as u64) as f64 / 1000.0;
        let allowed = requests as f64 * f64::from(self.config.percent) / 100.0
            + f64::from(self.config.min_per_second) * window_s;
        if (retries as f64) < allowed {
            current.retries.fetch_add(1, Relaxed);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(percent: u32, min_per_second: u32) -> Budget {
        Budget::new(RetryBudget {
            percent,
            min_per_second,
            window: Duration::from_secs(10),
        })
    }

    #[test]
    fn retries_are_a_share_of_requests_plus_a_floor() {
        let b = budget(20, 1); // floor: 1/s over 10 s = 10 retries
        let t = 5_000;
        for _ in 0..1000 {
            b.deposit_at(t);
        }
        let granted = (0..1000).filter(|_| b.withdraw_at(t)).count();
        assert_eq!(granted, 200 + 10);
    }

    #[test]
    fn old_requests_leave_the_window() {
        let b = budget(20, 0);
        for _ in 0..100 {
            b.deposit_at(1_000);
        }
        assert_eq!((0..100).filter(|_| b.withdraw_at(1_000)).count(), 20);
        // Ten seconds on, those requests and retries are gone: nothing to retry on.
        assert!(!b.withdraw_at(12_000));
        for _ in 0..10 {
            b.deposit_at(12_000);
        }
        assert_eq!((0..10).filter(|_| b.withdraw_at(12_500)).count(), 2);
    }
}
