//! Weighted random: cumulative weights and a binary search.

use super::Loads;

pub struct WeightedRandom {
    cumulative: Vec<u64>,
}

impl WeightedRandom {
    pub fn new(weights: &[u32]) -> Self {
        let mut sum = 0;
        let cumulative = weights
            .iter()
            .map(|&w| {
                sum += w as u64;
                sum
            })
            .collect();
        WeightedRandom { cumulative }
    }

    /// Draws one index by weight, ignoring availability.
    pub fn draw(&self) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let r = fastrand::u64(..total);
        Some(self.cumulative.partition_point(|&c| c <= r))
    }

    pub fn pick(&self, loads: &impl Loads) -> Option<usize> {
        let i = self.draw()?;
        if loads.available(i) {
            return Some(i);
        }
        // Rare path: walk on from the draw to the next available endpoint.
        let n = self.cumulative.len();
        (1..n).map(|k| (i + k) % n).find(|&j| loads.available(j))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn shares_follow_weights() {
        let w = [1, 3, 6];
        let b = WeightedRandom::new(&w);
        let h = histogram(60_000, 3, || b.pick(&Fixed::all(3)));
        assert_shares(&h, &w, 0.02);
    }

    #[test]
    fn zero_weight_is_never_drawn() {
        let b = WeightedRandom::new(&[0, 5]);
        let h = histogram(1000, 2, || b.draw());
        assert_eq!(h[0], 0);
        assert!(WeightedRandom::new(&[0, 0]).draw().is_none());
        assert!(WeightedRandom::new(&[]).draw().is_none());
    }
}
