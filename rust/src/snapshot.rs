//! A compiled config: what every request and connection reads, through one
//! `ArcSwap` load. Routes point straight at their clusters, so the request
//! path does no name lookups.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::cluster::Cluster;
use crate::config::ListenerLimits;
use crate::config::{Config, Direction, FaultConfig, ListenerKind, ListenerTls, LogFormat};
use crate::egress::{self, Egress};
use crate::error::{ConfigIssue, Error, Result};
use crate::http::server::{builder as server_builder, ServerBuilder};
use crate::pki::SpiffeId;
use crate::policy::authz::{Authorization, Decision, Operation};
use crate::policy::ratelimit::RateLimiter;
use crate::route::{Backends, Route};
use crate::stats::{ListenerStats, Registry};
use crate::telemetry::access_log::LogWriter;
use crate::telemetry::edges::{EdgeLabels, EdgeTable};
use crate::telemetry::export::Tracer;
use crate::tls::server::ServerTls;
use crate::tls::IdentityCell;

/// Stable identity of a bound socket across config updates.
pub type ListenerId = u64;

pub enum Role {
    Http {
        routes: Vec<Route<Arc<Cluster>>>,
    },
    /// A cluster chosen by weight for each connection.
    Tcp {
        backends: Backends<Arc<Cluster>>,
    },
    /// Each connection goes to the listener of its original destination.
    Transparent,
    Admin,
}

pub struct Listener {
    pub name: String,
    /// The name again, shared by the records and edges that carry it.
    pub label: Arc<str>,
    pub address: SocketAddr,
    pub role: Role,
    pub stats: Arc<ListenerStats>,
    /// Server-side TLS: mesh mTLS or edge TLS; None for plaintext.
    pub tls: Option<ServerTls>,
    pub authz: Option<Authorization>,
    /// HTTP: requests, before routing; TCP: new connections.
    pub rate_limit: Option<RateLimiter>,
    /// TCP only: delays and resets of new connections.
    pub fault: Option<FaultConfig>,
    pub direction: Direction,
    pub access_log: Option<(Arc<LogWriter>, LogFormat)>,
    /// Edges of requests no route took (and of TCP connections).
    pub unrouted: EdgeTable,
    pub limits: ListenerLimits,
    /// HTTP: the server settings built from `limits` (once per snapshot).
    pub server: Option<Arc<ServerBuilder>>,
    /// http and transparent listeners with an `egress` section.
    pub egress: Option<Egress>,
    /// tcp listeners: every connection is closed at once (counted denied).
    pub deny: bool,
    /// Its stats show the egress counters (it has egress, deny or a deny route).
    pub egress_stats: bool,
}

// === impl Listener ===

impl Listener {
    /// The labels of an edge on this listener from `source` to `destination`
    /// (None: no backend). Inbound, the destination is this proxy's own
    /// service (`me`) and mTLS is whether the caller proved an identity;
    /// otherwise the cluster's service and its mesh TLS.
    pub fn edge_labels(
        &self,
        source: &Arc<str>,
        peer_verified: bool,
        me: &Arc<str>,
        route: &Arc<str>,
        destination: Option<&Cluster>,
        tcp: bool,
    ) -> EdgeLabels {
        let inbound = self.direction == Direction::Inbound;
        EdgeLabels {
            direction: self.direction,
            listener: self.label.clone(),
            route: route.clone(),
            source: source.clone(),
            destination: match destination {
                _ if inbound => me.clone(),
                Some(c) => c.spec.service.as_str().into(),
                None => "".into(),
            },
            tls: if inbound {
                peer_verified
            } else {
                destination.is_some_and(|c| c.spec.tls.is_some())
            },
            tcp,
        }
    }

    /// The listener's authorization decision for a request (`op`) or a TCP
    /// connection (`None`), counted and logged: None to go on, the deciding
    /// rule when denied. Listeners without authorization allow everything.
    pub fn authorize<'a>(
        &'a self,
        peer: Option<&SpiffeId>,
        op: Operation<'_>,
        client: SocketAddr,
    ) -> Option<&'a str> {
        let authz = self.authz.as_ref()?;
        match authz.decide(peer, op) {
            Decision::Allow(_) => {
                self.stats.authz_allowed.inc();
                None
            }
            Decision::Deny(why) => {
                self.stats.authz_denied.inc();
                let source = peer.map_or("plaintext", |p| p.as_str());
                match op {
                    Some((method, path)) => tracing::info!(
                        listener = %self.name, %client, source, %method, path, "request denied: {why}"
                    ),
                    None => tracing::info!(
                        listener = %self.name, %client, source, "connection denied: {why}"
                    ),
                }
                Some(why)
            }
        }
    }
}

pub struct Snapshot {
    pub version: u64,
    pub config: Arc<Config>,
    pub listeners: HashMap<ListenerId, Arc<Listener>>,
    pub clusters: Vec<Arc<Cluster>>,
    /// Samples traces and exports spans (when the config has tracing).
    pub tracer: Option<Arc<Tracer>>,
    /// This proxy's service, "namespace/name" ("" for a plain proxy).
    pub me: Arc<str>,
    /// Every listener, bound or not, by its address: where a transparent
    /// listener hands a connection with that original destination.
    pub by_address: HashMap<SocketAddr, ListenerId>,
    /// Reaches destinations as they are (egress allow_any); made when a
    /// listener needs it and kept across snapshots.
    pub passthrough: Option<Arc<Cluster>>,
}

/// Where each configured listener is bound: `admin` first when configured,
/// then one entry per `config.listeners`, in order.
pub struct Bindings {
    pub admin: Option<(ListenerId, SocketAddr)>,
    pub listeners: Vec<(ListenerId, SocketAddr)>,
}

// === impl Snapshot ===

impl Snapshot {
    pub fn empty() -> Self {
        Snapshot {
            version: 0,
            config: Arc::new(Config {
                admin: None,
                identity: None,
                listeners: vec![],
                clusters: vec![],
                drain_timeout: std::time::Duration::from_secs(1),
                telemetry: Default::default(),
                dns: None,
                document: Value::Null,
            }),
            listeners: HashMap::new(),
            clusters: vec![],
            tracer: None,
            me: "".into(),
            by_address: HashMap::new(),
            passthrough: None,
        }
    }

    /// Compiles `config`; clusters whose spec did not change are taken over
    /// from `previous` with their pools and balancer state.
    pub fn compile(
        config: Arc<Config>,
        bindings: &Bindings,
        previous: &Snapshot,
        registry: &Registry,
        identity: &IdentityCell,
        version: u64,
        workers: usize,
    ) -> Result<Snapshot> {
        let clusters: Vec<Arc<Cluster>> = config
            .clusters
            .iter()
            .map(|spec| {
                previous
                    .clusters
                    .iter()
                    .find(|c| c.spec == *spec)
                    .cloned()
                    .unwrap_or_else(|| Cluster::build(spec, registry, identity, workers))
            })
            .collect();
        let by_name: HashMap<&str, &Arc<Cluster>> =
            clusters.iter().map(|c| (c.name.as_str(), c)).collect();
        let resolve = |name: &str, path: String| -> Result<Arc<Cluster>> {
            by_name.get(name).map(|c| (*c).clone()).ok_or_else(|| {
                Error::Config(vec![ConfigIssue {
                    path,
                    message: format!("unknown cluster '{name}'"),
                }])
            })
        };

        let passthrough = config
            .listeners
            .iter()
            .any(|l| l.egress.is_some())
            .then(|| {
                egress::passthrough(previous.passthrough.as_ref(), registry, identity, workers)
            });
        let mut by_address = HashMap::new();
        let mut listeners = HashMap::new();
        if let Some((id, address)) = bindings.admin {
            listeners.insert(
                id,
                Arc::new(Listener {
                    name: "admin".into(),
                    label: "admin".into(),
                    address,
                    role: Role::Admin,
                    stats: Arc::new(ListenerStats::default()),
                    tls: None,
                    authz: None,
                    rate_limit: None,
                    fault: None,
                    direction: Direction::Inbound,
                    access_log: None,
                    unrouted: EdgeTable::default(),
                    limits: ListenerLimits::default(),
                    server: Some(Arc::new(server_builder(&ListenerLimits::default()))),
                    egress: None,
                    deny: false,
                    egress_stats: false,
                }),
            );
        }
        for (i, (cfg, &(id, address))) in
            config.listeners.iter().zip(&bindings.listeners).enumerate()
        {
            let role = match &cfg.kind {
                ListenerKind::Http { routes } => {
                    let mut compiled = Vec::with_capacity(routes.len());
                    for (r, route) in routes.iter().enumerate() {
                        let backends = route
                            .backends
                            .iter()
                            .enumerate()
                            .map(|(b, be)| {
                                resolve(
                                    &be.cluster,
                                    format!("listeners[{i}].routes[{r}].backends[{b}].cluster"),
                                )
                            })
                            .collect::<Result<Vec<_>>>()?;
                        let mirrors = route
                            .mirrors
                            .iter()
                            .enumerate()
                            .map(|(m, mi)| {
                                resolve(
                                    &mi.cluster,
                                    format!("listeners[{i}].routes[{r}].mirrors[{m}].cluster"),
                                )
                            })
                            .collect::<Result<Vec<_>>>()?;
                        compiled.push(Route::new(r, route, backends, mirrors).map_err(|e| {
                            Error::Config(vec![ConfigIssue {
                                path: format!("listeners[{i}].routes[{r}].match.path_regex"),
                                message: e.to_string(),
                            }])
                        })?);
                    }
                    Role::Http { routes: compiled }
                }
                ListenerKind::Tcp { backends } => {
                    let clusters = backends
                        .iter()
                        .enumerate()
                        .map(|(b, be)| {
                            resolve(&be.cluster, format!("listeners[{i}].backends[{b}].cluster"))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
                    Role::Tcp {
                        backends: Backends::new(clusters, &weights),
                    }
                }
                ListenerKind::Transparent => Role::Transparent,
            };
            let egress =
                cfg.egress.as_ref().zip(passthrough.as_ref()).map(|(e, p)| {
                    Egress::new(e, p, |name| by_name.get(name).map(|c| (*c).clone()))
                });
            let deny_routes = match &cfg.kind {
                ListenerKind::Http { routes } => routes.iter().any(|r| r.deny),
                _ => false,
            };
            by_address.insert(cfg.address, id);
            by_address.insert(address, id);
            let tls = cfg.tls.as_ref().map(|t| match t {
                ListenerTls::Strict => ServerTls::mesh(identity, false),
                ListenerTls::Permissive => ServerTls::mesh(identity, true),
                ListenerTls::Simple(certs) => {
                    ServerTls::edge(certs, matches!(cfg.kind, ListenerKind::Http { .. }))
                }
            });
            let access_log = match &cfg.access_log {
                None => None,
                Some(a) => Some((
                    registry.logs.get(&a.path).map_err(|e| {
                        Error::Config(vec![ConfigIssue {
                            path: format!("listeners[{i}].access_log.path"),
                            message: format!("cannot open: {e}"),
                        }])
                    })?,
                    a.format,
                )),
            };
            listeners.insert(
                id,
                Arc::new(Listener {
                    name: cfg.name.clone(),
                    label: cfg.name.as_str().into(),
                    address,
                    role,
                    stats: registry.listener(&cfg.name),
                    tls,
                    authz: cfg.authorization.as_ref().map(Authorization::new),
                    rate_limit: cfg.rate_limit.as_ref().map(RateLimiter::new),
                    fault: cfg.fault.clone(),
                    direction: cfg.direction,
                    access_log,
                    unrouted: EdgeTable::default(),
                    limits: cfg.limits,
                    server: matches!(cfg.kind, ListenerKind::Http { .. })
                        .then(|| Arc::new(server_builder(&cfg.limits))),
                    egress_stats: egress.is_some()
                        || cfg.deny
                        || deny_routes
                        || cfg.kind == ListenerKind::Transparent,
                    egress,
                    deny: cfg.deny,
                }),
            );
        }
        let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        let cluster_names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        let tracer = match &config.telemetry.tracing {
            None => None,
            Some(t) => match &previous.tracer {
                Some(kept) if kept.spec.0 == *t && same_labels(&kept.spec.1, &config.telemetry) => {
                    Some(kept.clone())
                }
                _ => Some(Arc::new(
                    Tracer::new(t, &config.telemetry, registry.telemetry.clone()).map_err(
                        |message| {
                            Error::Config(vec![ConfigIssue {
                                path: "telemetry.tracing".into(),
                                message,
                            }])
                        },
                    )?,
                )),
            },
        };
        let t = &config.telemetry;
        let me: Arc<str> = if t.service.is_empty() {
            "".into()
        } else {
            format!("{}/{}", t.namespace, t.service).into()
        };
        registry.retain(&names, &cluster_names);
        Ok(Snapshot {
            version,
            config,
            listeners,
            clusters,
            tracer,
            me,
            by_address,
            passthrough,
        })
    }

    /// Counters for every configured listener and cluster, as JSON.
    pub fn stats(&self) -> Value {
        let mut listeners = Map::new();
        for l in self.listeners.values() {
            let protocol = match l.role {
                Role::Http { .. } => "http",
                Role::Tcp { .. } => "tcp",
                Role::Transparent => "transparent",
                Role::Admin => continue,
            };
            let mut v = l.stats.to_json(protocol, l.address.to_string());
            if l.egress_stats {
                v["egress"] = l.stats.egress.to_json();
            }
            listeners.insert(l.name.clone(), v);
        }
        let mut clusters = Map::new();
        for c in &self.clusters {
            let endpoints: Map<String, Value> = c
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| (e.address.clone(), c.endpoint_json(i)))
                .collect();
            clusters.insert(c.name.clone(), c.stats.to_json(Value::Object(endpoints)));
        }
        json!({"version": self.version, "listeners": listeners, "clusters": clusters})
    }
}

fn same_labels(a: &crate::config::TelemetryConfig, b: &crate::config::TelemetryConfig) -> bool {
    (&a.service, &a.namespace, &a.workload) == (&b.service, &b.namespace, &b.workload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str, previous: &Snapshot, registry: &Registry) -> Snapshot {
        let config = Arc::new(Config::parse(text).unwrap());
        let bindings = Bindings {
            admin: None,
            listeners: (0..config.listeners.len())
                .map(|i| (i as u64 + 1, "127.0.0.1:1".parse().unwrap()))
                .collect(),
        };
        Snapshot::compile(
            config,
            &bindings,
            previous,
            registry,
            &IdentityCell::default(),
            previous.version + 1,
            2,
        )
        .unwrap()
    }

    const BASE: &str = "listeners: [{name: web, address: '127.0.0.1:0', routes: [{backends: [{cluster: a}, {cluster: b}]}]}]\nclusters: [{name: a, endpoints: [{address: '127.0.0.1:1'}]}, {name: b, endpoints: []}]\n";

    #[test]
    fn unchanged_clusters_are_reused_changed_ones_rebuilt() {
        let registry = Registry::default();
        let first = compile(BASE, &Snapshot::empty(), &registry);
        let second = compile(
            &BASE.replace(
                "name: b, endpoints: []",
                "name: b, endpoints: [{address: '127.0.0.1:2'}]",
            ),
            &first,
            &registry,
        );
        assert!(
            Arc::ptr_eq(&first.clusters[0], &second.clusters[0]),
            "cluster a kept its pool"
        );
        assert!(
            !Arc::ptr_eq(&first.clusters[1], &second.clusters[1]),
            "cluster b was rebuilt"
        );
        let Role::Http { routes } = &second.listeners[&1].role else {
            panic!()
        };
        assert!(
            Arc::ptr_eq(&routes[0].backends[1], &second.clusters[1]),
            "routes point at the new cluster"
        );
    }

    #[test]
    fn tcp_listeners_point_at_their_weighted_clusters() {
        let registry = Registry::default();
        let text = "listeners: [{name: db, address: '127.0.0.1:0', protocol: tcp, backends: [{cluster: b, weight: 3}, {cluster: a, weight: 0}]}]\nclusters: [{name: a, endpoints: []}, {name: b, endpoints: []}]\n";
        let snap = compile(text, &Snapshot::empty(), &registry);
        let Role::Tcp { backends } = &snap.listeners[&1].role else {
            panic!()
        };
        assert!(Arc::ptr_eq(&backends[0], &snap.clusters[1]));
        assert!(Arc::ptr_eq(&backends[1], &snap.clusters[0]));
        for _ in 0..100 {
            let picked = backends.pick().expect("a weighted cluster");
            assert_eq!(picked.name, "b", "weight 0 is never picked");
        }
    }

    #[test]
    fn stats_survive_recompiles_and_list_everything() {
        let registry = Registry::default();
        let first = compile(BASE, &Snapshot::empty(), &registry);
        first.clusters[0].stats.requests.inc();
        first.listeners[&1].stats.requests.inc();
        let second = compile(
            &BASE.replace("'127.0.0.1:1'}]}, {name: b", "'127.0.0.1:3'}]}, {name: b"),
            &first,
            &registry,
        );
        let stats = second.stats();
        assert_eq!(stats["version"], 2);
        assert_eq!(stats["clusters"]["a"]["requests"], 1);
        assert_eq!(stats["listeners"]["web"]["requests"], 1);
        assert_eq!(
            stats["clusters"]["a"]["endpoints"]["127.0.0.1:3"]["healthy"],
            true
        );
    }

    #[test]
    fn every_listener_bound_or_not_is_found_by_its_address() {
        let registry = Registry::default();
        let text = "listeners:\n - {name: t, address: '127.0.0.1:0', protocol: transparent, egress: {policy: allow_any}}\n \
                    - {name: vip, address: '240.240.0.9:80', bind: false, routes: [{backends: [{cluster: a}]}]}\n\
                    clusters: [{name: a, endpoints: []}]\n";
        let snap = compile(text, &Snapshot::empty(), &registry);
        let vip: std::net::SocketAddr = "240.240.0.9:80".parse().unwrap();
        assert_eq!(snap.by_address.get(&vip), Some(&2));
        assert!(matches!(snap.listeners[&1].role, Role::Transparent));
        let passthrough = snap.passthrough.clone().expect("egress needs it");
        let again = compile(text, &snap, &registry);
        assert!(
            Arc::ptr_eq(&passthrough, again.passthrough.as_ref().unwrap()),
            "the passthrough cluster keeps its pools"
        );
        assert_eq!(
            again.stats()["listeners"]["t"]["egress"],
            json!({"denied": 0, "passthrough": 0, "tunnelled": 0})
        );
    }
}
