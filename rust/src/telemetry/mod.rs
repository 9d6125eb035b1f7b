//! Telemetry: golden metrics per edge (`edges`) and their Prometheus
//! exposition (`prometheus`), trace context and spans (`context`,
//! `export`), access logs (`access_log`) and tap (`tap`), all fed from one
//! per-request record (`exchange`) that exists only when something wants it.

pub mod access_log;
pub mod context;
pub mod edges;
pub mod exchange;
pub mod export;
pub mod flags;
pub mod prometheus;
pub mod tap;

use serde_json::{json, Value};

use crate::latency::{lower_us, BUCKETS};
use crate::stats::Counter;
use edges::EdgeStats;

/// Counters of the telemetry pipelines themselves.
#[derive(Debug, Default)]
pub struct TelemetryStats {
    pub spans_exported: Counter,
    pub spans_dropped: Counter,
    pub span_export_failures: Counter,
    pub access_log_written: Counter,
    pub access_log_dropped: Counter,
}

/// The edges' cumulative counters, for the sidecar's heartbeats (the
/// control plane turns them into rates and quantiles).
pub fn report(edges: &[std::sync::Arc<EdgeStats>]) -> Value {
    let edges: Vec<Value> = edges
        .iter()
        .map(|e| {
            let (mut requests, mut failures) = (0, 0);
            for (o, n) in e.outcomes.read() {
                requests += n;
                if o.failure {
                    failures += n;
                }
            }
            let s = e.latency.summary();
            let buckets: Vec<Value> = (0..BUCKETS)
                .filter(|&i| s.buckets[i] > 0)
                .map(|i| {
                    let upper_ms = if i + 1 < BUCKETS {
                        lower_us(i + 1) / 1e3
                    } else {
                        s.max_us as f64 / 1e3
                    };
                    json!([upper_ms, s.buckets[i]])
                })
                .collect();
            let l = &e.labels;
            json!({
                "protocol": if l.tcp { "tcp" } else { "http" },
                "direction": l.direction.as_str(),
                "listener": &*l.listener,
                "route": &*l.route,
                "source": &*l.source,
                "destination": &*l.destination,
                "mtls": l.tls,
                "requests": requests,
                "failures": failures,
                "latency_buckets": buckets,
                "latency_sum_ms": s.sum_us as f64 / 1e3,
                "request_bytes": e.request_bytes.get(),
                "response_bytes": e.response_bytes.get(),
            })
        })
        .collect();
    json!({ "edges": edges })
}
