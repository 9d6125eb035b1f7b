//! Counters per listener, cluster and endpoint. They live in a registry keyed
//! by name so that they survive config updates; compiled config objects hold
//! `Arc`s to them, so the request path never looks anything up or locks.
//! Latency histograms (see `latency`) are atomic counters too.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::latency::Histogram;
use crate::telemetry::access_log::LogWriters;
use crate::telemetry::edges::{EdgeRegistry, EdgeStats};
use crate::telemetry::tap::TapHub;
use crate::telemetry::TelemetryStats;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    /// Adds one unless the count is at `limit` already; true when added.
    /// Racing callers may overshoot for an instant, never admit past it.
    #[inline]
    pub fn inc_below(&self, limit: u64) -> bool {
        if self.0.fetch_add(1, Relaxed) < limit {
            true
        } else {
            self.0.fetch_sub(1, Relaxed);
            false
        }
    }
}

/// Responses by status class, 1xx to 5xx.
#[derive(Debug, Default)]
pub struct StatusCounters([Counter; 5]);

impl StatusCounters {
    #[inline]
    pub fn record(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.0[class].inc();
    }

    pub fn to_json(&self) -> Value {
        json!({
            "1xx": self.0[0].get(), "2xx": self.0[1].get(), "3xx": self.0[2].get(),
            "4xx": self.0[3].get(), "5xx": self.0[4].get(),
        })
    }
}

/// A closed list of reasons something is counted under (the Prometheus
/// `reason` label and the keys of the admin JSON).
pub trait Reason: Copy {
    const NAMES: &'static [&'static str];
    fn index(self) -> usize;
    fn name(self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

/// One counter per reason.
#[derive(Debug)]
pub struct Reasons<R> {
    counts: Box<[Counter]>,
    _reason: PhantomData<R>,
}

impl<R: Reason> Default for Reasons<R> {
    fn default() -> Self {
        Reasons {
            counts: R::NAMES.iter().map(|_| Counter::default()).collect(),
            _reason: PhantomData,
        }
    }
}

impl<R: Reason> Reasons<R> {
    #[inline]
    pub fn inc(&self, r: R) {
        self.counts[r.index()].inc();
    }

    /// The count of the i-th reason of `R::NAMES`.
    pub fn at(&self, i: usize) -> u64 {
        self.counts[i].get()
    }

    /// (reason, count) for every reason, in the list's order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        R::NAMES
            .iter()
            .copied()
            .zip(self.counts.iter().map(Counter::get))
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(Counter::get).sum()
    }

    pub fn to_json(&self) -> Value {
        Value::Object(
            self.iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect(),
        )
    }
}

/// Why a listener refused a request or cut a connection short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed or ambiguous HTTP (CL with TE, Host missing or repeated,
    /// a broken chunked body, what hyper's parser refuses): 400.
    BadRequest,
    /// A request head over `header_bytes` or `max_headers`: 431.
    HeaderTooLarge,
    /// A body over the route's `max_request_bytes`: 413.
    BodyTooLarge,
    /// An `Upgrade: h2c` taken out of a request (never forwarded).
    H2cUpgrade,
    /// A request head not in within `header_timeout` (slowloris).
    HeaderTimeout,
    /// A request body that stalled for `body_timeout`: 408.
    BodyTimeout,
    /// Connections closed after `idle_timeout` without a request (HTTP) or a byte (TCP).
    IdleTimeout,
    /// Connections closed at once: the listener was at `max_connections`.
    MaxConnections,
    /// HTTP/2 connections sent GOAWAY for abuse (rapid reset, floods).
    H2Abuse,
}

impl Reason for Refusal {
    const NAMES: &'static [&'static str] = &[
        "bad_request",
        "header_too_large",
        "body_too_large",
        "h2c_upgrade",
        "header_timeout",
        "body_timeout",
        "idle_timeout",
        "max_connections",
        "h2_abuse",
    ];
    fn index(self) -> usize {
        self as usize
    }
}

/// What egress control did with a call out of the mesh (the Prometheus
/// `result` label of `meshctl_egress_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressResult {
    /// Refused: a 403, or a closed connection (policy, a deny route or listener).
    Denied,
    /// Let through to a destination no route or listener claims (allow_any).
    Passthrough,
    /// CONNECT tunnels opened.
    Tunnelled,
}

impl Reason for EgressResult {
    const NAMES: &'static [&'static str] = &["denied", "passthrough", "tunnelled"];
    fn index(self) -> usize {
        self as usize
    }
}

/// Why a TLS handshake failed, on either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The peer's certificate has expired or is not valid yet.
    Expired,
    /// The chain does not lead to a trusted root (a foreign CA, a bad signature).
    Untrusted,
    /// The chain is fine but the SPIFFE ID is not acceptable (another trust
    /// domain, not the service expected).
    Identity,
    /// The client presented no certificate where one is required.
    NoCertificate,
    Timeout,
    Other,
}

impl Reason for TlsFailure {
    const NAMES: &'static [&'static str] = &[
        "expired",
        "untrusted",
        "identity",
        "no_certificate",
        "timeout",
        "other",
    ];
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
pub struct ListenerStats {
    pub connections: Counter,
    pub active_connections: Counter,
    pub requests: Counter,
    pub responses: StatusCounters,
    pub no_route: Counter,
    /// Answered by a redirect route, without an upstream.
    pub redirects: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// TLS listeners: completed and failed handshakes; mesh ones also count
    /// plaintext connections let in (PERMISSIVE) and refused (STRICT).
    pub tls_handshakes: Counter,
    /// Failed handshakes by reason (their total is the failures).
    pub tls_failures: Reasons<TlsFailure>,
    pub plaintext_accepted: Counter,
    pub plaintext_rejected: Counter,
    /// Authorization decisions (HTTP requests, or TCP connections).
    pub authz_allowed: Counter,
    pub authz_denied: Counter,
    /// Requests (HTTP) or connections (TCP) refused by a rate limit.
    pub rate_limited: Counter,
    /// Requests or connections a fault delayed, and those it aborted.
    pub faults_delayed: Counter,
    pub faults_aborted: Counter,
    /// What the listener's limits and HTTP checks refused or cut short.
    pub refusals: Reasons<Refusal>,
    /// Egress decisions (listeners with `egress` or `deny`, transparent ones).
    pub egress: Reasons<EgressResult>,
    /// HTTP only: from the request head received to the response head handed
    /// to hyper for writing, local replies included. The body is left out so
    /// that long streams (gRPC streaming, SSE, upgrades) do not swamp it.
    pub latency: Histogram,
}

impl ListenerStats {
    pub fn to_json(&self, protocol: &str, address: String) -> Value {
        let mut v = json!({
            "protocol": protocol,
            "address": address,
            "connections": self.connections.get(),
            "active_connections": self.active_connections.get(),
            "requests": self.requests.get(),
            "responses": self.responses.to_json(),
            "no_route": self.no_route.get(),
            "redirects": self.redirects.get(),
            "bytes_in": self.bytes_in.get(),
            "bytes_out": self.bytes_out.get(),
            "tls": {
                "handshakes": self.tls_handshakes.get(),
                "handshake_failures": self.tls_failures.total(),
                "failures": self.tls_failures.to_json(),
                "plaintext_accepted": self.plaintext_accepted.get(),
                "plaintext_rejected": self.plaintext_rejected.get(),
            },
            "authz": {
                "allowed": self.authz_allowed.get(),
                "denied": self.authz_denied.get(),
            },
            "rate_limited": self.rate_limited.get(),
            "faults": {
                "delayed": self.faults_delayed.get(),
                "aborted": self.faults_aborted.get(),
            },
            "refusals": self.refusals.to_json(),
        });
        if protocol == "http" {
            v["latency_ms"] = self.latency.to_json();
        }
        v
    }
}

#[derive(Debug, Default)]
pub struct ClusterStats {
    pub requests: Counter,
    pub active_requests: Counter,
    pub responses: StatusCounters,
    pub connect_failures: Counter,
    /// Failed mTLS handshakes to endpoints, by reason (these are connect failures too).
    pub tls_failures: Reasons<TlsFailure>,
    pub upstream_errors: Counter,
    pub timeouts: Counter,
    pub no_healthy_endpoint: Counter,
    /// Upstream connections opened, HTTP and TCP, and those open now.
    pub connections: Counter,
    pub active_connections: Counter,
    /// Requests waiting for a new upstream connection now.
    pub pending_requests: Counter,
    /// Requests and connections refused by a circuit breaker.
    pub overflow: Counter,
    /// Tries after the first; retries the budget refused; requests that
    /// failed with every try they were allowed used.
    pub retries: Counter,
    pub retry_budget_exhausted: Counter,
    pub retries_exhausted: Counter,
    /// Retries in flight now (for `max_retries`).
    pub active_retries: Counter,
    /// Picks made over every endpoint because too few were healthy.
    pub panic: Counter,
    /// Copies of requests sent here by a route's mirror, and copies not
    /// sent (body too long, limits reached, no endpoint).
    pub mirrored: Counter,
    pub mirror_skipped: Counter,
    pub bytes_sent: Counter,
    pub bytes_received: Counter,
    /// Upstream response time: from handing the request to the endpoint's pool
    /// (so a new connection's connect counts) to the response head received.
    /// Only exchanges that got a response; its count matches `responses`.
    pub latency: Histogram,
}

impl ClusterStats {
    pub fn to_json(&self, endpoints: Value) -> Value {
        json!({
            "requests": self.requests.get(),
            "active_requests": self.active_requests.get(),
            "responses": self.responses.to_json(),
            "connect_failures": self.connect_failures.get(),
            "tls_failures": self.tls_failures.to_json(),
            "upstream_errors": self.upstream_errors.get(),
            "timeouts": self.timeouts.get(),
            "no_healthy_endpoint": self.no_healthy_endpoint.get(),
            "connections": self.connections.get(),
            "active_connections": self.active_connections.get(),
            "pending_requests": self.pending_requests.get(),
            "overflow": self.overflow.get(),
            "retries": self.retries.get(),
            "retry_budget_exhausted": self.retry_budget_exhausted.get(),
            "retries_exhausted": self.retries_exhausted.get(),
            "active_retries": self.active_retries.get(),
            "panic": self.panic.get(),
            "mirrored": self.mirrored.get(),
            "mirror_skipped": self.mirror_skipped.get(),
            "bytes_sent": self.bytes_sent.get(),
            "bytes_received": self.bytes_received.get(),
            "latency_ms": self.latency.to_json(),
            "endpoints": endpoints,
        })
    }
}

#[derive(Debug, Default)]
pub struct EndpointStats {
    pub requests: Counter,
    pub active: Counter,
    pub connect_failures: Counter,
    /// 5xx answers, connect failures and resets.
    pub errors_5xx: Counter,
    pub ejections: Counter,
    pub health_checks_passed: Counter,
    pub health_checks_failed: Counter,
}

impl EndpointStats {
    pub fn to_json(&self, weight: u32) -> Value {
        json!({
            "weight": weight,
            "requests": self.requests.get(),
            "active": self.active.get(),
            "connect_failures": self.connect_failures.get(),
            "errors_5xx": self.errors_5xx.get(),
            "ejections": self.ejections.get(),
            "health_checks": {
                "passed": self.health_checks_passed.get(),
                "failed": self.health_checks_failed.get(),
            },
        })
    }
}

#[derive(Clone, Copy)]
pub enum Direction {
    /// Downstream -> upstream.
    Request,
    /// Upstream -> downstream.
    Response,
}

/// Where a body's bytes are counted: the listener, the cluster, the edge
/// (golden metrics) and, when a request is being recorded, its record.
pub struct Meter {
    pub listener: Arc<ListenerStats>,
    pub cluster: Arc<ClusterStats>,
    pub direction: Direction,
    pub edge: Option<Arc<EdgeStats>>,
    pub record: Option<Arc<AtomicU64>>,
}

impl Meter {
    pub fn new(
        listener: &Arc<ListenerStats>,
        cluster: &Arc<ClusterStats>,
        direction: Direction,
        edge: Option<&Arc<EdgeStats>>,
    ) -> Self {
        Meter {
            listener: listener.clone(),
            cluster: cluster.clone(),
            direction,
            edge: edge.cloned(),
            record: None,
        }
    }

    #[inline]
    pub fn record(&self, n: u64) {
        match self.direction {
            Direction::Request => {
                self.listener.bytes_in.add(n);
                self.cluster.bytes_sent.add(n);
                if let Some(e) = &self.edge {
                    e.request_bytes.add(n);
                }
            }
            Direction::Response => {
                self.listener.bytes_out.add(n);
                self.cluster.bytes_received.add(n);
                if let Some(e) = &self.edge {
                    e.response_bytes.add(n);
                }
            }
        }
        if let Some(r) = &self.record {
            r.fetch_add(n, Relaxed);
        }
    }
}

/// Config updates: applied, and refused (the running config stayed), with
/// the last refusal's error, so an operator sees a reload that did not land.
#[derive(Debug, Default)]
pub struct ConfigStats {
    pub applied: Counter,
    pub rejected: Counter,
    last_error: Mutex<Option<String>>,
}

impl ConfigStats {
    pub fn reject(&self, error: String) {
        self.rejected.inc();
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    /// (applied, rejected).
    pub fn counts(&self) -> (u64, u64) {
        (self.applied.get(), self.rejected.get())
    }

    pub fn to_json(&self, version: u64) -> Value {
        json!({
            "version": version,
            "applied": self.applied.get(),
            "rejected": self.rejected.get(),
            "last_error": *self.last_error.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }
}

/// One worker's connections: accepted in all, and open now.
#[derive(Debug, Default)]
pub struct WorkerLoad {
    pub accepted: Counter,
    pub active: Counter,
}

/// The workers' loads (see `runtime`), by worker index: accept loops give
/// each connection to the worker with the fewest open.
#[derive(Debug, Default)]
pub struct WorkerStats(Mutex<Vec<Arc<WorkerLoad>>>);

impl WorkerStats {
    /// The loads of `workers` workers, made on first use (an accept loop asks once).
    pub fn loads(&self, workers: usize) -> Vec<Arc<WorkerLoad>> {
        let mut loads = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if loads.len() < workers {
            loads.resize_with(workers, Arc::default);
        }
        loads[..workers].to_vec()
    }

    /// (accepted, open) per worker.
    pub fn counts(&self) -> Vec<(u64, u64)> {
        let loads = self.0.lock().unwrap_or_else(|e| e.into_inner());
        loads
            .iter()
            .map(|w| (w.accepted.get(), w.active.get()))
            .collect()
    }

    pub fn to_json(&self) -> Value {
        let rows = self.counts().into_iter();
        let row =
            |(accepted, active)| json!({"connections": accepted, "active_connections": active});
        Value::Array(rows.map(row).collect())
    }
}

/// Holds a gauge up while alive: ties "active" counts to object lifetimes.
pub struct Active<T> {
    stats: Arc<T>,
    gauge: fn(&T) -> &Counter,
}

impl<T> Active<T> {
    pub fn enter(stats: &Arc<T>, gauge: fn(&T) -> &Counter) -> Self {
        gauge(stats).inc();
        Active {
            stats: stats.clone(),
            gauge,
        }
    }

    /// Enters unless the gauge is at `limit` already (a circuit breaker).
    pub fn try_enter(stats: &Arc<T>, gauge: fn(&T) -> &Counter, limit: u64) -> Option<Self> {
        gauge(stats).inc_below(limit).then(|| Active {
            stats: stats.clone(),
            gauge,
        })
    }
}

impl<T> Drop for Active<T> {
    fn drop(&mut self) {
        (self.gauge)(&self.stats).dec();
    }
}

/// Stats by name. Locked only when a config is compiled or stats are read
/// (and, for edges, when a route sees a new one). The telemetry pipelines
/// (log writers, taps) live here too, as they outlive configs.
pub struct Registry {
    listeners: Mutex<HashMap<String, Arc<ListenerStats>>>,
    clusters: Mutex<HashMap<String, Arc<ClusterStats>>>,
    endpoints: Mutex<HashMap<(String, String), Arc<EndpointStats>>>,
    pub edges: EdgeRegistry,
    pub telemetry: Arc<TelemetryStats>,
    pub logs: LogWriters,
    pub taps: Arc<TapHub>,
    pub config: ConfigStats,
    /// The endpoint-name cache of this data plane, and its counts.
    pub dns: Arc<crate::dns::Resolver>,
    /// The `dns` section's answerer.
    pub dns_server: crate::dns::ServerStats,
    pub workers: WorkerStats,
}

impl Default for Registry {
    fn default() -> Self {
        let telemetry = Arc::new(TelemetryStats::default());
        Registry {
            listeners: Mutex::default(),
            clusters: Mutex::default(),
            endpoints: Mutex::default(),
            edges: EdgeRegistry::default(),
            logs: LogWriters::new(telemetry.clone()),
            telemetry,
            taps: Arc::default(),
            config: ConfigStats::default(),
            dns: Arc::default(),
            dns_server: Default::default(),
            workers: WorkerStats::default(),
        }
    }
}

fn entry<K: std::hash::Hash + Eq, V: Default>(map: &Mutex<HashMap<K, Arc<V>>>, key: K) -> Arc<V> {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default()
        .clone()
}

impl Registry {
    pub fn listener(&self, name: &str) -> Arc<ListenerStats> {
        entry(&self.listeners, name.to_string())
    }

    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        entry(&self.clusters, name.to_string())
    }

    pub fn endpoint(&self, cluster: &str, address: &str) -> Arc<EndpointStats> {
        entry(&self.endpoints, (cluster.to_string(), address.to_string()))
    }

    /// Forgets stats of names no longer configured (holders keep theirs alive).
    pub fn retain(&self, listeners: &[&str], clusters: &[&str]) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| listeners.contains(&k.as_str()));
        self.clusters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| clusters.contains(&k.as_str()));
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(c, _), _| clusters.contains(&c.as_str()));
        self.edges.retain(listeners);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        let s = StatusCounters::default();
        for code in [101, 200, 204, 302, 404, 503, 599] {
            s.record(code);
        }
        assert_eq!(
            s.to_json(),
            json!({"1xx": 1, "2xx": 2, "3xx": 1, "4xx": 1, "5xx": 2})
        );
    }

    #[test]
    fn active_guard_tracks_lifetime() {
        let l = Arc::new(ListenerStats::default());
        let a = Active::enter(&l, |s| &s.active_connections);
        let b = Active::enter(&l, |s| &s.active_connections);
        assert_eq!(l.active_connections.get(), 2);
        drop(a);
        drop(b);
        assert_eq!(l.active_connections.get(), 0);
    }

    #[test]
    fn registry_keeps_stats_across_lookups() {
        let r = Registry::default();
        r.cluster("a").requests.inc();
        assert_eq!(r.cluster("a").requests.get(), 1);
        r.retain(&[], &["b"]);
        assert_eq!(r.cluster("a").requests.get(), 0);
    }
}
