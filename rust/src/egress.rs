//! Egress control at run time: a listener's compiled `egress` section (its
//! policy, its CONNECT allow-list, the passthrough route of `allow_any`),
//! the passthrough cluster every such listener shares, and how a denial is
//! counted and logged.

use std::sync::Arc;

use crate::cluster::Cluster;
use crate::config::{
    BackendConfig, ClusterConfig, EgressConfig, EgressPolicy, LbPolicy, MatchConfig, RouteConfig,
    UpstreamProtocol,
};
use crate::route::{HostMatcher, Route};
use crate::snapshot::Listener;
use crate::stats::{EgressResult, Registry};
use crate::tls::IdentityCell;

/// The name of the cluster that reaches destinations as they are (no
/// config cluster can have it: names hold no parentheses).
pub const PASSTHROUGH: &str = "(passthrough)";

pub struct Egress {
    pub policy: EgressPolicy,
    pub connect: Vec<ConnectTarget>,
    /// What an unrouted request takes under `allow_any`: the passthrough
    /// cluster with a route's defaults.
    pub route: Route<Arc<Cluster>>,
}

/// A CONNECT target: allowed, or refused whatever the policy.
pub struct ConnectTarget {
    pub host: HostMatcher,
    pub port: u16,
    /// Where the tunnel goes; None: to the CONNECT's own host:port.
    pub cluster: Option<Arc<Cluster>>,
    pub deny: bool,
}

// === impl Egress ===

impl Egress {
    /// `resolve` finds a connect rule's cluster by name (the decoder checked it).
    pub fn new(
        cfg: &EgressConfig,
        passthrough: &Arc<Cluster>,
        resolve: impl Fn(&str) -> Option<Arc<Cluster>>,
    ) -> Self {
        let route = RouteConfig {
            name: Some("passthrough".into()),
            matcher: MatchConfig::default(),
            backends: vec![BackendConfig {
                cluster: PASSTHROUGH.into(),
                weight: 1,
            }],
            deny: false,
            timeout: None,
            retry: Default::default(),
            fault: None,
            mirrors: Vec::new(),
            rate_limit: None,
            request_headers: Default::default(),
            response_headers: Default::default(),
            rewrite: None,
            redirect: None,
            max_request_bytes: None,
        };
        Egress {
            policy: cfg.policy,
            connect: cfg
                .connect
                .iter()
                .map(|c| ConnectTarget {
                    host: HostMatcher::new(&c.host),
                    port: c.port,
                    cluster: c.cluster.as_deref().and_then(&resolve),
                    deny: c.deny,
                })
                .collect(),
            route: Route::new(0, &route, vec![passthrough.clone()], Vec::new())
                .expect("a route without regexes compiles"),
        }
    }

    /// The connect rule that allows `host` (lower-cased) and `port`, if any.
    pub fn connect_target(&self, host: &str, port: u16) -> Option<&ConnectTarget> {
        self.connect
            .iter()
            .find(|t| t.port == port && t.host.matches(host))
    }
}

/// The passthrough cluster: `previous` when there is one (its pools and
/// stats go on), else a new one.
pub fn passthrough(
    previous: Option<&Arc<Cluster>>,
    registry: &Registry,
    identity: &IdentityCell,
    workers: usize,
) -> Arc<Cluster> {
    if let Some(p) = previous {
        return p.clone();
    }
    let spec = ClusterConfig {
        name: PASSTHROUGH.into(),
        lb: LbPolicy::RoundRobin,
        hash_header: None,
        protocol: UpstreamProtocol::Http1,
        connect_timeout: std::time::Duration::from_secs(5),
        dns_refresh: std::time::Duration::from_secs(5),
        endpoints: Vec::new(),
        outlier: Default::default(),
        health_check: None,
        locality: None,
        circuit_breakers: Default::default(),
        retry_budget: Default::default(),
        tls: None,
        original_destination: true,
        service: "passthrough".into(),
    };
    Cluster::build(&spec, registry, identity, workers)
}

/// Counts an egress decision on `listener`; a denial is logged as a warning.
pub fn count(listener: &Listener, result: EgressResult, what: &str) {
    listener.stats.egress.inc(result);
    match result {
        EgressResult::Denied => {
            tracing::warn!(listener = %listener.name, "egress denied: {what}")
        }
        _ => tracing::debug!(listener = %listener.name, "egress {}: {what}", result_name(result)),
    }
}

fn result_name(r: EgressResult) -> &'static str {
    use crate::stats::Reason;
    r.name()
}
