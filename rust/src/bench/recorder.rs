//! Per-connection results (an HDR histogram of latencies, counts by kind)
//! and the merged report.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::spec::{BenchSpec, Target, TcpMode};

/// Highest latency tracked: one minute, in microseconds, at 3 significant digits.
const MAX_US: u64 = 60_000_000;

#[derive(Clone, Copy, Debug)]
pub enum ErrorKind {
    Connect,
    Timeout,
    Io,
}

pub struct Recorder {
    hist: Histogram<u64>,
    statuses: [u64; 5],
    connect_errors: u64,
    timeouts: u64,
    io_errors: u64,
    bytes: u64,
    completed: u64,
}

/// The merged results of a run, as JSON for Python.
pub type Report = Value;

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            hist: Histogram::new_with_bounds(1, MAX_US, 3)
                .expect("static histogram bounds are valid"),
            statuses: [0; 5],
            connect_errors: 0,
            timeouts: 0,
            io_errors: 0,
            bytes: 0,
            completed: 0,
        }
    }

    /// A finished exchange; `status` is 0 for raw TCP.
    pub fn record(&mut self, latency: Duration, status: u16, bytes: u64) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_US);
        self.hist.saturating_record(us);
        if status >= 100 {
            self.statuses[(status / 100).clamp(1, 5) as usize - 1] += 1;
        }
        self.bytes += bytes;
        self.completed += 1;
    }

    pub fn error(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::Connect => self.connect_errors += 1,
            ErrorKind::Timeout => self.timeouts += 1,
            ErrorKind::Io => self.io_errors += 1,
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
        for (a, b) in self.statuses.iter_mut().zip(other.statuses) {
            *a += b;
        }
        self.connect_errors += other.connect_errors;
        self.timeouts += other.timeouts;
        self.io_errors += other.io_errors;
        self.bytes += other.bytes;
        self.completed += other.completed;
    }

    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn report(&self, elapsed: Duration, spec: &BenchSpec) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let (protocol, mode) = match &spec.target {
            Target::Http { http2: true, .. } => ("http2", None),
            Target::Http { .. } => ("http1", None),
            Target::Tcp {
                mode: TcpMode::Echo,
                ..
            } => ("tcp", Some("echo")),
            Target::Tcp {
                mode: TcpMode::Bulk,
                ..
            } => ("tcp", Some("bulk")),
        };
        let [s1, s2, s3, s4, s5] = self.statuses;
        let errors = self.connect_errors + self.timeouts + self.io_errors + s4 + s5;
        let empty = self.hist.is_empty();
        let at = |q: f64| if empty { 0.0 } else { self.ms(q) };
        // Quantiles for a latency-distribution plot, denser toward the tail.
        let distribution: Vec<Value> = (0..=60)
            .map(|i| 1.0 - 10f64.powf(-(i as f64) / 12.0))
            .chain([1.0])
            .map(|q| json!([q * 100.0, at(q)]))
            .collect();
        json!({
            "url": spec.url,
            "protocol": protocol,
            "tcp_mode": mode,
            "connections": spec.connections,
            "loop": if spec.rps.is_some() { "open" } else { "closed" },
            "target_rps": spec.rps,
            "duration_s": secs,
            "requests": self.completed,
            "rps": self.completed as f64 / secs,
            "bytes": self.bytes,
            "throughput_mbps": self.bytes as f64 * 8.0 / secs / 1e6,
            "latency_ms": {
                "min": if empty { 0.0 } else { self.hist.min() as f64 / 1000.0 },
                "mean": if empty { 0.0 } else { self.hist.mean() / 1000.0 },
                "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p99.9": at(0.999),
                "max": if empty { 0.0 } else { self.hist.max() as f64 / 1000.0 },
            },
            "statuses": {"1xx": s1, "2xx": s2, "3xx": s3, "4xx": s4, "5xx": s5},
            "errors": {
                "total": errors,
                "connect": self.connect_errors,
                "timeout": self.timeouts,
                "io": self.io_errors,
                "status_4xx": s4,
                "status_5xx": s5,
            },
            "distribution": distribution,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Pacing;
    use serde_json::json;

    fn spec(v: Value) -> BenchSpec {
        BenchSpec::from_json(&v).unwrap()
    }

    #[test]
    fn percentiles_and_merge() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for i in 1..=990 {
            a.record(Duration::from_micros(1000 + i), 200, 10);
        }
        for _ in 0..10 {
            b.record(Duration::from_millis(500), 503, 0);
        }
        b.error(ErrorKind::Connect);
        a.merge(&b);
        let r = a.report(Duration::from_secs(1), &spec(json!({"url": "http://x:1"})));
        assert_eq!(r["requests"], 1000);
        assert!((r["latency_ms"]["p50"].as_f64().unwrap() - 1.5).abs() < 0.01);
        assert!(r["latency_ms"]["p99.9"].as_f64().unwrap() > 499.0);
        assert_eq!(r["errors"]["connect"], 1);
        assert_eq!(r["errors"]["status_5xx"], 10);
        assert_eq!(r["errors"]["total"], 11);
        assert_eq!(r["statuses"]["2xx"], 990);
    }

    /// Simulates an open-loop sender at 1,000 rps against a server that answers
    /// in 1 ms but stalls once for 1 s. Measured from the intended send time,
    /// the stall shows in p99; measured from the actual send (what a closed
    /// loop sees), it hides behind a single slow sample.
    #[test]
    fn coordinated_omission_is_corrected() {
        let s = spec(json!({"url": "http://x:1", "rps": 1000, "connections": 1, "duration": 5}));
        let pacing = Pacing::new(&s);
        let service = Duration::from_millis(1);
        let stall_at = Duration::from_secs(2);
        let (mut corrected, mut naive) = (Recorder::new(), Recorder::new());
        let mut clock = pacing.start; // when the connection is free again
        let mut stalled = false;
        for k in 0..5000 {
            let intended = pacing.intended(0, 1, k).unwrap();
            let sent = clock.max(intended);
            let mut took = service;
            if !stalled && sent - pacing.start >= stall_at {
                took += Duration::from_secs(1);
                stalled = true;
            }
            let done = sent + took;
            corrected.record(done - intended, 200, 0);
            naive.record(done - sent, 200, 0);
            clock = done;
        }
        let p99 = |r: &Recorder| {
            r.report(Duration::from_secs(5), &s)["latency_ms"]["p99"]
                .as_f64()
                .unwrap()
        };
        assert!(p99(&corrected) > 500.0, "corrected p99 {}", p99(&corrected));
        assert!(p99(&naive) < 5.0, "naive p99 {}", p99(&naive));
    }
}
