//! A cluster at run time: its endpoints with passive health, its balancer,
//! its upstream connection pool and its stats. Built once per config change
//! and reused unchanged by later configs that do not touch it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use http::uri::Authority;

use crate::balance::{hash_bytes, Balancer, Loads};
use crate::clock::now_ms;
use crate::config::{ClusterConfig, LbPolicy, RetryPolicy, UpstreamProtocol};
use crate::http::pool::Pool;
use crate::resilience::{backoff, Budget};
use crate::stats::{ClusterStats, EndpointStats, Registry};
use crate::tls::client::ClientTls;
use crate::tls::IdentityCell;

pub struct Endpoint {
    pub address: String,
    pub authority: Authority,
    pub weight: u32,
    pub stats: Arc<EndpointStats>,
    /// Upstream connections to this endpoint, per worker thread.
    pub pool: Arc<Pool>,
    consecutive_failures: AtomicU32,
    ejected_until: AtomicU64,
}

pub struct Cluster {
    pub name: String,
    pub spec: ClusterConfig,
    pub endpoints: Vec<Endpoint>,
    pub stats: Arc<ClusterStats>,
    /// What retries the cluster's requests may still add.
    pub budget: Budget,
    balancer: Balancer,
    /// Endpoints currently marked ejected; lets picks skip the clock when 0.
    ejected: AtomicUsize,
}

// === impl Cluster ===

impl Cluster {
    pub fn new(
        spec: &ClusterConfig,
        registry: &Registry,
        identity: &IdentityCell,
        workers: usize,
    ) -> Self {
        // h2 between sidecars when the cluster speaks it: one connection per
        // peer pair and worker carries every request.
        let alpn: &[&[u8]] = match spec.protocol {
            // http/1.1 too: upgrades (WebSocket) go over HTTP/1.1 even here.
            UpstreamProtocol::Http2 => &[b"h2", b"http/1.1"],
            UpstreamProtocol::Http1 => &[b"http/1.1"],
        };
        let tls = spec
            .tls
            .as_ref()
            .map(|t| Arc::new(ClientTls::mesh(identity, t.peer_ids.clone(), alpn)));
        let stats = registry.cluster(&spec.name);
        let endpoints: Vec<Endpoint> = spec
            .endpoints
            .iter()
            .map(|e| Endpoint {
                // Validation checked host:port; an odd host still must not panic.
                authority: e
                    .address
                    .parse()
                    .unwrap_or_else(|_| Authority::from_static("invalid.invalid:1")),
                address: e.address.clone(),
                weight: e.weight,
                stats: registry.endpoint(&spec.name, &e.address),
                pool: Arc::new(Pool::new(
                    &e.address,
                    spec,
                    tls.clone(),
                    stats.clone(),
                    workers,
                )),
                consecutive_failures: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
            })
            .collect();
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let keys: Vec<&str> = endpoints.iter().map(|e| e.address.as_str()).collect();
        Cluster {
            name: spec.name.clone(),
            balancer: Balancer::new(spec.lb, &weights, &keys),
            stats,
            budget: Budget::new(spec.retry_budget),
            endpoints,
            spec: spec.clone(),
            ejected: AtomicUsize::new(0),
        }
    }

    pub fn pick(&self, hash: Option<u64>) -> Option<&Endpoint> {
        self.balancer.pick(self, hash).map(|i| &self.endpoints[i])
    }

    /// After a try on `failed` could not connect: the endpoint for the next
    /// try, once the back-off has passed, when `policy` has a retry left and
    /// the budget grants it; None (counted) when the failure is final.
    /// `retries` counts the retries taken so far.
    pub async fn retry_endpoint(
        &self,
        policy: &RetryPolicy,
        retries: &mut u32,
        hash: Option<u64>,
        failed: &Endpoint,
    ) -> Option<&Endpoint> {
        if *retries == policy.attempts {
            if *retries > 0 {
                self.stats.retries_exhausted.inc();
            }
            return None;
        }
        if !self.budget.withdraw() {
            self.stats.retry_budget_exhausted.inc();
            return None;
        }
        tokio::time::sleep(backoff(policy, *retries)).await;
        *retries += 1;
        self.stats.retries.inc();
        self.pick_other(hash, failed)
    }

    /// An endpoint for a retry: another than `failed` when the balancer
    /// offers one within a few picks (a ring hash keeps its choice, so its
    /// retry goes elsewhere only once `failed` is ejected).
    fn pick_other(&self, hash: Option<u64>, failed: &Endpoint) -> Option<&Endpoint> {
        let mut ep = self.pick(hash)?;
        for _ in 0..3 {
            if !std::ptr::eq(ep, failed) {
                break;
            }
            ep = self.pick(hash)?;
        }
        Some(ep)
    }

    pub fn report_success(&self, ep: &Endpoint) {
        // Read first: avoid a shared write on every successful request.
        if ep.consecutive_failures.load(Relaxed) != 0 {
            ep.consecutive_failures.store(0, Relaxed);
        }
    }

    /// Counts a connect failure; ejects the endpoint after too many in a row,
    /// unless it is the last one available.
    pub fn report_connect_failure(&self, ep: &Endpoint) {
        self.stats.connect_failures.inc();
        ep.stats.connect_failures.inc();
        let threshold = self.spec.outlier.consecutive_failures;
        let n = ep.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if threshold == 0 || n < threshold || ep.ejected_until.load(Relaxed) != 0 {
            return;
        }
        let available = (0..self.endpoints.len())
            .filter(|&i| self.available(i))
            .count();
        if available <= 1 {
            return;
        }
        let until = now_ms() + self.spec.outlier.ejection.as_millis() as u64;
        if ep
            .ejected_until
            .compare_exchange(0, until, Relaxed, Relaxed)
            .is_ok()
        {
            self.ejected.fetch_add(1, Relaxed);
            ep.stats.ejections.inc();
            ep.consecutive_failures.store(0, Relaxed);
            tracing::warn!(cluster = %self.name, endpoint = %ep.address, "ejected after {n} connect failures");
        }
    }

    /// The ring_hash key of a request or connection: `key` (the hash header's
    /// value) when there is one, else the client address. None for other policies.
    pub fn hash_key(&self, key: Option<&[u8]>, client: IpAddr) -> Option<u64> {
        if self.spec.lb != LbPolicy::RingHash {
            return None;
        }
        Some(match (key, client) {
            (Some(k), _) => hash_bytes(k),
            (None, IpAddr::V4(ip)) => hash_bytes(&ip.octets()),
            (None, IpAddr::V6(ip)) => hash_bytes(&ip.octets()),
        })
    }
}

impl Loads for Cluster {
    fn available(&self, i: usize) -> bool {
        if self.ejected.load(Relaxed) == 0 {
            return true;
        }
        let ep = &self.endpoints[i];
        let until = ep.ejected_until.load(Relaxed);
        if until == 0 {
            return true;
        }
        if until > now_ms() {
            return false;
        }
        if ep
            .ejected_until
            .compare_exchange(until, 0, Relaxed, Relaxed)
            .is_ok()
        {
            self.ejected.fetch_sub(1, Relaxed);
        }
        true
    }

    fn active(&self, i: usize) -> u64 {
        self.endpoints[i].stats.active.get()
    }
}
