//! Peak-EWMA (Finagle's, Linkerd's default): the power of two choices by
//! cost = a moving average of response times that jumps to any slower
//! sample at once and decays over `DECAY` otherwise, times (requests in
//! flight + 1). A slow endpoint loses traffic within a few requests and
//! wins it back gradually.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::random::WeightedRandom;
use super::Loads;
use crate::clock::now_ms;

/// How long a past sample keeps weighing on the average.
const DECAY: Duration = Duration::from_secs(10);
/// The estimate of an endpoint no answer has come from yet.
const DEFAULT_RTT: Duration = Duration::from_millis(10);

/// One endpoint's response-time estimate, in nanoseconds; lock-free.
/// Racing updates may lose a sample, never corrupt the estimate.
#[derive(Debug)]
pub struct Rtt {
    ewma_ns: AtomicU64,
    stamp_ms: AtomicU64,
}

impl Default for Rtt {
    fn default() -> Self {
        Rtt {
            ewma_ns: AtomicU64::new(DEFAULT_RTT.as_nanos() as u64),
            stamp_ms: AtomicU64::new(now_ms()),
        }
    }
}

impl Rtt {
    pub fn observe(&self, rtt: Duration) {
        let sample = rtt.as_nanos().min(u64::MAX as u128) as f64;
        let now = now_ms();
        let last = self.stamp_ms.swap(now, Relaxed);
        let current = self.ewma_ns.load(Relaxed) as f64;
        let next = if sample > current {
            sample // the peak: a slower answer counts in full at once
        } else {
            let elapsed = now.saturating_sub(last) as f64;
            let w = (-elapsed / DECAY.as_millis() as f64).exp();
            current * w + sample * (1.0 - w)
        };
        self.ewma_ns.store(next as u64, Relaxed);
    }

    pub fn estimate_ns(&self) -> u64 {
        self.ewma_ns.load(Relaxed)
    }
}

pub struct PeakEwma {
    draw: WeightedRandom,
    n: usize,
}

impl PeakEwma {
    pub fn new(weights: &[u32]) -> Self {
        PeakEwma {
            draw: WeightedRandom::new(weights),
            n: weights.len(),
        }
    }

    pub fn pick(&self, loads: &impl Loads) -> Option<usize> {
        if self.n <= 1 {
            return (self.n == 1 && loads.available(0)).then_some(0);
        }
        let a = self.draw.pick(loads)?;
        let mut b = self.draw.pick(loads)?;
        if a == b {
            b = (a + 1 + fastrand::usize(..self.n - 1)) % self.n;
            if !loads.available(b) {
                return Some(a);
            }
        }
        let cost = |i: usize| loads.rtt_ns(i) as u128 * (loads.active(i) + 1) as u128;
        Some(if cost(a) <= cost(b) { a } else { b })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn a_slow_answer_counts_at_once_and_fast_ones_decay_it() {
        let rtt = Rtt::default();
        rtt.observe(Duration::from_millis(50));
        assert_eq!(rtt.estimate_ns(), 50_000_000);
        rtt.observe(Duration::from_millis(1));
        // Almost no time has passed: the peak still dominates.
        assert!(rtt.estimate_ns() > 45_000_000, "{}", rtt.estimate_ns());
    }

    #[test]
    fn the_slower_endpoint_gets_little_traffic() {
        let b = PeakEwma::new(&[1, 1]);
        let loads = Fixed::all(2);
        loads.rtt.borrow_mut()[0] = 51_000_000;
        loads.rtt.borrow_mut()[1] = 1_000_000;
        let h = histogram(1000, 2, || b.pick(&loads));
        assert_eq!(h[0], 0, "{h:?}");
        // Busy enough, the fast one costs more than the idle slow one.
        loads.active.borrow_mut()[1] = 60;
        assert_eq!(b.pick(&loads), Some(0));
    }
}
