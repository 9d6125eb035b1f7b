//! Least request by the power of two choices: draw two endpoints by weight,
//! send to the one with fewer requests in flight per unit of weight.

use super::random::WeightedRandom;
use super::Loads;

pub struct LeastRequest {
    weights: Vec<u32>,
    draw: WeightedRandom,
}

impl LeastRequest {
    pub fn new(weights: &[u32]) -> Self {
        LeastRequest {
            weights: weights.to_vec(),
            draw: WeightedRandom::new(weights),
        }
    }

    pub fn pick(&self, loads: &impl Loads) -> Option<usize> {
        let n = self.weights.len();
        if n <= 1 {
            return (n == 1 && loads.available(0)).then_some(0);
        }
        let a = self.draw.pick(loads)?;
        let mut b = self.draw.pick(loads)?;
        if a == b {
            b = (a + 1 + fastrand::usize(..n - 1)) % n;
            if !loads.available(b) {
                return Some(a);
            }
        }
        // Compare (active + 1) / weight without division.
        let cost = |i: usize| (loads.active(i) + 1) as u128;
        let (wa, wb) = (self.weights[a] as u128, self.weights[b] as u128);
        Some(if cost(a) * wb <= cost(b) * wa { a } else { b })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn avoids_the_busy_endpoint() {
        let b = LeastRequest::new(&[1, 1, 1]);
        let loads = Fixed::all(3);
        loads.active.borrow_mut()[0] = 100;
        let h = histogram(3000, 3, || b.pick(&loads));
        // Endpoint 0 wins only when both draws land on it and the re-draw is unavailable: never here.
        assert_eq!(h[0], 0, "{h:?}");
        assert!(h[1] > 1000 && h[2] > 1000, "{h:?}");
    }

    #[test]
    fn idle_endpoints_share_evenly() {
        let b = LeastRequest::new(&[1, 1, 1, 1]);
        let h = histogram(40_000, 4, || b.pick(&Fixed::all(4)));
        assert_shares(&h, &[1, 1, 1, 1], 0.02);
    }

    #[test]
    fn follows_in_flight_load() {
        // Simulate requests that never finish: picks should spread to keep actives level.
        let b = LeastRequest::new(&[1, 1, 1]);
        let loads = Fixed::all(3);
        for _ in 0..300 {
            let i = b.pick(&loads).unwrap();
            loads.active.borrow_mut()[i] += 1;
        }
        let a = loads.active.borrow();
        let (min, max) = (a.iter().min().unwrap(), a.iter().max().unwrap());
        assert!(max - min <= 10, "{a:?}");
    }

    #[test]
    fn single_and_unavailable() {
        let b = LeastRequest::new(&[1]);
        assert_eq!(b.pick(&Fixed::all(1)), Some(0));
        let mut loads = Fixed::all(2);
        loads.available[0] = false;
        let b = LeastRequest::new(&[1, 1]);
        assert!((0..100).all(|_| b.pick(&loads) == Some(1)));
    }
}
