//! Request latency as a fixed log-scale histogram of atomic counters, cheap
//! enough for the request path: recording is two relaxed `fetch_add`s and a
//! load (plus a `fetch_max` on a new maximum), with no lock and no allocation.
//!
//! Buckets are in microseconds, three per doubling, so each is 2^(1/3) ≈ 1.26
//! times as wide as the one before. Bucket 0 holds everything under
//! 2^(17/3) µs ≈ 50.8 µs, buckets 1..=61 cover 50.8 µs to 2^26 µs ≈ 67.1 s, and
//! the last bucket holds everything slower. Quantiles are interpolated
//! linearly inside their bucket and capped at the exact maximum, so they are
//! within one bucket width (26%) of the true value.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde_json::{json, Value};

pub const BUCKETS: usize = 63;

/// Where the second and third bucket of each doubling start, as mantissas in
/// 1.16 fixed point: ceil(2^(1/3) * 2^16) and ceil(2^(2/3) * 2^16).
const MANTISSAS: [u64; 3] = [1 << 16, 82_571, 104_032];

/// Bucket 1 starts at 2^(FIRST/3) µs.
const FIRST: u32 = 17;

/// The bucket of a latency in microseconds: a few shifts and compares.
#[inline]
pub fn bucket(us: u64) -> usize {
    if us == 0 {
        return 0;
    }
    let octave = 63 - us.leading_zeros();
    // The mantissa in [1, 2) as 1.16 fixed point; truncation keeps bucket
    // edges exactly where `lower_us` puts them.
    let m = if octave >= 16 {
        us >> (octave - 16)
    } else {
        us << (16 - octave)
    };
    let third = u32::from(m >= MANTISSAS[1]) + u32::from(m >= MANTISSAS[2]);
    let idx = (octave * 3 + third).saturating_sub(FIRST - 1) as usize;
    idx.min(BUCKETS - 1)
}

/// A bucket's inclusive lower edge in microseconds (0 for bucket 0).
pub fn lower_us(i: usize) -> f64 {
    if i == 0 {
        return 0.0;
    }
    let k = i as u32 + FIRST - 1;
    let octave = (k / 3) as i32;
    MANTISSAS[(k % 3) as usize] as f64 * 2f64.powi(octave - 16)
}

#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

/// A histogram's counts at one moment, to compute quantiles from.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub buckets: [u64; BUCKETS],
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
}

// === impl Histogram ===

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    #[inline]
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket(us)].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        // A plain load first: a new maximum is rare, a locked RMW each time is not free.
        if us > self.max_us.load(Relaxed) {
            self.max_us.fetch_max(us, Relaxed);
        }
    }

    /// Not one atomic snapshot: a request recorded meanwhile may be in the
    /// buckets but not yet in the sum, which moves the mean by a hair.
    pub fn summary(&self) -> Summary {
        let buckets: [u64; BUCKETS] = std::array::from_fn(|i| self.buckets[i].load(Relaxed));
        Summary {
            count: buckets.iter().sum(),
            buckets,
            sum_us: self.sum_us.load(Relaxed),
            max_us: self.max_us.load(Relaxed),
        }
    }

    /// `{"count", "mean", "p50", "p90", "p99", "max"}` in milliseconds; all
    /// zeros while the count is 0 (numbers keep one type; `count` says
    /// whether they mean anything).
    pub fn to_json(&self) -> Value {
        self.summary().to_json()
    }
}

// === impl Summary ===

impl Summary {
    /// The latency at quantile `q` (0..=1) in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let max = self.max_us as f64;
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (below + n) as f64 >= rank {
                let lo = lower_us(i);
                let hi = if i + 1 < BUCKETS {
                    lower_us(i + 1)
                } else {
                    max
                };
                let within = (rank - below as f64) / n as f64;
                return (lo + (hi - lo) * within).min(max);
            }
            below += n;
        }
        max
    }

    pub fn to_json(&self) -> Value {
        let ms = |us: f64| (us).round() / 1000.0;
        let mean = if self.count == 0 {
            0.0
        } else {
            self.sum_us as f64 / self.count as f64
        };
        json!({
            "count": self.count,
            "mean": ms(mean),
            "p50": ms(self.quantile_us(0.5)),
            "p90": ms(self.quantile_us(0.9)),
            "p99": ms(self.quantile_us(0.99)),
            "max": ms(self.max_us as f64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket edges used for interpolation are the ones `bucket` sorts by.
    #[test]
    fn bucket_edges_match_lower_bounds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(50), 0);
        assert_eq!(bucket(51), 1);
        assert!((lower_us(1) - 50.8).abs() < 0.1, "{}", lower_us(1));
        assert!((lower_us(BUCKETS - 1) / 1e6 - 67.1).abs() < 0.1);
        assert_eq!(bucket(60_000_000), BUCKETS - 2);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        for i in 1..BUCKETS {
            let edge = lower_us(i).ceil() as u64;
            assert_eq!(bucket(edge), i, "edge {edge}");
            assert_eq!(bucket(edge - 1), i - 1, "below edge {edge}");
        }
    }

    #[test]
    fn buckets_grow_by_cube_root_of_two() {
        for i in 2..BUCKETS {
            let ratio = lower_us(i) / lower_us(i - 1);
            assert!((1.259..1.261).contains(&ratio), "bucket {i}: {ratio}");
        }
    }

    #[test]
    fn empty_histogram_is_all_zeros() {
        let h = Histogram::default();
        assert_eq!(h.summary().quantile_us(0.5), 0.0);
        assert_eq!(
            h.to_json(),
            json!({"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0})
        );
    }

    #[test]
    fn one_sample_is_exact() {
        let h = Histogram::default();
        h.record(Duration::from_micros(1234));
        let j = h.to_json();
        assert_eq!(j["count"], 1);
        // Interpolation lands mid-bucket; the exact maximum caps it.
        assert!(j["p50"].as_f64().unwrap() <= 1.234);
        assert_eq!(j["max"], 1.234);
        assert_eq!(j["mean"], 1.234);
    }

    /// Quantiles of spread-out samples stay within one bucket width of the
    /// exact ones.
    #[test]
    fn quantiles_within_one_bucket() {
        let mut rng = fastrand::Rng::with_seed(7);
        for spread in [
            (100, 200),
            (1_000, 50_000),
            (20, 5_000_000),
            (40_000, 41_000),
        ] {
            let h = Histogram::default();
            let mut samples: Vec<u64> = (0..10_000)
                .map(|_| {
                    // Log-uniform, like real latencies.
                    let (a, b) = (spread.0 as f64, spread.1 as f64);
                    (a * (b / a).powf(rng.f64())) as u64
                })
                .collect();
            for &s in &samples {
                h.record(Duration::from_micros(s));
            }
            samples.sort_unstable();
            let s = h.summary();
            assert_eq!(s.count, 10_000);
            assert_eq!(s.max_us, *samples.last().unwrap());
            for q in [0.5, 0.9, 0.99] {
                let exact = samples[(q * samples.len() as f64) as usize - 1] as f64;
                let est = s.quantile_us(q);
                let ratio = est / exact;
                let bound = if exact < lower_us(1) {
                    // Bucket 0 is linear from 0; compare absolutely.
                    (est - exact).abs() <= lower_us(1)
                } else {
                    (1.0 / 1.26..=1.26).contains(&ratio)
                };
                assert!(bound, "{spread:?} q{q}: exact {exact} estimate {est}");
            }
        }
    }

    #[test]
    fn quantile_interpolates_inside_bucket() {
        // 100 samples spread evenly over one bucket: the median lands mid-bucket.
        let i = bucket(10_000);
        let (lo, hi) = (lower_us(i), lower_us(i + 1));
        let h = Histogram::default();
        for k in 0..100 {
            let us = lo + (hi - lo) * (k as f64 + 0.5) / 100.0;
            h.record(Duration::from_micros(us as u64));
        }
        let s = h.summary();
        assert_eq!(s.buckets[i], 100);
        let mid = (lo + hi) / 2.0;
        assert!(
            (s.quantile_us(0.5) - mid).abs() < 1.0,
            "{}",
            s.quantile_us(0.5)
        );
        assert!(s.quantile_us(1.0) <= s.max_us as f64);
    }

    #[test]
    fn overflow_bucket_uses_max() {
        let h = Histogram::default();
        h.record(Duration::from_secs(100));
        h.record(Duration::from_secs(300));
        let s = h.summary();
        assert_eq!(s.buckets[BUCKETS - 1], 2);
        let p50 = s.quantile_us(0.5) / 1e6;
        assert!((67.0..=300.0).contains(&p50), "{p50}");
        assert_eq!(s.quantile_us(1.0), 300e6);
    }
}
