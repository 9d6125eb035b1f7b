//! `GET /metrics` on the admin port: every counter the data plane keeps,
//! read at scrape time (the request path only bumps atomics), encoded by
//! `prometheus-client` as OpenMetrics, or as the Prometheus text format
//! (0.0.4) for scrapers that do not ask for OpenMetrics.
//!
//! Latency buckets are the edges of the data plane's own histogram that
//! fall on powers of two: le = 2^n microseconds for n = 6..=26 (64 µs to
//! about 67 s, each twice the one before), plus +Inf. They are exact sums of
//! the histogram's finer buckets, so no observation is re-guessed.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::edges::{EdgeStats, NO_GRPC};
use super::TelemetryStats;
use crate::latency::{lower_us, Summary, BUCKETS};
use crate::snapshot::{Role, Snapshot};
use crate::stats::{EgressResult, Reason, Refusal, TlsFailure};

type Labels = Vec<(&'static str, String)>;

/// The rows `rows(i)` makes for the i-th reason of `R`, each with its `reason` label.
fn by_reason<R: Reason>(rows: impl Fn(usize) -> Vec<(Labels, f64)>) -> Vec<(Labels, f64)> {
    by_label::<R>("reason", rows)
}

/// The rows `rows(i)` makes for the i-th name of `R`, each labelled `label`.
fn by_label<R: Reason>(
    label: &'static str,
    rows: impl Fn(usize) -> Vec<(Labels, f64)>,
) -> Vec<(Labels, f64)> {
    R::NAMES
        .iter()
        .enumerate()
        .flat_map(|(i, &name)| {
            rows(i).into_iter().map(move |(mut labels, n)| {
                labels.push((label, name.into()));
                (labels, n)
            })
        })
        .collect()
}

/// A cluster counter or gauge: name, help, and how to read it.
type ClusterMetric = (
    &'static str,
    &'static str,
    fn(&crate::stats::ClusterStats) -> u64,
);

/// Everything one scrape reads, held by `Arc`s.
struct Scrape {
    snapshot: Arc<Snapshot>,
    edges: Vec<Arc<EdgeStats>>,
    stats: Arc<TelemetryStats>,
    /// Config updates applied and rejected (see `stats::ConfigStats`).
    updates: (u64, u64),
    dns: DnsRows,
    /// Connections (accepted, open), by worker.
    workers: Vec<(u64, u64)>,
}

/// Endpoint-name lookups and answerer queries, each as (result, count).
type DnsRows = ([(&'static str, u64); 3], [(&'static str, u64); 3]);

/// The exposition; OpenMetrics when `openmetrics`.
pub fn encode(
    snapshot: Arc<Snapshot>,
    edges: Vec<Arc<EdgeStats>>,
    stats: Arc<TelemetryStats>,
    updates: (u64, u64),
    dns: DnsRows,
    workers: Vec<(u64, u64)>,
    openmetrics: bool,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        snapshot,
        edges,
        stats,
        updates,
        dns,
        workers,
    }));
    let mut out = String::with_capacity(16 * 1024);
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        return String::new();
    }
    if openmetrics {
        out
    } else {
        to_prometheus_text(&out)
    }
}

/// OpenMetrics text to the Prometheus text format: counters are declared
/// under their `_total` name, and there is no `# UNIT` nor `# EOF`.
fn to_prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        if let Some((tag, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{tag}{name}_total {tail}\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn split(service: &str) -> (String, String) {
    match service.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (String::new(), service.to_string()),
    }
}

impl Scrape {
    fn me(&self) -> Labels {
        let t = &self.snapshot.config.telemetry;
        vec![
            ("service", t.service.clone()),
            ("namespace", t.namespace.clone()),
            ("workload", t.workload.clone()),
        ]
    }

    fn edge_labels(&self, e: &EdgeStats) -> Labels {
        let l = &e.labels;
        let (src_ns, src) = split(&l.source);
        let (dst_ns, dst) = split(&l.destination);
        let mut v = self.me();
        v.extend([
            ("direction", l.direction.as_str().to_string()),
            ("listener", l.listener.to_string()),
            ("route", l.route.to_string()),
            ("source_service", src),
            ("source_namespace", src_ns),
            ("destination_service", dst),
            ("destination_namespace", dst_ns),
            ("tls", l.tls.to_string()),
        ]);
        v
    }

    fn http_edges(&self) -> impl Iterator<Item = &Arc<EdgeStats>> {
        self.edges.iter().filter(|e| !e.labels.tcp)
    }

    fn tcp_edges(&self) -> impl Iterator<Item = &Arc<EdgeStats>> {
        self.edges.iter().filter(|e| e.labels.tcp)
    }
}

fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels, f64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        let mut e = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => e.encode_counter::<NoLabelSet, f64, f64>(&v, None)?,
            _ => e.encode_gauge(&v)?,
        }
    }
    Ok(())
}

/// Prometheus buckets (upper bound in seconds, count) from a histogram.
fn buckets(s: &Summary) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(22);
    let mut acc = 0;
    for i in 0..BUCKETS {
        acc += s.buckets[i];
        // Bucket i ends where i + 1 starts; cut where that is a power of two.
        let end = i + 1;
        if end < BUCKETS && (end + 16) % 3 == 0 {
            out.push((lower_us(end) / 1e6, acc));
            acc = 0;
        }
    }
    out.push((f64::MAX, acc));
    out
}

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        use MetricType::{Counter, Gauge};
        let enc = &mut enc;

        // === golden metrics, per edge ===
        let mut m = enc.encode_descriptor(
            "meshctl_requests",
            "HTTP exchanges finished, by status code, gRPC status and classification.",
            None,
            Counter,
        )?;
        for e in self.http_edges() {
            for (o, n) in e.outcomes.read() {
                let mut labels = self.edge_labels(e);
                labels.push(("code", o.code.to_string()));
                let grpc = if o.grpc == NO_GRPC {
                    String::new()
                } else {
                    o.grpc.to_string()
                };
                labels.push(("grpc_status", grpc));
                let class = if o.failure { "failure" } else { "success" };
                labels.push(("classification", class.into()));
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, u64, f64>(&n, None)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "meshctl_request_duration_seconds",
            "From the request head received to the response head sent, local replies included.",
            None,
            MetricType::Histogram,
        )?;
        for e in self.http_edges() {
            let s = e.latency.summary();
            let labels = self.edge_labels(e);
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                s.sum_us as f64 / 1e6,
                s.count,
                &buckets(&s),
                None,
            )?;
        }
        let bytes = |f: fn(&EdgeStats) -> u64, tcp: bool| -> Vec<(Labels, f64)> {
            self.edges
                .iter()
                .filter(|e| e.labels.tcp == tcp)
                .map(|e| (self.edge_labels(e), f(e) as f64))
                .collect()
        };
        family(
            enc,
            "meshctl_request_bytes",
            "Request body bytes received.",
            Counter,
            bytes(|e| e.request_bytes.get(), false),
        )?;
        family(
            enc,
            "meshctl_response_bytes",
            "Response body bytes sent.",
            Counter,
            bytes(|e| e.response_bytes.get(), false),
        )?;

        // === TCP ===
        family(
            enc,
            "meshctl_tcp_connections_opened",
            "TCP connections opened.",
            Counter,
            self.tcp_edges()
                .map(|e| (self.edge_labels(e), e.opened.get() as f64)),
        )?;
        let mut m = enc.encode_descriptor(
            "meshctl_tcp_connections_closed",
            "TCP connections closed; failure: the upstream could not be reached.",
            None,
            Counter,
        )?;
        for e in self.tcp_edges() {
            for (o, n) in e.outcomes.read() {
                let mut labels = self.edge_labels(e);
                let class = if o.failure { "failure" } else { "success" };
                labels.push(("classification", class.into()));
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, u64, f64>(&n, None)?;
            }
        }
        family(
            enc,
            "meshctl_tcp_bytes_received",
            "TCP bytes from the downstream.",
            Counter,
            bytes(|e| e.request_bytes.get(), true),
        )?;
        family(
            enc,
            "meshctl_tcp_bytes_sent",
            "TCP bytes to the downstream.",
            Counter,
            bytes(|e| e.response_bytes.get(), true),
        )?;

        // === config ===
        family(
            enc,
            "meshctl_config_updates",
            "Config updates, applied or rejected (the running config stayed).",
            Counter,
            [("applied", self.updates.0), ("rejected", self.updates.1)]
                .into_iter()
                .map(|(result, n)| {
                    let mut labels = self.me();
                    labels.push(("result", result.into()));
                    (labels, n as f64)
                })
                .collect::<Vec<_>>(),
        )?;

        // === dns ===
        let by_result = |rows: &[(&'static str, u64)]| -> Vec<(Labels, f64)> {
            rows.iter()
                .map(|&(result, n)| {
                    let mut labels = self.me();
                    labels.push(("result", result.into()));
                    (labels, n as f64)
                })
                .collect()
        };
        family(
            enc,
            "meshctl_dns_lookups",
            "Endpoint host-name lookups (resolved, failed) and connects served from the cache (cached).",
            Counter,
            by_result(&self.dns.0),
        )?;
        family(
            enc,
            "meshctl_dns_queries",
            "DNS queries to the answerer: answered locally, forwarded upstream, failed (malformed or SERVFAIL).",
            Counter,
            by_result(&self.dns.1),
        )?;

        // === listeners ===
        let listeners: Vec<_> = self
            .snapshot
            .listeners
            .values()
            .filter(|l| !matches!(l.role, Role::Admin))
            .collect();
        let per_listener = |extra: Option<(&'static str, &'static str)>,
                            f: &dyn Fn(&crate::stats::ListenerStats) -> u64|
         -> Vec<(Labels, f64)> {
            listeners
                .iter()
                .map(|l| {
                    let mut labels = self.me();
                    labels.push(("listener", l.name.clone()));
                    labels.push(("direction", l.direction.as_str().into()));
                    if let Some((k, v)) = extra {
                        labels.push((k, v.into()));
                    }
                    (labels, f(&l.stats) as f64)
                })
                .collect()
        };
        family(
            enc,
            "meshctl_listener_connections",
            "Downstream connections accepted.",
            Counter,
            per_listener(None, &|s| s.connections.get()),
        )?;
        family(
            enc,
            "meshctl_listener_active_connections",
            "Downstream connections open now.",
            Gauge,
            per_listener(None, &|s| s.active_connections.get()),
        )?;
        family(
            enc,
            "meshctl_tls_handshakes",
            "TLS handshakes completed.",
            Counter,
            per_listener(None, &|s| s.tls_handshakes.get()),
        )?;
        family(
            enc,
            "meshctl_tls_handshake_failures",
            "TLS handshakes failed, by reason.",
            Counter,
            by_reason::<TlsFailure>(|i| per_listener(None, &|s| s.tls_failures.at(i))),
        )?;
        family(
            enc,
            "meshctl_listener_refusals",
            "Requests and connections a listener's limits and HTTP checks refused or cut short.",
            Counter,
            by_reason::<Refusal>(|i| per_listener(None, &|s| s.refusals.at(i))),
        )?;
        let egress: Vec<_> = listeners.iter().filter(|l| l.egress_stats).collect();
        family(
            enc,
            "meshctl_egress",
            "Calls out of the mesh by what egress control did: denied, passed through, tunnelled (CONNECT).",
            Counter,
            by_label::<EgressResult>("result", |i| {
                egress
                    .iter()
                    .map(|l| {
                        let mut labels = self.me();
                        labels.push(("listener", l.name.clone()));
                        (labels, l.stats.egress.at(i) as f64)
                    })
                    .collect()
            }),
        )?;
        let mut rows = per_listener(Some(("decision", "accepted")), &|s| {
            s.plaintext_accepted.get()
        });
        rows.extend(per_listener(Some(("decision", "rejected")), &|s| {
            s.plaintext_rejected.get()
        }));
        family(
            enc,
            "meshctl_plaintext_connections",
            "Plaintext connections to a mesh-TLS listener (PERMISSIVE lets them in).",
            Counter,
            rows,
        )?;
        let mut rows = per_listener(Some(("decision", "allow")), &|s| s.authz_allowed.get());
        rows.extend(per_listener(Some(("decision", "deny")), &|s| {
            s.authz_denied.get()
        }));
        family(
            enc,
            "meshctl_authz_decisions",
            "Authorization decisions (HTTP requests, TCP connections).",
            Counter,
            rows,
        )?;
        family(
            enc,
            "meshctl_rate_limited",
            "Requests or connections refused by a rate limit.",
            Counter,
            per_listener(None, &|s| s.rate_limited.get()),
        )?;
        let mut rows = per_listener(Some(("kind", "delay")), &|s| s.faults_delayed.get());
        rows.extend(per_listener(Some(("kind", "abort")), &|s| {
            s.faults_aborted.get()
        }));
        family(enc, "meshctl_faults", "Faults injected.", Counter, rows)?;
        family(
            enc,
            "meshctl_no_route",
            "Requests no route took (404).",
            Counter,
            per_listener(None, &|s| s.no_route.get()),
        )?;

        // === clusters ===
        let clusters = &self.snapshot.clusters;
        let per_cluster = |f: &dyn Fn(&crate::stats::ClusterStats) -> u64| -> Vec<(Labels, f64)> {
            clusters
                .iter()
                .map(|c| {
                    let (ns, svc) = split(&c.spec.service);
                    let mut labels = self.me();
                    labels.extend([
                        ("cluster", c.name.clone()),
                        ("destination_service", svc),
                        ("destination_namespace", ns),
                    ]);
                    (labels, f(&c.stats) as f64)
                })
                .collect()
        };
        let cluster_counters: [ClusterMetric; 14] = [
            (
                "meshctl_upstream_requests",
                "Requests sent to the cluster (first tries).",
                |s| s.requests.get(),
            ),
            (
                "meshctl_upstream_connect_failures",
                "Upstream connections that failed.",
                |s| s.connect_failures.get(),
            ),
            (
                "meshctl_upstream_errors",
                "Upstream exchanges that failed after connecting.",
                |s| s.upstream_errors.get(),
            ),
            (
                "meshctl_upstream_timeouts",
                "Requests that hit the route timeout.",
                |s| s.timeouts.get(),
            ),
            (
                "meshctl_upstream_no_healthy_endpoint",
                "Requests with no endpoint to go to.",
                |s| s.no_healthy_endpoint.get(),
            ),
            (
                "meshctl_upstream_connections",
                "Upstream connections opened.",
                |s| s.connections.get(),
            ),
            (
                "meshctl_upstream_overflow",
                "Requests refused by a circuit breaker.",
                |s| s.overflow.get(),
            ),
            (
                "meshctl_upstream_retries",
                "Retries (tries after the first).",
                |s| s.retries.get(),
            ),
            (
                "meshctl_upstream_retry_budget_exhausted",
                "Retries the retry budget refused.",
                |s| s.retry_budget_exhausted.get(),
            ),
            (
                "meshctl_upstream_retries_exhausted",
                "Requests that failed with every try used.",
                |s| s.retries_exhausted.get(),
            ),
            (
                "meshctl_upstream_panic",
                "Picks made over every endpoint because too few were healthy.",
                |s| s.panic.get(),
            ),
            ("meshctl_upstream_mirrored", "Mirror copies sent.", |s| {
                s.mirrored.get()
            }),
            (
                "meshctl_upstream_mirror_skipped",
                "Mirror copies not sent.",
                |s| s.mirror_skipped.get(),
            ),
            ("meshctl_upstream_bytes_sent", "Bytes sent upstream.", |s| {
                s.bytes_sent.get()
            }),
        ];
        for (name, help, f) in cluster_counters {
            family(enc, name, help, Counter, per_cluster(&f))?;
        }
        family(
            enc,
            "meshctl_upstream_tls_failures",
            "mTLS handshakes to endpoints that failed, by reason.",
            Counter,
            by_reason::<TlsFailure>(|i| per_cluster(&|s| s.tls_failures.at(i))),
        )?;
        let cluster_gauges: [ClusterMetric; 4] = [
            (
                "meshctl_upstream_active_requests",
                "Requests in flight.",
                |s| s.active_requests.get(),
            ),
            (
                "meshctl_upstream_active_connections",
                "Upstream connections open.",
                |s| s.active_connections.get(),
            ),
            (
                "meshctl_upstream_pending_requests",
                "Requests waiting for a connection.",
                |s| s.pending_requests.get(),
            ),
            (
                "meshctl_upstream_active_retries",
                "Retries in flight.",
                |s| s.active_retries.get(),
            ),
        ];
        for (name, help, f) in cluster_gauges {
            family(enc, name, help, Gauge, per_cluster(&f))?;
        }

        // === endpoints ===
        let mut healthy = Vec::new();
        let mut ejections = Vec::new();
        let mut checks = Vec::new();
        for c in clusters {
            for (i, ep) in c.endpoints.iter().enumerate() {
                let mut labels = self.me();
                labels.extend([
                    ("cluster", c.name.clone()),
                    ("endpoint", ep.address.clone()),
                ]);
                let up = c.endpoint_json(i)["healthy"].as_bool().unwrap_or(true);
                healthy.push((labels.clone(), f64::from(u8::from(up))));
                ejections.push((labels.clone(), ep.stats.ejections.get() as f64));
                let mut passed = labels.clone();
                passed.push(("result", "passed".into()));
                checks.push((passed, ep.stats.health_checks_passed.get() as f64));
                labels.push(("result", "failed".into()));
                checks.push((labels, ep.stats.health_checks_failed.get() as f64));
            }
        }
        family(
            enc,
            "meshctl_endpoint_healthy",
            "1 while the endpoint takes traffic (not ejected, checks passing).",
            Gauge,
            healthy,
        )?;
        family(
            enc,
            "meshctl_endpoint_ejections",
            "Outlier-detection ejections.",
            Counter,
            ejections,
        )?;
        family(
            enc,
            "meshctl_endpoint_health_checks",
            "Active health checks, by result.",
            Counter,
            checks,
        )?;

        // === the data plane itself ===
        let s = &self.stats;
        let one = |v: u64| vec![(self.me(), v as f64)];
        family(
            enc,
            "meshctl_spans_exported",
            "Spans the collector took.",
            Counter,
            one(s.spans_exported.get()),
        )?;
        family(
            enc,
            "meshctl_spans_dropped",
            "Spans dropped: the export queue was full.",
            Counter,
            one(s.spans_dropped.get()),
        )?;
        family(
            enc,
            "meshctl_span_export_failures",
            "Spans the collector did not take.",
            Counter,
            one(s.span_export_failures.get()),
        )?;
        let mut rows = vec![];
        for (result, v) in [
            ("written", s.access_log_written.get()),
            ("dropped", s.access_log_dropped.get()),
        ] {
            let mut l = self.me();
            l.push(("result", result.into()));
            rows.push((l, v as f64));
        }
        family(
            enc,
            "meshctl_access_log_lines",
            "Access-log lines written, and dropped (queue full or write error).",
            Counter,
            rows,
        )?;
        let by_worker = |value: fn(&(u64, u64)) -> u64| -> Vec<(Labels, f64)> {
            (self.workers.iter().enumerate())
                .map(|(worker, counts)| {
                    let mut labels = self.me();
                    labels.push(("worker", worker.to_string()));
                    (labels, value(counts) as f64)
                })
                .collect()
        };
        family(
            enc,
            "meshctl_worker_connections",
            "Connections given to each worker (it serves them to their end).",
            Counter,
            by_worker(|c| c.0),
        )?;
        family(
            enc,
            "meshctl_worker_active_connections",
            "Connections open on each worker.",
            Gauge,
            by_worker(|c| c.1),
        )?;
        family(
            enc,
            "meshctl_config_version",
            "The version of the config in use.",
            Gauge,
            one(self.snapshot.version),
        )?;
        let mut info = self.me();
        info.push(("version", env!("CARGO_PKG_VERSION").into()));
        family(
            enc,
            "meshctl_build_info",
            "The data plane's version.",
            Gauge,
            [(info, 1.0)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::Histogram;
    use std::time::Duration;

    #[test]
    fn buckets_are_powers_of_two_and_sum_up() {
        let h = Histogram::default();
        for us in [10, 70, 1000, 1025, 5_000_000, 100_000_000] {
            h.record(Duration::from_micros(us));
        }
        let b = buckets(&h.summary());
        assert_eq!(b.len(), 22);
        assert!((b[0].0 - 64e-6).abs() < 1e-12, "{:?}", b[0]);
        assert!((b[20].0 - 67.108864).abs() < 1e-9, "{:?}", b[20]);
        assert_eq!(b.iter().map(|(_, n)| n).sum::<u64>(), 6);
        assert_eq!(b[0].1, 1, "10 µs");
        assert_eq!(b[21].1, 1, "100 s is past the last bound");
    }

    #[test]
    fn prometheus_text_declares_counters_by_their_total_name() {
        let om = "# HELP x Things.\n# TYPE x counter\nx_total 1\n# HELP g G.\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 1\n# HELP g G.\n# TYPE g gauge\ng 2\n"
        );
    }
}
