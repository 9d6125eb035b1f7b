//! A cluster at run time: its endpoints with their health (passive
//! `outlier`, active `probe`), its balancer (by locality level when the
//! cluster has one), its upstream connection pool and its stats. Built once
//! per config change and reused unchanged by later configs that do not
//! touch it.

mod outlier;
mod probe;

pub use outlier::Outcome;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use http::uri::Authority;
use serde_json::{json, Value};

use crate::balance::{hash_bytes, Balancer, Loads, Rtt};
use crate::clock::now_ms;
use crate::config::{ClusterConfig, ClusterTls, LbPolicy, RetryPolicy, UpstreamProtocol};
use crate::dns::Resolver;
use crate::http::pool::Pool;
use crate::resilience::{backoff, Budget};
use crate::stats::{Active, ClusterStats, EndpointStats, Registry};
use crate::tls::client::ClientTls;
use crate::tls::IdentityCell;

pub struct Endpoint {
    pub address: String,
    pub authority: Authority,
    pub weight: u32,
    pub zone: Option<String>,
    pub stats: Arc<EndpointStats>,
    /// Upstream connections to this endpoint, per worker thread.
    pub pool: Arc<Pool>,
    health: outlier::Health,
    /// Response times, for peak_ewma.
    pub rtt: Rtt,
}

/// What `Cluster::retry_endpoint` decided after a failed try.
pub enum Retry<'a> {
    /// Try again on this endpoint; the guard holds one of the cluster's
    /// `max_retries` slots for as long as the retry lives.
    Go(&'a Endpoint, Active<ClusterStats>),
    /// The failure is final: no retry left, or the budget is spent.
    Stop,
    /// `max_retries` retries are in flight already (counted as overflow).
    Overflow,
}

/// Endpoints of one locality priority, with their own balancer.
struct Level {
    members: Vec<usize>,
    balancer: Balancer,
}

pub struct Cluster {
    pub name: String,
    pub spec: ClusterConfig,
    pub endpoints: Vec<Endpoint>,
    pub stats: Arc<ClusterStats>,
    /// What retries the cluster's requests may still add.
    pub budget: Budget,
    /// Over every endpoint: used without locality, and in panic.
    all: Balancer,
    /// With locality: the own zone first, then the failover zones, then the rest.
    levels: Vec<Level>,
    /// Endpoints ejected or failing their health check now; lets picks skip
    /// every health read while it is 0.
    down: AtomicUsize,
    /// original_destination clusters: their endpoints, made per destination.
    dynamic: Option<Dynamic>,
}

/// The endpoints of an original_destination cluster, made on first use
/// (with their pools, so that later calls reuse connections) and kept while
/// there are few; past `DYNAMIC_MAX` the set starts over.
struct Dynamic {
    tls: Option<Arc<ClientTls>>,
    resolver: Arc<Resolver>,
    workers: usize,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
}

const DYNAMIC_MAX: usize = 1024;

impl Dynamic {
    fn new(tls: Option<Arc<ClientTls>>, resolver: Arc<Resolver>, workers: usize) -> Self {
        Dynamic {
            tls,
            resolver,
            workers,
            endpoints: Mutex::default(),
        }
    }
}

// === impl Endpoint ===

impl Endpoint {
    /// An endpoint at `address` (host:port) of weight 1, with its own pool
    /// and stats not kept by the registry.
    fn new(
        address: &str,
        spec: &ClusterConfig,
        tls: Option<Arc<ClientTls>>,
        stats: &Arc<ClusterStats>,
        resolver: Arc<Resolver>,
        workers: usize,
    ) -> Self {
        Endpoint {
            // Validation checked host:port; an odd host still must not panic.
            authority: address
                .parse()
                .unwrap_or_else(|_| Authority::from_static("invalid.invalid:1")),
            address: address.to_string(),
            weight: 1,
            zone: None,
            stats: Arc::default(),
            pool: Arc::new(Pool::new(
                address,
                spec,
                tls,
                stats.clone(),
                resolver,
                workers,
            )),
            health: outlier::Health::default(),
            rtt: Rtt::default(),
        }
    }
}

/// The endpoints a balancer sees: a level's members (or all), and whether
/// health is ignored (every endpoint up, or the cluster in panic).
struct View<'a> {
    cluster: &'a Cluster,
    members: Option<&'a [usize]>,
    all_up: bool,
}

impl View<'_> {
    #[inline]
    fn index(&self, i: usize) -> usize {
        self.members.map_or(i, |m| m[i])
    }
}

impl Loads for View<'_> {
    fn available(&self, i: usize) -> bool {
        self.all_up || self.cluster.available(self.index(i))
    }

    fn active(&self, i: usize) -> u64 {
        self.cluster.endpoints[self.index(i)].stats.active.get()
    }

    fn rtt_ns(&self, i: usize) -> u64 {
        self.cluster.endpoints[self.index(i)].rtt.estimate_ns()
    }
}

// === impl Cluster ===

impl Cluster {
    /// The cluster, with its active health checks running when it has them
    /// (they stop once the cluster is dropped).
    pub fn build(
        spec: &ClusterConfig,
        registry: &Registry,
        identity: &IdentityCell,
        workers: usize,
    ) -> Arc<Self> {
        let cluster = Arc::new(Cluster::new(spec, registry, identity, workers));
        probe::start(&cluster);
        cluster
    }

    fn new(
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
        let tls = spec.tls.as_ref().map(|t| {
            Arc::new(match t {
                ClusterTls::Mesh { peer_ids } => ClientTls::mesh(identity, peer_ids.clone(), alpn),
                ClusterTls::Origination { server_name, ca } => {
                    ClientTls::origination(server_name, ca, alpn).unwrap_or_else(|e| {
                        // The decoder checked both; fail closed all the same (no peer passes).
                        tracing::error!(cluster = %spec.name, "TLS origination unusable: {e}");
                        ClientTls::mesh(identity, Vec::new(), alpn)
                    })
                }
            })
        });
        let stats = registry.cluster(&spec.name);
        let endpoints: Vec<Endpoint> = spec
            .endpoints
            .iter()
            .map(|e| {
                let mut ep = Endpoint::new(
                    &e.address,
                    spec,
                    tls.clone(),
                    &stats,
                    registry.dns.clone(),
                    workers,
                );
                ep.weight = e.weight;
                ep.zone = e.zone.clone();
                ep.stats = registry.endpoint(&spec.name, &e.address);
                ep
            })
            .collect();
        let balancer = |members: &[usize]| {
            let weights: Vec<u32> = members.iter().map(|&i| endpoints[i].weight).collect();
            let keys: Vec<&str> = members
                .iter()
                .map(|&i| endpoints[i].address.as_str())
                .collect();
            Balancer::new(spec.lb, &weights, &keys)
        };
        let everyone: Vec<usize> = (0..endpoints.len()).collect();
        let levels = match &spec.locality {
            None => Vec::new(),
            Some(loc) => {
                let mut order: Vec<Option<&str>> = vec![Some(loc.zone.as_str())];
                order.extend(loc.failover.iter().map(|z| Some(z.as_str())));
                let mut levels: Vec<Vec<usize>> = order
                    .iter()
                    .map(|zone| {
                        everyone
                            .iter()
                            .copied()
                            .filter(|&i| endpoints[i].zone.as_deref() == *zone)
                            .collect()
                    })
                    .collect();
                let rest = everyone
                    .iter()
                    .copied()
                    .filter(|&i| !order.contains(&endpoints[i].zone.as_deref()))
                    .collect();
                levels.push(rest);
                levels
                    .into_iter()
                    .filter(|m| !m.is_empty())
                    .map(|members| Level {
                        balancer: balancer(&members),
                        members,
                    })
                    .collect()
            }
        };
        Cluster {
            dynamic: spec
                .original_destination
                .then(|| Dynamic::new(tls, registry.dns.clone(), workers)),
            name: spec.name.clone(),
            all: balancer(&everyone),
            levels,
            stats,
            budget: Budget::new(spec.retry_budget),
            endpoints,
            spec: spec.clone(),
            down: AtomicUsize::new(0),
        }
    }

    /// An endpoint for a request: by locality level while enough of one is
    /// healthy, over every endpoint in panic (too few healthy anywhere).
    pub fn pick(&self, hash: Option<u64>) -> Option<&Endpoint> {
        let all_up = self.down.load(Relaxed) == 0;
        if all_up {
            let (members, balancer) = match self.levels.first() {
                Some(l) => (Some(l.members.as_slice()), &l.balancer),
                None => (None, &self.all),
            };
            return self.pick_in(balancer, members, hash, true);
        }
        let total = self.endpoints.len();
        let healthy = (0..total).filter(|&i| self.available(i)).count();
        let panic = self.spec.outlier.panic_threshold_percent as usize;
        if healthy == 0 || healthy * 100 < panic * total {
            self.stats.panic.inc();
            return self.pick_in(&self.all, None, hash, true);
        }
        if self.levels.is_empty() {
            return self.pick_in(&self.all, None, hash, false);
        }
        let min = self
            .spec
            .locality
            .as_ref()
            .map_or(0, |l| l.min_healthy_percent as usize);
        let healthy_in = |l: &Level| l.members.iter().filter(|&&i| self.available(i)).count();
        let level = self
            .levels
            .iter()
            .find(|l| {
                let h = healthy_in(l);
                h > 0 && h * 100 >= min * l.members.len()
            })
            .or_else(|| self.levels.iter().find(|l| healthy_in(l) > 0))?;
        self.pick_in(&level.balancer, Some(&level.members), hash, false)
    }

    fn pick_in(
        &self,
        balancer: &Balancer,
        members: Option<&[usize]>,
        hash: Option<u64>,
        all_up: bool,
    ) -> Option<&Endpoint> {
        let view = View {
            cluster: self,
            members,
            all_up,
        };
        let i = balancer.pick(&view, hash)?;
        Some(&self.endpoints[view.index(i)])
    }

    /// An original_destination cluster's endpoint for `address` (host:port);
    /// None for other clusters, or when `address` is no host:port.
    pub fn destination(&self, address: &str) -> Option<Arc<Endpoint>> {
        let dynamic = self.dynamic.as_ref()?;
        address
            .parse::<Authority>()
            .ok()
            .filter(|a| a.port().is_some())?;
        let mut endpoints = dynamic.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ep) = endpoints.get(address) {
            return Some(ep.clone());
        }
        if endpoints.len() >= DYNAMIC_MAX {
            endpoints.clear();
        }
        let ep = Arc::new(Endpoint::new(
            address,
            &self.spec,
            dynamic.tls.clone(),
            &self.stats,
            dynamic.resolver.clone(),
            dynamic.workers,
        ));
        endpoints.insert(address.to_string(), ep.clone());
        Some(ep)
    }

    /// False while an endpoint is ejected or failing its health check.
    pub fn available(&self, i: usize) -> bool {
        let ep = &self.endpoints[i];
        !ep.health.probe_failing() && !self.still_ejected(ep)
    }

    /// Recounts the endpoints that are down, after one changed state.
    fn recount(&self) {
        let down = self
            .endpoints
            .iter()
            .filter(|e| e.health.probe_failing() || e.health.ejected_until() != 0)
            .count();
        self.down.store(down, Relaxed);
    }

    /// An endpoint's stats with its health, for `/stats`.
    pub fn endpoint_json(&self, i: usize) -> Value {
        let ep = &self.endpoints[i];
        let mut v = ep.stats.to_json(ep.weight);
        let until = ep.health.ejected_until();
        let now = now_ms();
        v["healthy"] = self.available(i).into();
        v["ejected"] = (until > now).into();
        if until > now {
            v["ejected_for_ms"] = (until - now).into();
        }
        v["health_check"] = match (&self.spec.health_check, ep.health.probe_failing()) {
            (None, _) => Value::Null,
            (Some(_), false) => "passing".into(),
            (Some(_), true) => "failing".into(),
        };
        if let Some(z) = &ep.zone {
            v["zone"] = z.as_str().into();
        }
        if self.spec.lb == LbPolicy::PeakEwma {
            v["rtt_ewma_ms"] = json!(ep.rtt.estimate_ns() as f64 / 1e6);
        }
        v
    }

    /// After a failed try on `failed`: whether and where the next try goes.
    /// In order: `policy` must have a retry left, `max_retries` a free slot
    /// and the budget a retry to grant; then, after the back-off, another
    /// endpoint is picked. Each refusal is counted. `retries` counts the
    /// retries taken so far.
    pub async fn retry_endpoint(
        &self,
        policy: &RetryPolicy,
        retries: &mut u32,
        hash: Option<u64>,
        failed: &Endpoint,
    ) -> Retry<'_> {
        if *retries == policy.attempts {
            if *retries > 0 {
                self.stats.retries_exhausted.inc();
            }
            return Retry::Stop;
        }
        let limit = self.spec.circuit_breakers.max_retries;
        let Some(slot) = Active::try_enter(&self.stats, |s| &s.active_retries, limit) else {
            self.stats.overflow.inc();
            return Retry::Overflow;
        };
        if !self.budget.withdraw() {
            self.stats.retry_budget_exhausted.inc();
            return Retry::Stop;
        }
        tokio::time::sleep(backoff(policy, *retries)).await;
        *retries += 1;
        self.stats.retries.inc();
        match self.pick_other(hash, failed) {
            Some(ep) => Retry::Go(ep, slot),
            None => Retry::Stop,
        }
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

// === impl Cluster (sweeps) ===

impl Cluster {
    /// Closes the idle upstream connections that their upstream closed (or
    /// that expired), of every endpoint: the engine's sweep calls it now and
    /// then, so that a quiet pool does not keep them half-closed and counted
    /// as open until a request would have taken them.
    pub fn sweep(&self) {
        for ep in &self.endpoints {
            ep.pool.sweep();
        }
        if let Some(d) = &self.dynamic {
            let endpoints: Vec<Arc<Endpoint>> = (d.endpoints.lock())
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            for ep in endpoints {
                ep.pool.sweep();
            }
        }
    }
}
