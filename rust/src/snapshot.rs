//! A compiled config: what every request and connection reads, through one
//! `ArcSwap` load. Routes point straight at their clusters, so the request
//! path does no name lookups.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::cluster::Cluster;
use crate::config::{Config, ListenerKind};
use crate::error::{ConfigIssue, Error, Result};
use crate::route::Route;
use crate::stats::{ListenerStats, Registry};

/// Stable identity of a bound socket across config updates.
pub type ListenerId = u64;

pub enum Role {
    Http { routes: Vec<Route<Arc<Cluster>>> },
    Tcp { cluster: Arc<Cluster> },
    Admin,
}

pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub role: Role,
    pub stats: Arc<ListenerStats>,
}

pub struct Snapshot {
    pub version: u64,
    pub config: Arc<Config>,
    pub listeners: HashMap<ListenerId, Arc<Listener>>,
    pub clusters: Vec<Arc<Cluster>>,
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
                listeners: vec![],
                clusters: vec![],
                drain_timeout: std::time::Duration::from_secs(1),
                document: Value::Null,
            }),
            listeners: HashMap::new(),
            clusters: vec![],
        }
    }

    /// Compiles `config`; clusters whose spec did not change are taken over
    /// from `previous` with their pools and balancer state.
    pub fn compile(
        config: Arc<Config>,
        bindings: &Bindings,
        previous: &Snapshot,
        registry: &Registry,
        version: u64,
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
                    .unwrap_or_else(|| Arc::new(Cluster::new(spec, registry)))
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

        let mut listeners = HashMap::new();
        if let Some((id, address)) = bindings.admin {
            listeners.insert(
                id,
                Arc::new(Listener {
                    name: "admin".into(),
                    address,
                    role: Role::Admin,
                    stats: Arc::new(ListenerStats::default()),
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
                        compiled.push(Route::new(r, route, backends).map_err(|e| {
                            Error::Config(vec![ConfigIssue {
                                path: format!("listeners[{i}].routes[{r}].match.path_regex"),
                                message: e.to_string(),
                            }])
                        })?);
                    }
                    Role::Http { routes: compiled }
                }
                ListenerKind::Tcp { cluster } => Role::Tcp {
                    cluster: resolve(cluster, format!("listeners[{i}].cluster"))?,
                },
            };
            listeners.insert(
                id,
                Arc::new(Listener {
                    name: cfg.name.clone(),
                    address,
                    role,
                    stats: registry.listener(&cfg.name),
                }),
            );
        }
        let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        let cluster_names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        registry.retain(&names, &cluster_names);
        Ok(Snapshot {
            version,
            config,
            listeners,
            clusters,
        })
    }

    /// Counters for every configured listener and cluster, as JSON.
    pub fn stats(&self) -> Value {
        let mut listeners = Map::new();
        for l in self.listeners.values() {
            let protocol = match l.role {
                Role::Http { .. } => "http",
                Role::Tcp { .. } => "tcp",
                Role::Admin => continue,
            };
            listeners.insert(
                l.name.clone(),
                l.stats.to_json(protocol, l.address.to_string()),
            );
        }
        let mut clusters = Map::new();
        for c in &self.clusters {
            let endpoints: Map<String, Value> = c
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    (
                        e.address.clone(),
                        e.stats.to_json(e.weight, c.is_healthy(i)),
                    )
                })
                .collect();
            clusters.insert(c.name.clone(), c.stats.to_json(Value::Object(endpoints)));
        }
        json!({"version": self.version, "listeners": listeners, "clusters": clusters})
    }
}
