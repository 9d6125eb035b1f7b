//! Properties of the hash ring (proptest): picks are a pure function of the
//! endpoints and the key; taking one endpoint away (or ejecting it) moves
//! only the keys it owned; every endpoint owns a share of the ring close to
//! its weight's.

use proptest::prelude::*;

use super::super::testing::Fixed;
use super::*;

/// Endpoints as (address, weight). The total stays under 409, where every
/// unit of weight gets its full 160 points and removing an endpoint leaves
/// the others' points where they were.
fn endpoints() -> impl Strategy<Value = Vec<(String, u32)>> {
    prop::collection::btree_set("10\\.0\\.[0-9]{1,2}\\.[0-9]{1,3}:[0-9]{2,4}", 1..10).prop_flat_map(
        |addrs| {
            let n = addrs.len();
            (Just(addrs), prop::collection::vec(1u32..=8, n))
                .prop_map(|(addrs, weights)| addrs.into_iter().zip(weights).collect())
        },
    )
}

fn ring(eps: &[(String, u32)]) -> Ring {
    let weights: Vec<u32> = eps.iter().map(|e| e.1).collect();
    let keys: Vec<&str> = eps.iter().map(|e| e.0.as_str()).collect();
    Ring::new(&weights, &keys)
}

/// The fraction of the 64-bit ring each endpoint owns: a point owns the arc
/// from the point before it (wrapping) up to itself, as `pick` searches.
fn ring_shares(r: &Ring, n: usize) -> Vec<f64> {
    let mut owned = vec![0u128; n];
    let last = r.points.last().expect("points").0;
    let mut prev = last;
    for (i, &(p, e)) in r.points.iter().enumerate() {
        let arc = if i == 0 {
            // Wraps: from just past the last point, through 0, up to the first.
            (u64::MAX - prev) as u128 + p as u128 + 1
        } else {
            (p - prev) as u128
        };
        owned[e as usize] += arc;
        prev = p;
    }
    let full = u64::MAX as f64 + 1.0;
    owned.iter().map(|&a| a as f64 / full).collect()
}

proptest! {
    #[test]
    fn deterministic(eps in endpoints(), keys in prop::collection::vec(any::<u64>(), 1..64)) {
        let (a, b) = (ring(&eps), ring(&eps));
        let loads = Fixed::all(eps.len());
        for k in keys {
            let first = a.pick(&loads, k);
            prop_assert!(first.is_some());
            prop_assert_eq!(first, a.pick(&loads, k));
            prop_assert_eq!(first, b.pick(&loads, k));
        }
    }

    #[test]
    fn removing_one_endpoint_moves_only_its_keys(
        eps in endpoints().prop_filter("two or more", |e| e.len() > 1),
        gone in any::<prop::sample::Index>(),
        keys in prop::collection::vec(any::<u64>(), 1..256),
    ) {
        let gone = gone.index(eps.len());
        let before = ring(&eps);
        let mut rest = eps.clone();
        rest.remove(gone);
        let after = ring(&rest);
        let mut ejected = Fixed::all(eps.len());
        ejected.available[gone] = false;
        // Index in `rest` of an endpoint of `eps`.
        let renumber = |i: usize| if i > gone { i - 1 } else { i };
        for k in keys {
            let old = before.pick(&Fixed::all(eps.len()), k).expect("a pick");
            let new = after.pick(&Fixed::all(rest.len()), k).expect("a pick");
            if old != gone {
                prop_assert_eq!(new, renumber(old), "key {} moved off a remaining endpoint", k);
            }
            // Ejecting it is the same as removing it.
            let skipped = before.pick(&ejected, k).expect("a pick");
            prop_assert_eq!(renumber(skipped), new);
        }
    }

    #[test]
    fn shares_follow_weights(eps in endpoints()) {
        let r = ring(&eps);
        let total: u32 = eps.iter().map(|e| e.1).sum();
        let shares = ring_shares(&r, eps.len());
        prop_assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        for (i, ((addr, w), share)) in eps.iter().zip(&shares).enumerate() {
            let want = f64::from(*w) / f64::from(total);
            // 160 points per unit of weight: the spread is a few percent,
            // these bounds only catch an endpoint starved or hogging.
            prop_assert!(
                (0.6..1.5).contains(&(share / want)),
                "endpoint {} ({}, weight {}) owns {:.4}, expected about {:.4}",
                i, addr, w, share, want
            );
        }
    }
}
