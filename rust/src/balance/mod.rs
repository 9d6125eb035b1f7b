//! Endpoint selection. Each policy is built once per config from the
//! endpoints' weights and then picks lock-free; the live state it needs
//! (availability, in-flight counts) comes from the caller through [`Loads`].

mod least_request;
mod peak_ewma;
mod random;
mod ring_hash;
mod round_robin;

pub use peak_ewma::Rtt;
pub use ring_hash::hash_bytes;

use crate::config::LbPolicy;

/// What a balancer may ask about the endpoints at pick time.
pub trait Loads {
    /// False while an endpoint is ejected.
    fn available(&self, i: usize) -> bool;
    /// Requests in flight to the endpoint.
    fn active(&self, i: usize) -> u64;
    /// The endpoint's response-time estimate (peak_ewma only).
    fn rtt_ns(&self, _i: usize) -> u64 {
        0
    }
}

pub enum Balancer {
    RoundRobin(round_robin::RoundRobin),
    LeastRequest(least_request::LeastRequest),
    Random(random::WeightedRandom),
    RingHash(ring_hash::Ring),
    PeakEwma(peak_ewma::PeakEwma),
}

impl Balancer {
    /// `keys` names each endpoint stably (its address): the hash ring uses it.
    pub fn new(policy: LbPolicy, weights: &[u32], keys: &[&str]) -> Self {
        match policy {
            LbPolicy::RoundRobin => Balancer::RoundRobin(round_robin::RoundRobin::new(weights)),
            LbPolicy::LeastRequest => {
                Balancer::LeastRequest(least_request::LeastRequest::new(weights))
            }
            LbPolicy::Random => Balancer::Random(random::WeightedRandom::new(weights)),
            LbPolicy::RingHash => Balancer::RingHash(ring_hash::Ring::new(weights, keys)),
            LbPolicy::PeakEwma => Balancer::PeakEwma(peak_ewma::PeakEwma::new(weights)),
        }
    }

    /// Picks an available endpoint; `hash` is the request's key for ring_hash.
    pub fn pick(&self, loads: &impl Loads, hash: Option<u64>) -> Option<usize> {
        match self {
            Balancer::RoundRobin(b) => b.pick(loads),
            Balancer::LeastRequest(b) => b.pick(loads),
            Balancer::Random(b) => b.pick(loads),
            Balancer::RingHash(b) => b.pick(loads, hash.unwrap_or_else(|| fastrand::u64(..))),
            Balancer::PeakEwma(b) => b.pick(loads),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Loads;
    use std::cell::RefCell;

    /// Loads for tests: a fixed availability mask, adjustable actives and
    /// response times.
    pub struct Fixed {
        pub available: Vec<bool>,
        pub active: RefCell<Vec<u64>>,
        pub rtt: RefCell<Vec<u64>>,
    }

    impl Fixed {
        pub fn all(n: usize) -> Self {
            Fixed {
                available: vec![true; n],
                active: RefCell::new(vec![0; n]),
                rtt: RefCell::new(vec![1; n]),
            }
        }
    }

    impl Loads for Fixed {
        fn available(&self, i: usize) -> bool {
            self.available[i]
        }
        fn active(&self, i: usize) -> u64 {
            self.active.borrow()[i]
        }
        fn rtt_ns(&self, i: usize) -> u64 {
            self.rtt.borrow()[i]
        }
    }

    /// Counts picks over `n` draws.
    pub fn histogram(n: usize, len: usize, mut pick: impl FnMut() -> Option<usize>) -> Vec<usize> {
        let mut h = vec![0; len];
        for _ in 0..n {
            h[pick().expect("a pick")] += 1;
        }
        h
    }

    /// Asserts each share is within `tol` (absolute fraction) of its expected weight share.
    pub fn assert_shares(h: &[usize], weights: &[u32], tol: f64) {
        let total: usize = h.iter().sum();
        let wsum: u32 = weights.iter().sum();
        for (i, (&c, &w)) in h.iter().zip(weights).enumerate() {
            let got = c as f64 / total as f64;
            let want = w as f64 / wsum as f64;
            assert!(
                (got - want).abs() <= tol,
                "endpoint {i}: share {got:.3}, expected {want:.3} (+-{tol}) in {h:?}"
            );
        }
    }
}
