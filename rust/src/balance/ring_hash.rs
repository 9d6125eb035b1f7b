//! Consistent hashing on a ring of virtual nodes (ketama-style): a key keeps
//! landing on the same endpoint, and adding or removing one endpoint moves
//! only about 1/n of the keys.

use super::Loads;

/// Virtual nodes per unit of weight, and the most the ring may hold.
const NODES_PER_WEIGHT: u64 = 160;
const MAX_RING: u64 = 64 * 1024;

pub struct Ring {
    /// (point, endpoint index), sorted by point.
    points: Vec<(u64, u32)>,
}

/// FNV-1a followed by a 64-bit finalizer (from SplitMix64) for avalanche.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Ring {
    pub fn new(weights: &[u32], keys: &[&str]) -> Self {
        let total: u64 = weights.iter().map(|&w| w as u64).sum::<u64>().max(1);
        let per_weight = NODES_PER_WEIGHT.min((MAX_RING / total).max(1));
        let mut points = Vec::new();
        for (i, (&w, key)) in weights.iter().zip(keys).enumerate() {
            for v in 0..(w as u64 * per_weight) {
                points.push((hash_bytes(format!("{key}#{v}").as_bytes()), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    pub fn pick(&self, loads: &impl Loads, hash: u64) -> Option<usize> {
        let n = self.points.len();
        if n == 0 {
            return None;
        }
        let start = self.points.partition_point(|&(p, _)| p < hash);
        (0..n)
            .map(|k| self.points[(start + k) % n].1 as usize)
            .find(|&i| loads.available(i))
    }
}

#[cfg(test)]
#[path = "ring_hash_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn ring(n: usize) -> (Ring, Vec<String>) {
        let keys: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:80")).collect();
        let refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
        (Ring::new(&vec![1; n], &refs), keys)
    }

    #[test]
    fn same_key_same_endpoint() {
        let (r, _) = ring(5);
        let loads = Fixed::all(5);
        for user in 0..200 {
            let h = hash_bytes(format!("user-{user}").as_bytes());
            let first = r.pick(&loads, h);
            assert!((0..10).all(|_| r.pick(&loads, h) == first));
        }
    }

    #[test]
    fn keys_spread_and_move_little() {
        let (r5, _) = ring(5);
        let (r6, _) = ring(6);
        let (l5, l6) = (Fixed::all(5), Fixed::all(6));
        let keys: Vec<u64> = (0..20_000)
            .map(|k| hash_bytes(format!("k{k}").as_bytes()))
            .collect();
        let mut it = keys.iter();
        let h = histogram(keys.len(), 5, || r5.pick(&l5, *it.next().unwrap()));
        assert_shares(&h, &[1; 5], 0.05);
        let moved = keys
            .iter()
            .filter(|&&k| r5.pick(&Fixed::all(5), k) != r6.pick(&l6, k))
            .count();
        let frac = moved as f64 / keys.len() as f64;
        assert!(
            frac < 0.25,
            "{frac} of keys moved when one endpoint of six was added"
        );
    }

    #[test]
    fn unavailable_endpoint_sheds_only_its_keys() {
        let (r, _) = ring(4);
        let all = Fixed::all(4);
        let mut some = Fixed::all(4);
        some.available[2] = false;
        for k in 0..2000u64 {
            let h = hash_bytes(&k.to_le_bytes());
            let before = r.pick(&all, h).unwrap();
            let after = r.pick(&some, h).unwrap();
            assert_ne!(after, 2);
            if before != 2 {
                assert_eq!(before, after);
            }
        }
    }
}
