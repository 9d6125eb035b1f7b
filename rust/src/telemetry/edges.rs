//! Golden metrics per edge: one set of counters for each (listener, route,
//! source, destination) a request went over. A route keeps a small table of
//! the edges it has seen, so that the request path finds its counters with
//! one `ArcSwap` load and a short scan, and only a new edge takes a lock.
//! Counters live in the registry, keyed by their labels, so that they
//! survive config updates.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::Direction;
use crate::latency::Histogram;
use crate::stats::Counter;

/// What an edge is called in metrics; `source`/`destination` are
/// "namespace/name" of mesh services, or "" when unknown.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EdgeLabels {
    pub direction: Direction,
    pub listener: Arc<str>,
    pub route: Arc<str>,
    pub source: Arc<str>,
    pub destination: Arc<str>,
    pub tls: bool,
    pub tcp: bool,
}

/// gRPC statuses that mean the server failed (gRFC-style: like a 5xx);
/// the others (not found, invalid argument, ...) are the caller's doing.
const GRPC_FAILURES: [u16; 6] = [2, 4, 12, 13, 14, 15];

/// No gRPC status (a plain HTTP exchange).
pub const NO_GRPC: u16 = 31;

/// How an exchange ended: its status code, gRPC status and class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// HTTP status; 0 for TCP connections and for "no answer".
    pub code: u16,
    pub grpc: u16,
    pub failure: bool,
}

impl Outcome {
    pub fn http(code: u16, grpc: Option<u16>, ended_cleanly: bool) -> Self {
        let grpc = grpc.map_or(NO_GRPC, |g| g.min(30));
        Outcome {
            code,
            grpc,
            failure: code >= 500 || !ended_cleanly || GRPC_FAILURES.contains(&grpc),
        }
    }

    fn key(self) -> u64 {
        u64::from(self.code.min(1023)) | u64::from(self.grpc) << 10 | u64::from(self.failure) << 15
    }

    fn from_key(key: u64) -> Self {
        Outcome {
            code: (key & 1023) as u16,
            grpc: ((key >> 10) & 31) as u16,
            failure: key >> 15 & 1 == 1,
        }
    }
}

const SLOTS: usize = 16;
const COUNT_BITS: u32 = 48;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Counts by outcome without a lock: each slot packs an outcome (high 16
/// bits, +1 so that 0 means free) and its count (low 48 bits). A slot is
/// claimed once by compare-and-swap; an edge rarely sees more than a few
/// outcomes, and past 16 the rest are counted as code 0.
#[derive(Debug)]
pub struct OutcomeCounts([AtomicU64; SLOTS]);

impl Default for OutcomeCounts {
    fn default() -> Self {
        OutcomeCounts([const { AtomicU64::new(0) }; SLOTS])
    }
}

impl OutcomeCounts {
    pub fn record(&self, outcome: Outcome) {
        let tag = (outcome.key() + 1) << COUNT_BITS;
        for slot in &self.0[..SLOTS - 1] {
            let mut v = slot.load(Relaxed);
            if v == 0 {
                match slot.compare_exchange(0, tag | 1, Relaxed, Relaxed) {
                    Ok(_) => return,
                    Err(now) => v = now,
                }
            }
            if v & !COUNT_MASK == tag {
                slot.fetch_add(1, Relaxed);
                return;
            }
        }
        let other = Outcome { code: 0, ..outcome };
        let last = &self.0[SLOTS - 1];
        let _ = last.compare_exchange(0, (other.key() + 1) << COUNT_BITS, Relaxed, Relaxed);
        last.fetch_add(1, Relaxed);
    }

    pub fn read(&self) -> Vec<(Outcome, u64)> {
        self.0
            .iter()
            .map(|s| s.load(Relaxed))
            .filter(|v| *v != 0)
            .map(|v| (Outcome::from_key((v >> COUNT_BITS) - 1), v & COUNT_MASK))
            .collect()
    }
}

/// The counters of one edge.
#[derive(Debug)]
pub struct EdgeStats {
    pub labels: EdgeLabels,
    /// Finished exchanges (HTTP) or closed connections (TCP), by outcome.
    pub outcomes: OutcomeCounts,
    /// HTTP: to the response head, local replies included.
    pub latency: Histogram,
    pub request_bytes: Counter,
    pub response_bytes: Counter,
    /// TCP: connections opened, and open now.
    pub opened: Counter,
    pub active: Counter,
}

impl EdgeStats {
    pub fn new(labels: EdgeLabels) -> Self {
        EdgeStats {
            labels,
            outcomes: OutcomeCounts::default(),
            latency: Histogram::default(),
            request_bytes: Counter::default(),
            response_bytes: Counter::default(),
            opened: Counter::default(),
            active: Counter::default(),
        }
    }
}

/// Every edge this data plane has counted, by labels.
#[derive(Default)]
pub struct EdgeRegistry {
    edges: Mutex<Vec<Arc<EdgeStats>>>,
}

impl EdgeRegistry {
    pub fn get(&self, labels: EdgeLabels) -> Arc<EdgeStats> {
        let mut edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = edges.iter().find(|e| e.labels == labels) {
            return e.clone();
        }
        let e = Arc::new(EdgeStats::new(labels));
        edges.push(e.clone());
        e
    }

    pub fn all(&self) -> Vec<Arc<EdgeStats>> {
        self.edges.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets edges of listeners no longer configured.
    pub fn retain(&self, listeners: &[&str]) {
        self.edges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|e| listeners.contains(&&*e.labels.listener));
    }
}

/// The edges one route (or one listener, for requests no route took) has
/// seen, by (source, destination cluster): the request path's lookup.
#[derive(Default)]
pub struct EdgeTable {
    seen: ArcSwap<Vec<Seen>>,
}

/// An edge a table has seen: (source, cluster key, counters).
type Seen = (Arc<str>, usize, Arc<EdgeStats>);

impl EdgeTable {
    /// The edge for `source` and `cluster` (a cluster's address as its key,
    /// 0 for none); `labels` builds the labels of a new one.
    #[inline]
    pub fn edge(
        &self,
        source: &str,
        cluster: usize,
        registry: &EdgeRegistry,
        labels: impl FnOnce() -> EdgeLabels,
    ) -> Arc<EdgeStats> {
        if let Some((_, _, e)) = self
            .seen
            .load()
            .iter()
            .find(|(s, c, _)| *c == cluster && &**s == source)
        {
            return e.clone();
        }
        let edge = registry.get(labels());
        self.seen.rcu(|seen| {
            let mut seen = Vec::clone(seen);
            if !seen.iter().any(|(s, c, _)| *c == cluster && &**s == source) {
                seen.push((source.into(), cluster, edge.clone()));
            }
            seen
        });
        edge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(route: &str) -> EdgeLabels {
        EdgeLabels {
            direction: Direction::Inbound,
            listener: "in".into(),
            route: route.into(),
            source: "default/web".into(),
            destination: "default/api".into(),
            tls: true,
            tcp: false,
        }
    }

    #[test]
    fn outcomes_count_per_code_grpc_and_class() {
        let o = OutcomeCounts::default();
        for _ in 0..3 {
            o.record(Outcome::http(200, None, true));
        }
        o.record(Outcome::http(200, Some(14), true));
        o.record(Outcome::http(503, None, true));
        o.record(Outcome::http(200, None, false));
        let mut got = o.read();
        got.sort_by_key(|(o, _)| (o.code, o.grpc, o.failure));
        assert_eq!(
            got,
            vec![
                (
                    Outcome {
                        code: 200,
                        grpc: 14,
                        failure: true
                    },
                    1
                ),
                (
                    Outcome {
                        code: 200,
                        grpc: NO_GRPC,
                        failure: false
                    },
                    3
                ),
                (
                    Outcome {
                        code: 200,
                        grpc: NO_GRPC,
                        failure: true
                    },
                    1
                ),
                (
                    Outcome {
                        code: 503,
                        grpc: NO_GRPC,
                        failure: true
                    },
                    1
                ),
            ]
        );
    }

    #[test]
    fn outcomes_past_the_slots_count_as_code_zero() {
        let o = OutcomeCounts::default();
        for code in 200..230 {
            o.record(Outcome::http(code, None, true));
        }
        let got = o.read();
        assert_eq!(got.iter().map(|(_, n)| n).sum::<u64>(), 30);
        assert_eq!(got.len(), SLOTS);
        assert!(got.iter().any(|(o, n)| o.code == 0 && *n == 15));
    }

    #[test]
    fn tables_find_edges_and_the_registry_keeps_them() {
        let registry = EdgeRegistry::default();
        let table = EdgeTable::default();
        let a = table.edge("default/web", 7, &registry, || labels("r"));
        let b = table.edge("default/web", 7, &registry, || unreachable!());
        assert!(Arc::ptr_eq(&a, &b));
        // A new table (a recompiled route) finds the registry's counters.
        let again = EdgeTable::default().edge("default/web", 9, &registry, || labels("r"));
        assert!(Arc::ptr_eq(&a, &again));
        registry.retain(&[]);
        assert!(registry.all().is_empty());
    }
}
