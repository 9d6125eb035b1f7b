//! The data-plane config: typed model plus a decoder that validates a YAML or
//! JSON document and reports *every* problem with its field path, instead of
//! stopping at the first one as serde would.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use http::header::HeaderName;
use http::Method;
use serde_json::{Map, Value};

use crate::error::{ConfigIssue, Error, Result};

const MAX_WEIGHT: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct Config {
    pub admin: Option<AdminConfig>,
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterConfig>,
    /// How long a listener removed by an update may keep serving its
    /// in-flight connections.
    pub drain_timeout: Duration,
    /// The document as given, for `/config` (redacted there).
    pub document: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub address: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub kind: ListenerKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ListenerKind {
    Http { routes: Vec<RouteConfig> },
    Tcp { cluster: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: Option<String>,
    pub matcher: MatchConfig,
    pub backends: Vec<BackendConfig>,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MatchConfig {
    /// Lower-cased; `*.example.com` matches any subdomain.
    pub host: Option<String>,
    pub path: PathMatch,
    pub method: Option<Method>,
    pub headers: Vec<(HeaderName, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PathMatch {
    #[default]
    Any,
    Exact(String),
    /// Segment-aware, as in the Gateway API: `/api` matches `/api` and
    /// `/api/x` but not `/apix`.
    Prefix(String),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub cluster: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub name: String,
    pub lb: LbPolicy,
    /// ring_hash only: the request header hashed; the client address when absent.
    pub hash_header: Option<HeaderName>,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub endpoints: Vec<EndpointConfig>,
    pub outlier: OutlierConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// `host:port`; an IP literal or a name resolved at connect time.
    pub address: String,
    pub weight: u32,
}

/// Passive health: an endpoint that fails to connect this many times in a row
/// is skipped for `ejection`, unless it is the last one available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub ejection: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            ejection: Duration::from_secs(10),
        }
    }
}

// === impl Config ===

impl Config {
    /// Parses YAML or JSON text (JSON is a subset of YAML) and validates it.
    pub fn parse(text: &str) -> Result<Config> {
        let value: Value = serde_yaml::from_str(text).map_err(|e| {
            Error::Config(vec![ConfigIssue {
                path: String::new(),
                message: format!("not a YAML/JSON document: {e}"),
            }])
        })?;
        Config::from_value(value)
    }

    pub fn from_value(document: Value) -> Result<Config> {
        let mut cx = Decoder::default();
        let config = cx.config(&document);
        match config {
            Some(mut c) if cx.issues.is_empty() => {
                c.document = document;
                Ok(c)
            }
            _ => Err(Error::Config(cx.issues)),
        }
    }

    /// The document with every secret-looking value replaced.
    pub fn redacted(&self) -> Value {
        redact(&self.document)
    }
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

// === impl Decoder ===

/// Walks the document, collecting every issue rather than failing fast.
#[derive(Default)]
struct Decoder {
    issues: Vec<ConfigIssue>,
}

/// An object being decoded, with its location in the document.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl<'a> Fields<'a> {
    fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }
}

impl Decoder {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }

    fn object<'a>(&mut self, v: &'a Value, path: &str, allowed: &[&str]) -> Option<Fields<'a>> {
        let Value::Object(map) = v else {
            self.err(path, format!("expected a mapping, got {}", type_name(v)));
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                self.err(
                    join(path, key),
                    format!("unknown field (expected one of: {})", allowed.join(", ")),
                );
            }
        }
        Some(Fields {
            map,
            path: path.to_string(),
        })
    }

    fn string(&mut self, f: &Fields<'_>, key: &str, required: bool) -> Option<String> {
        match f.get(key) {
            None => {
                if required {
                    self.err(f.at(key), "required");
                }
                None
            }
            Some(Value::String(s)) if s.is_empty() => {
                self.err(f.at(key), "must not be empty");
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.err(
                    f.at(key),
                    format!("expected a string, got {}", type_name(other)),
                );
                None
            }
        }
    }

    fn uint(&mut self, f: &Fields<'_>, key: &str, min: u64, max: u64) -> Option<u64> {
        let v = f.get(key)?;
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.err(f.at(key), format!("{n} is out of range {min}..={max}"));
                None
            }
            None => {
                self.err(
                    f.at(key),
                    format!("expected a whole number, got {}", type_name(v)),
                );
                None
            }
        }
    }

    fn millis(&mut self, f: &Fields<'_>, key: &str, default: u64) -> Duration {
        Duration::from_millis(self.uint(f, key, 1, 86_400_000).unwrap_or(default))
    }

    fn list<'a>(&mut self, f: &Fields<'a>, key: &str, required: bool) -> Vec<(String, &'a Value)> {
        match f.get(key) {
            None => {
                if required {
                    self.err(f.at(key), "required");
                }
                Vec::new()
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{}[{i}]", f.at(key)), v))
                .collect(),
            Some(other) => {
                self.err(
                    f.at(key),
                    format!("expected a list, got {}", type_name(other)),
                );
                Vec::new()
            }
        }
    }

    fn socket_addr(&mut self, f: &Fields<'_>, key: &str) -> Option<SocketAddr> {
        let s = self.string(f, key, true)?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(f.at(key), format!("'{s}' is not an IP:port address"));
                None
            }
        }
    }

    fn name(&mut self, f: &Fields<'_>, seen: &mut HashSet<String>, what: &str) -> Option<String> {
        let name = self.string(f, "name", true)?;
        let valid = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
        if !valid {
            self.err(
                f.at("name"),
                format!("'{name}' may only hold letters, digits and - _ . : /"),
            );
        }
        if !seen.insert(name.clone()) {
            self.err(f.at("name"), format!("duplicate {what} name '{name}'"));
        }
        Some(name)
    }

    fn config(&mut self, doc: &Value) -> Option<Config> {
        let top = self.object(
            doc,
            "",
            &["admin", "listeners", "clusters", "drain_timeout_ms"],
        )?;

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

        Some(Config {
            admin,
            listeners,
            clusters,
            drain_timeout,
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

    fn listener(
        &mut self,
        v: &Value,
        path: &str,
        seen: &mut HashSet<String>,
        clusters: &HashSet<String>,
    ) -> Option<ListenerConfig> {
        let f = self.object(
            v,
            path,
            &["name", "address", "protocol", "routes", "cluster"],
        )?;
        let name = self.name(&f, seen, "listener");
        let address = self.socket_addr(&f, "address");
        let protocol = self
            .string(&f, "protocol", false)
            .unwrap_or_else(|| "http".into());
        let kind = match protocol.as_str() {
            "http" => {
                if f.get("cluster").is_some() {
                    self.err(
                        f.at("cluster"),
                        "only tcp listeners take a cluster; http ones take routes",
                    );
                }
                let routes = self
                    .list(&f, "routes", true)
                    .into_iter()
                    .filter_map(|(p, v)| self.route(v, &p, clusters))
                    .collect();
                Some(ListenerKind::Http { routes })
            }
            "tcp" => {
                if f.get("routes").is_some() {
                    self.err(f.at("routes"), "tcp listeners take a cluster, not routes");
                }
                let cluster = self.string(&f, "cluster", true);
                if let Some(c) = &cluster {
                    if !clusters.contains(c) {
                        self.err(f.at("cluster"), format!("unknown cluster '{c}'"));
                    }
                }
                cluster.map(|cluster| ListenerKind::Tcp { cluster })
            }
            other => {
                self.err(
                    f.at("protocol"),
                    format!("'{other}' is not one of: http, tcp"),
                );
                None
            }
        };
        Some(ListenerConfig {
            name: name?,
            address: address?,
            kind: kind?,
        })
    }

    fn route(&mut self, v: &Value, path: &str, clusters: &HashSet<String>) -> Option<RouteConfig> {
        let f = self.object(v, path, &["name", "match", "backends", "timeout_ms"])?;
        let name = self.string(&f, "name", false);
        let matcher = match f.get("match") {
            Some(m) => self.matcher(m, &f.at("match")),
            None => Some(MatchConfig::default()),
        };
        let backends: Vec<BackendConfig> = self
            .list(&f, "backends", true)
            .into_iter()
            .filter_map(|(p, v)| self.backend(v, &p, clusters))
            .collect();
        if f.get("backends")
            .is_some_and(|b| b.as_array().is_some_and(|a| a.is_empty()))
        {
            self.err(f.at("backends"), "must name at least one backend");
        }
        let timeout = self
            .uint(&f, "timeout_ms", 1, 86_400_000)
            .map(Duration::from_millis);
        Some(RouteConfig {
            name,
            matcher: matcher?,
            backends,
            timeout,
        })
    }

    fn matcher(&mut self, v: &Value, path: &str) -> Option<MatchConfig> {
        let f = self.object(
            v,
            path,
            &[
                "host",
                "path",
                "path_prefix",
                "path_regex",
                "method",
                "headers",
            ],
        )?;
        let mut m = MatchConfig {
            host: self
                .string(&f, "host", false)
                .map(|h| h.to_ascii_lowercase()),
            ..MatchConfig::default()
        };
        let kinds: Vec<&str> = ["path", "path_prefix", "path_regex"]
            .into_iter()
            .filter(|k| f.get(k).is_some())
            .collect();
        if kinds.len() > 1 {
            self.err(
                path,
                format!(
                    "give at most one of path, path_prefix, path_regex (got {})",
                    kinds.join(", ")
                ),
            );
        }
        // Check every path form given, even when more than one was (an error already).
        let exact = self.string(&f, "path", false);
        let prefix = self.string(&f, "path_prefix", false);
        let regex = self.string(&f, "path_regex", false);
        for (key, p) in [("path", &exact), ("path_prefix", &prefix)] {
            if let Some(p) = p {
                if !p.starts_with('/') {
                    self.err(f.at(key), format!("'{p}' must start with '/'"));
                }
            }
        }
        if let Some(Err(e)) = regex.as_deref().map(regex::Regex::new) {
            self.err(f.at("path_regex"), format!("invalid regex: {e}"));
        }
        m.path = match (exact, prefix, regex) {
            (Some(p), _, _) => PathMatch::Exact(p),
            (_, Some(p), _) => PathMatch::Prefix(p),
            (_, _, Some(r)) => PathMatch::Regex(r),
            _ => PathMatch::Any,
        };
        if let Some(method) = self.string(&f, "method", false) {
            match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
                Ok(me) => m.method = Some(me),
                Err(_) => self.err(f.at("method"), format!("'{method}' is not an HTTP method")),
            }
        }
        if let Some(h) = f.get("headers") {
            let hpath = f.at("headers");
            let Value::Object(map) = h else {
                self.err(hpath, format!("expected a mapping, got {}", type_name(h)));
                return Some(m);
            };
            for (name, value) in map {
                let at = join(&hpath, name);
                let Ok(hn) = HeaderName::from_bytes(name.as_bytes()) else {
                    self.err(at, "not a valid header name");
                    continue;
                };
                match value {
                    Value::String(s) => m.headers.push((hn, s.clone())),
                    other => self.err(at, format!("expected a string, got {}", type_name(other))),
                }
            }
        }
        Some(m)
    }

    fn backend(
        &mut self,
        v: &Value,
        path: &str,
        clusters: &HashSet<String>,
    ) -> Option<BackendConfig> {
        let f = self.object(v, path, &["cluster", "weight"])?;
        let cluster = self.string(&f, "cluster", true)?;
        if !clusters.contains(&cluster) {
            self.err(f.at("cluster"), format!("unknown cluster '{cluster}'"));
        }
        let weight = self.uint(&f, "weight", 0, MAX_WEIGHT).unwrap_or(1) as u32;
        Some(BackendConfig { cluster, weight })
    }

    fn cluster(
        &mut self,
        v: &Value,
        path: &str,
        seen: &mut HashSet<String>,
    ) -> Option<ClusterConfig> {
        let f = self.object(
            v,
            path,
            &[
                "name",
                "lb",
                "hash_header",
                "protocol",
                "connect_timeout_ms",
                "endpoints",
                "outlier_detection",
            ],
        )?;
        let name = self.name(&f, seen, "cluster");
        let lb = match self.string(&f, "lb", false).as_deref() {
            None | Some("round_robin") => LbPolicy::RoundRobin,
            Some("least_request") => LbPolicy::LeastRequest,
            Some("random") => LbPolicy::Random,
            Some("ring_hash") => LbPolicy::RingHash,
            Some(other) => {
                self.err(
                    f.at("lb"),
                    format!(
                        "'{other}' is not one of: round_robin, least_request, random, ring_hash"
                    ),
                );
                LbPolicy::RoundRobin
            }
        };
        let hash_header = self.string(&f, "hash_header", false).and_then(|h| {
            if lb != LbPolicy::RingHash {
                self.err(f.at("hash_header"), "only used with lb: ring_hash");
            }
            HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| {
                    self.err(
                        f.at("hash_header"),
                        format!("'{h}' is not a valid header name"),
                    )
                })
                .ok()
        });
        let protocol = match self.string(&f, "protocol", false).as_deref() {
            None | Some("http1") => UpstreamProtocol::Http1,
            Some("http2") => UpstreamProtocol::Http2,
            Some(other) => {
                self.err(
                    f.at("protocol"),
                    format!("'{other}' is not one of: http1, http2"),
                );
                UpstreamProtocol::Http1
            }
        };
        let connect_timeout = self.millis(&f, "connect_timeout_ms", 1_000);
        let mut seen_eps = HashSet::new();
        let endpoints = self
            .list(&f, "endpoints", true)
            .into_iter()
            .filter_map(|(p, v)| {
                let ep = self.endpoint(v, &p)?;
                if !seen_eps.insert(ep.address.clone()) {
                    self.err(
                        join(&p, "address"),
                        format!("duplicate endpoint '{}'", ep.address),
                    );
                }
                Some(ep)
            })
            .collect();
        let outlier = match f.get("outlier_detection") {
            None => OutlierConfig::default(),
            Some(o) => {
                let path = f.at("outlier_detection");
                let of = self.object(o, &path, &["consecutive_failures", "ejection_ms"])?;
                let d = OutlierConfig::default();
                OutlierConfig {
                    consecutive_failures: self
                        .uint(&of, "consecutive_failures", 0, 1_000)
                        .map_or(d.consecutive_failures, |n| n as u32),
                    ejection: self.millis(&of, "ejection_ms", d.ejection.as_millis() as u64),
                }
            }
        };
        Some(ClusterConfig {
            name: name?,
            lb,
            hash_header,
            protocol,
            connect_timeout,
            endpoints,
            outlier,
        })
    }

    fn endpoint(&mut self, v: &Value, path: &str) -> Option<EndpointConfig> {
        let f = self.object(v, path, &["address", "weight"])?;
        let address = self.string(&f, "address", true)?;
        let port_ok = address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !port_ok {
            self.err(
                f.at("address"),
                format!("'{address}' is not a host:port address"),
            );
        }
        let weight = self.uint(&f, "weight", 1, MAX_WEIGHT).unwrap_or(1) as u32;
        Some(EndpointConfig { address, weight })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Ok(_) => vec![],
            Err(Error::Config(issues)) => issues.iter().map(|i| i.to_string()).collect(),
            Err(e) => panic!("unexpected {e}"),
        }
    }

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
    fn rejects_bad_matches() {
        let got = issues(
            "listeners:\n - name: a\n   address: 127.0.0.1:1\n   routes:\n    - match: {path: x, path_regex: '(', method: 'G E T', headers: {'bad name': v}}\n      backends: []\n",
        );
        assert!(
            got.iter()
                .any(|i| i.starts_with("listeners[0].routes[0].match: give at most one")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|i| i.starts_with("listeners[0].routes[0].match.path: 'x' must start")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|i| i.starts_with("listeners[0].routes[0].match.path_regex: invalid regex")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|i| i.starts_with("listeners[0].routes[0].match.method")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|i| i.starts_with("listeners[0].routes[0].match.headers.bad name")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|i| i.starts_with("listeners[0].routes[0].backends: must name")),
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
