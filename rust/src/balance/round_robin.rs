//! Weighted round robin: a precomputed smooth schedule (as nginx interleaves
//! weights) walked by one atomic cursor, so picks take no lock.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::Loads;

/// Longest schedule kept; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 4096;

pub struct RoundRobin {
    schedule: Vec<u32>,
    cursor: AtomicUsize,
}

impl RoundRobin {
    pub fn new(weights: &[u32]) -> Self {
        let schedule = smooth_schedule(&scaled(weights));
        // Start at a random place so that many proxies do not march in step.
        let start = if schedule.is_empty() {
            0
        } else {
            fastrand::usize(..schedule.len())
        };
        RoundRobin {
            schedule,
            cursor: AtomicUsize::new(start),
        }
    }

    pub fn pick(&self, loads: &impl Loads) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        // An unavailable endpoint's turn goes to the next turn in the schedule,
        // not to its neighbour: the rest keep equal shares.
        (0..len)
            .map(|_| self.schedule[self.cursor.fetch_add(1, Relaxed) % len] as usize)
            .find(|&i| loads.available(i))
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Reduces weights by their gcd, then proportionally if still too long.
fn scaled(weights: &[u32]) -> Vec<u64> {
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, w as u64)).max(1);
    let mut w: Vec<u64> = weights.iter().map(|&w| w as u64 / g).collect();
    let sum: u64 = w.iter().sum();
    if sum > MAX_SCHEDULE {
        w = w.iter().map(|&x| (x * MAX_SCHEDULE / sum).max(1)).collect();
    }
    w
}

/// nginx's smooth weighted round robin, unrolled once over a full cycle.
fn smooth_schedule(weights: &[u64]) -> Vec<u32> {
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn smooth_interleaves_weights() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[1, 2]).len(), 3);
    }

    #[test]
    fn exact_shares_over_a_cycle() {
        let rr = RoundRobin::new(&[1, 2, 3]);
        let loads = Fixed::all(3);
        let h = histogram(600, 3, || rr.pick(&loads));
        assert_eq!(h, vec![100, 200, 300]);
    }

    #[test]
    fn skips_unavailable() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        let mut loads = Fixed::all(3);
        loads.available[1] = false;
        let h = histogram(300, 3, || rr.pick(&loads));
        assert_eq!(h[1], 0);
        assert_eq!(h[0] + h[2], 300);
        loads.available = vec![false; 3];
        assert_eq!(rr.pick(&loads), None);
    }

    #[test]
    fn huge_weights_are_scaled() {
        let rr = RoundRobin::new(&[10_000, 10_000, 1]);
        assert!(rr.schedule.len() as u64 <= MAX_SCHEDULE + 3);
        assert!(rr.schedule.contains(&2));
    }

    #[test]
    fn an_unavailable_endpoints_turns_are_shared_evenly() {
        let b = RoundRobin::new(&[1, 1, 1, 1]);
        let mut loads = Fixed::all(4);
        loads.available[2] = false;
        let h = histogram(3000, 4, || b.pick(&loads));
        assert_eq!(h[2], 0);
        assert_shares(&[h[0], h[1], h[3]], &[1, 1, 1], 0.02);
    }
}
