//! The data-plane config: the typed model and a decoder that validates a
//! YAML or JSON document and reports *every* problem with its field path,
//! instead of stopping at the first one as serde would.
//!
//! `decode` holds the primitives; each section has its own file with its
//! model types, its `impl Decoder` block and its tests. Run-time modules
//! (`tls`, `policy`, `snapshot`, ...) import these types; nothing here
//! imports them back.

mod authorization;
mod cluster;
mod decode;
mod dns;
mod egress;
mod filter;
mod health;
mod limits;
mod listener;
mod resilience;
mod route;
mod telemetry;
mod tls;
mod traffic;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::{ConfigIssue, Error, Result};
use crate::pki::Identity;

pub use authorization::{Action, AuthorizationConfig, RuleConfig};
pub use cluster::{ClusterConfig, LbPolicy, UpstreamProtocol};
use decode::{join, Decoder};
pub use dns::DnsConfig;
pub use egress::{EgressConfig, EgressPolicy};
pub use filter::{
    HeaderModifier, PathModifier, RedirectConfig, RewriteConfig, PROXY_OWNED_HEADERS,
};
pub use health::{HealthCheckConfig, HealthProbe};
pub use limits::{ListenerLimits, RESET_WINDOW};
pub use listener::{ListenerConfig, ListenerKind};
pub use resilience::{CircuitBreakers, RetryBudget, RetryOn, RetryPolicy};
pub use route::{path_regex, BackendConfig, MatchConfig, PathMatch, RouteConfig};
pub use telemetry::{Direction, LogFormat, LogPath, TelemetryConfig, TracingConfig};
pub use tls::{ClusterTls, EdgeCertificates, ListenerTls};
pub use traffic::{AbortAnswer, Bucket, FaultConfig, RateLimitConfig};
#[cfg(test)]
pub use traffic::{FaultAbort, FaultDelay, RateLimitOverride};

#[derive(Debug, Clone)]
pub struct Config {
    pub admin: Option<AdminConfig>,
    /// This proxy's mesh identity (SVID and roots), loaded and checked.
    pub identity: Option<Arc<Identity>>,
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterConfig>,
    /// How long a listener removed by an update may keep serving its
    /// in-flight connections.
    pub drain_timeout: Duration,
    pub telemetry: TelemetryConfig,
    /// The DNS answerer, when the document has one.
    pub dns: Option<DnsConfig>,
    /// The document as given, for `/config` (redacted there).
    pub document: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub address: SocketAddr,
}

// === impl Config ===

impl Config {
    /// Parses YAML or JSON text (JSON is a subset of YAML) and validates it.
    pub fn parse(text: &str) -> Result<Config> {
        let value: Value = yaml_serde::from_str(text).map_err(|e| {
            Error::Config(vec![ConfigIssue {
                path: String::new(),
                message: format!("not a YAML/JSON document: {e}"),
            }])
        })?;
        Config::from_value(value)
    }

    pub fn from_value(document: Value) -> Result<Config> {
        let mut cx = Decoder::default();
        let mut config = cx.config(&document);
        if let Some(c) = &mut config {
            c.document = document;
        }
        cx.finish(config)
    }

    /// The document with every secret-looking value replaced.
    pub fn redacted(&self) -> Value {
        redact(&self.document)
    }

    /// The redacted document with the resilience defaults written out, as
    /// they run (for `/config`): each route's retry policy and rate-limit
    /// bursts; each listener's rate-limit bursts; each cluster's balancer,
    /// outlier detection, retry budget, circuit breakers, and its health
    /// check and locality when it has them.
    pub fn effective(&self) -> Value {
        let mut doc = self.redacted();
        for (i, l) in self.listeners.iter().enumerate() {
            if let (Some(rl), Some(slot)) =
                (&l.rate_limit, doc.pointer_mut(&format!("/listeners/{i}")))
            {
                slot["rate_limit"] = rl.to_json();
            }
            let ListenerKind::Http { routes } = &l.kind else {
                continue;
            };
            for (r, route) in routes.iter().enumerate() {
                let Some(slot) = doc.pointer_mut(&format!("/listeners/{i}/routes/{r}")) else {
                    continue;
                };
                if route.redirect.is_none() {
                    slot["retry"] = route.retry.to_json();
                }
                if let Some(rl) = &route.rate_limit {
                    slot["rate_limit"] = rl.to_json();
                }
            }
        }
        for (c, cluster) in self.clusters.iter().enumerate() {
            if let Some(slot) = doc.pointer_mut(&format!("/clusters/{c}")) {
                slot["lb"] = cluster.lb.name().into();
                slot["outlier_detection"] = cluster.outlier.to_json();
                if let Some(hc) = &cluster.health_check {
                    slot["health_check"] = hc.to_json();
                }
                if let Some(loc) = &cluster.locality {
                    slot["locality"] = loc.to_json();
                }
                slot["retry_budget"] = cluster.retry_budget.to_json();
                slot["circuit_breakers"] = cluster.circuit_breakers.to_json();
                slot["service"] = cluster.service.clone().into();
                slot["dns_refresh_ms"] = (cluster.dns_refresh.as_millis() as u64).into();
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if let Some(slot) = doc.pointer_mut(&format!("/listeners/{i}")) {
                slot["direction"] = l.direction.as_str().into();
            }
        }
        if let Some(t) = &self.telemetry.tracing {
            doc["telemetry"]["tracing"] = t.to_json();
        }
        if let Some(d) = &self.dns {
            doc["dns"] = d.to_json();
        }
        doc
    }
}

/// Route matches alone, as `explain` hands them over: a list of `match`
/// mappings (null for a route without one), checked like a route's.
pub fn decode_matches(matches: &Value) -> Result<Vec<MatchConfig>> {
    let mut cx = Decoder::default();
    let decoded = match matches {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, m)| match m {
                Value::Null => Some(MatchConfig::default()),
                m => cx.matcher(m, &format!("matches[{i}]")),
            })
            .collect(),
        _ => {
            cx.err("matches", "expected a list");
            None
        }
    };
    cx.finish(decoded)
}

/// A listener's `authorization` section alone, for `explain`.
pub fn decode_authorization(block: &Value) -> Result<AuthorizationConfig> {
    let mut cx = Decoder::default();
    let decoded = cx.authorization(block, "authorization");
    cx.finish(decoded)
}

fn redact(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    if is_secret_key(k) {
                        (k.clone(), Value::String("<redacted>".into()))
                    } else {
                        (k.clone(), redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["key", "secret", "token", "password"]
        .iter()
        .any(|s| k == *s || k.ends_with(&format!("_{s}")) || k.ends_with(&format!("-{s}")))
}

// === impl Decoder (top level) ===

impl Decoder {
    fn config(&mut self, doc: &Value) -> Option<Config> {
        let top = self.object(
            doc,
            "",
            &[
                "admin",
                "identity",
                "listeners",
                "clusters",
                "drain_timeout_ms",
                "telemetry",
                "dns",
            ],
        )?;
        let identity = top
            .get("identity")
            .and_then(|v| self.identity(v, "identity"));
        // Mesh TLS needs an identity; say so once per place that asks, unless
        // the identity section is there but broken (its own errors say why).
        self.no_identity = top.get("identity").is_none();

        // Clusters first, so that routes can check their references.
        let mut cluster_names = HashSet::new();
        let clusters: Vec<ClusterConfig> = self
            .list(&top, "clusters", false)
            .into_iter()
            .filter_map(|(path, v)| self.cluster(v, &path, &mut cluster_names))
            .collect();

        let admin = top.get("admin").and_then(|v| self.admin(v, "admin"));

        let mut listener_names = HashSet::new();
        let mut addresses: HashSet<SocketAddr> = admin.iter().map(|a| a.address).collect();
        let mut listeners = Vec::new();
        for (path, v) in self.list(&top, "listeners", false) {
            if let Some(l) = self.listener(v, &path, &mut listener_names, &cluster_names) {
                if l.address.port() != 0 && !addresses.insert(l.address) {
                    self.err(
                        join(&path, "address"),
                        format!("address {} is already used", l.address),
                    );
                }
                listeners.push(l);
            }
        }
        let drain_timeout = self.millis(&top, "drain_timeout_ms", 10_000);
        let telemetry = top
            .get("telemetry")
            .and_then(|t| self.telemetry(t, "telemetry"))
            .unwrap_or_default();
        let dns = top.get("dns").and_then(|d| self.dns(d, "dns"));

        Some(Config {
            admin,
            identity,
            listeners,
            clusters,
            drain_timeout,
            telemetry,
            dns,
            document: Value::Null,
        })
    }

    fn admin(&mut self, v: &Value, path: &str) -> Option<AdminConfig> {
        let f = self.object(v, path, &["address"])?;
        let address = self.socket_addr(&f, "address")?;
        if !address.ip().is_loopback() {
            // Admin exposes config and stats: never on a routable address.
            self.err(
                f.at("address"),
                format!("{address} is not a loopback address"),
            );
        }
        Some(AdminConfig { address })
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers for the section tests: the issues a document has, as strings.

    use super::Config;
    use crate::error::Error;

    pub fn issues(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Ok(_) => vec![],
            Err(Error::Config(issues)) => issues.iter().map(|i| i.to_string()).collect(),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    /// Issues of a config whose only listener has the given routes (YAML flow
    /// mappings, one per line); clusters `a` and `b` exist.
    pub fn route_issues(routes: &[&str]) -> Vec<String> {
        let routes: String = routes.iter().map(|r| format!("    - {r}\n")).collect();
        issues(&format!(
            "listeners:\n - name: web\n   address: 127.0.0.1:1\n   routes:\n{routes}clusters:\n - {{name: a, endpoints: []}}\n - {{name: b, endpoints: []}}\n"
        ))
    }

    pub fn has(got: &[String], want: &str) -> bool {
        got.iter().any(|i| i.starts_with(want))
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use http::Method;

    const GOOD: &str = r#"
admin: {address: 127.0.0.1:15000}
listeners:
  - name: web
    address: 127.0.0.1:8080
    protocol: http
    routes:
      - match: {path_prefix: /api, method: GET, headers: {x-canary: "true"}}
        backends: [{cluster: api-v2}]
      - match: {path_prefix: /}
        backends: [{cluster: api-v1, weight: 90}, {cluster: api-v2, weight: 10}]
  - name: db
    address: 127.0.0.1:5433
    protocol: tcp
    cluster: postgres
clusters:
  - name: api-v1
    lb: round_robin
    protocol: http1
    endpoints: [{address: 127.0.0.1:9001}, {address: 127.0.0.1:9002, weight: 2}]
  - name: api-v2
    lb: ring_hash
    hash_header: x-user
    endpoints: [{address: localhost:9003}]
  - name: postgres
    endpoints: [{address: 127.0.0.1:5432}]
"#;

    #[test]
    fn accepts_the_design_example() {
        let c = Config::parse(GOOD).expect("valid");
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.clusters[0].endpoints[1].weight, 2);
        let ListenerKind::Http { routes } = &c.listeners[0].kind else {
            panic!()
        };
        assert_eq!(routes[0].matcher.method, Some(Method::GET));
        assert_eq!(routes[1].backends[0].weight, 90);
        assert_eq!(
            c.clusters[1].hash_header.as_ref().map(|h| h.as_str()),
            Some("x-user")
        );
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let text = GOOD
            .replace(
                "cluster: api-v2}]\n      - match",
                "cluster: api-v3}]\n      - match",
            )
            .replace("lb: round_robin", "lb: fastest")
            .replace("address: 127.0.0.1:5433", "address: nowhere")
            .replace("weight: 90", "weight: -1");
        let got = issues(&text);
        assert!(
            got.contains(
                &"listeners[0].routes[0].backends[0].cluster: unknown cluster 'api-v3'".to_string()
            ),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|i| i.starts_with("clusters[0].lb: 'fastest'")),
            "{got:?}"
        );
        assert!(
            got.iter().any(|i| i.starts_with("listeners[1].address:")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|i| i.starts_with("listeners[0].routes[1].backends[0].weight:")),
            "{got:?}"
        );
        assert_eq!(got.len(), 4, "{got:?}");
    }

    #[test]
    fn rejects_unknown_fields_and_wrong_types() {
        let got = issues(
            "listeners: [{name: a, address: 127.0.0.1:1, routes: [], colour: red}]\nclusters: 3",
        );
        assert!(
            got.iter()
                .any(|i| i.starts_with("listeners[0].colour: unknown field")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|i| i == "clusters: expected a list, got a number"),
            "{got:?}"
        );
    }

    #[test]
    fn rejects_duplicates_and_conflicts() {
        let got = issues(
            "admin: {address: 0.0.0.0:15000}\nlisteners:\n - {name: a, address: 127.0.0.1:1, routes: []}\n - {name: a, address: 127.0.0.1:1, routes: []}\nclusters:\n - {name: c, endpoints: [{address: 'h:1'}, {address: 'h:1'}]}",
        );
        assert!(
            got.iter().any(|i| i.starts_with("admin.address:")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|i| i == "listeners[1].name: duplicate listener name 'a'"),
            "{got:?}"
        );
        assert!(got.iter().any(|i| i.starts_with("listeners[1].address: address 127.0.0.1:1 is already used")), "{got:?}");
        assert!(
            got.iter()
                .any(|i| i.starts_with("clusters[0].endpoints[1].address: duplicate")),
            "{got:?}"
        );
    }

    #[test]
    fn not_yaml_is_one_clear_issue() {
        let got = issues("listeners: [");
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("not a YAML/JSON document"));
    }

    #[test]
    fn redacts_secrets() {
        let c = Config::parse("listeners: []\n").unwrap();
        let mut c2 = c.clone();
        c2.document =
            serde_json::json!({"tls": {"private_key": "x", "cert": "y"}, "api_token": "t"});
        let r = c2.redacted();
        assert_eq!(r["tls"]["private_key"], "<redacted>");
        assert_eq!(r["tls"]["cert"], "y");
        assert_eq!(r["api_token"], "<redacted>");
    }
}
