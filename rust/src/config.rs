//! The data-plane config: typed model plus a decoder that validates a YAML or
//! JSON document and reports *every* problem with its field path, instead of
//! stopping at the first one as serde would.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::Method;
use serde_json::{Map, Value};

use crate::error::{ConfigIssue, Error, Result};
use crate::policy::authz::Authorization;
use crate::tls::config::{ClusterTls, ListenerTls};
use crate::tls::Identity;

const MAX_WEIGHT: u64 = 10_000;

/// Headers the proxy owns on every hop (framing, hop-by-hop, the authority):
/// header modifiers may not touch them.
const PROXY_OWNED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
    "te",
    "upgrade",
];

const REDIRECT_STATUSES: &[u16] = &[301, 302, 303, 307, 308];

/// Which message a header modifier edits; only the wording of errors differs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Message {
    Request,
    Response,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub admin: Option<AdminConfig>,
    /// This proxy's mesh identity (SVID and roots), loaded and checked.
    pub identity: Option<std::sync::Arc<Identity>>,
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
    pub tls: Option<ListenerTls>,
    pub authorization: Option<Authorization>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ListenerKind {
    Http {
        routes: Vec<RouteConfig>,
    },
    /// `cluster: NAME` is read as one backend of weight 1.
    Tcp {
        backends: Vec<BackendConfig>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: Option<String>,
    pub matcher: MatchConfig,
    /// Empty exactly when `redirect` is set.
    pub backends: Vec<BackendConfig>,
    pub timeout: Option<Duration>,
    /// Applied to the request sent upstream (no effect on a redirect route).
    pub request_headers: HeaderModifier,
    /// Applied to upstream responses and to this route's redirects (not to
    /// the proxy's error replies).
    pub response_headers: HeaderModifier,
    pub rewrite: Option<RewriteConfig>,
    /// The route answers by itself; nothing is forwarded.
    pub redirect: Option<RedirectConfig>,
}

/// Header edits, applied in the order remove, set, add.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderModifier {
    /// Replaces every value of the header.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Appends a value, keeping those already there.
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// A new path for the request, either whole or in place of the prefix the
/// route's `match.path_prefix` matched. The query string is always kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathModifier {
    Full(String),
    /// Needs a `match.path_prefix`; segment-aware like Gateway API's
    /// ReplacePrefixMatch.
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteConfig {
    /// Sent upstream as `Host` (HTTP/1.1) or `:authority` (HTTP/2).
    pub host: Option<HeaderValue>,
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectConfig {
    /// `http` or `https`; the request's scheme when absent.
    pub scheme: Option<String>,
    /// A host name without port; the request's host when absent.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathModifier>,
    pub status: http::StatusCode,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MatchConfig {
    /// Lower-cased; `*.example.com` matches any subdomain.
    pub host: Option<String>,
    pub path: PathMatch,
    pub method: Option<Method>,
    pub headers: Vec<(HeaderName, String)>,
    /// Query parameters that must be present with exactly this value (after
    /// percent-decoding); a repeated parameter matches if any of its values does.
    pub query: Vec<(String, String)>,
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
    /// Mesh mTLS to the endpoints, which must present one of these identities.
    pub tls: Option<ClusterTls>,
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
pub(crate) struct Decoder {
    pub(crate) issues: Vec<ConfigIssue>,
    /// The document has no `identity`: mesh TLS anywhere is an error.
    no_identity: bool,
}

/// An object being decoded, with its location in the document.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

pub(crate) fn join(path: &str, key: &str) -> String {
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
    pub(crate) fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }
}

impl Decoder {
    pub(crate) fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn object<'a>(
        &mut self,
        v: &'a Value,
        path: &str,
        allowed: &[&str],
    ) -> Option<Fields<'a>> {
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

    pub(crate) fn string(&mut self, f: &Fields<'_>, key: &str, required: bool) -> Option<String> {
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

    pub(crate) fn list<'a>(
        &mut self,
        f: &Fields<'a>,
        key: &str,
        required: bool,
    ) -> Vec<(String, &'a Value)> {
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
            &[
                "admin",
                "identity",
                "listeners",
                "clusters",
                "drain_timeout_ms",
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

        Some(Config {
            admin,
            identity,
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
            &[
                "name",
                "address",
                "protocol",
                "routes",
                "cluster",
                "backends",
                "tls",
                "authorization",
            ],
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
                if f.get("backends").is_some() {
                    self.err(
                        f.at("backends"),
                        "only tcp listeners take backends; http ones take them per route",
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
                    self.err(
                        f.at("routes"),
                        "tcp listeners take a cluster or backends, not routes",
                    );
                }
                // Both forms are checked even when both are given (an error already).
                let single = self.string(&f, "cluster", false).map(|c| {
                    if !clusters.contains(&c) {
                        self.err(f.at("cluster"), format!("unknown cluster '{c}'"));
                    }
                    vec![BackendConfig {
                        cluster: c,
                        weight: 1,
                    }]
                });
                let weighted = f
                    .get("backends")
                    .map(|_| self.backends(&f, false, clusters));
                match (single, weighted) {
                    (Some(backends), None) | (None, Some(backends)) => {
                        Some(ListenerKind::Tcp { backends })
                    }
                    (Some(_), Some(_)) => {
                        self.err(path, "give either cluster or backends, not both");
                        None
                    }
                    (None, None) => {
                        if f.get("cluster").is_none() {
                            self.err(f.at("cluster"), "required (or give backends)");
                        }
                        None
                    }
                }
            }
            other => {
                self.err(
                    f.at("protocol"),
                    format!("'{other}' is not one of: http, tcp"),
                );
                None
            }
        };
        let tls = f
            .get("tls")
            .and_then(|t| self.listener_tls(t, &f.at("tls")));
        if tls.as_ref().is_some_and(ListenerTls::is_mesh) {
            self.need_identity(&f.at("tls"));
        }
        let authorization = f
            .get("authorization")
            .and_then(|a| self.authorization(a, &f.at("authorization")));
        Some(ListenerConfig {
            name: name?,
            address: address?,
            kind: kind?,
            tls,
            authorization,
        })
    }

    fn route(&mut self, v: &Value, path: &str, clusters: &HashSet<String>) -> Option<RouteConfig> {
        let f = self.object(
            v,
            path,
            &[
                "name",
                "match",
                "backends",
                "timeout_ms",
                "request_headers",
                "response_headers",
                "rewrite",
                "redirect",
            ],
        )?;
        let name = self.string(&f, "name", false);
        let matcher = match f.get("match") {
            Some(m) => self.matcher(m, &f.at("match")),
            None => Some(MatchConfig::default()),
        };
        // Read from the document, so that a broken match adds no second error here.
        let has_prefix = f
            .get("match")
            .and_then(|m| m.get("path_prefix"))
            .is_some_and(|p| !p.is_null());
        let redirect = f
            .get("redirect")
            .and_then(|r| self.redirect(r, &f.at("redirect"), has_prefix));
        let backends = if f.get("redirect").is_some() {
            // These contradict a redirect. request_headers is let through with no
            // effect: the Gateway API allows a RequestHeaderModifier beside a redirect.
            for key in ["backends", "timeout_ms", "rewrite"] {
                if f.get(key).is_some() {
                    self.err(
                        f.at(key),
                        "not allowed with redirect: the route answers by itself and forwards nothing",
                    );
                }
            }
            Vec::new()
        } else {
            self.backends(&f, true, clusters)
        };
        let timeout = self
            .uint(&f, "timeout_ms", 1, 86_400_000)
            .map(Duration::from_millis);
        let request_headers = f
            .get("request_headers")
            .and_then(|h| self.header_modifier(h, &f.at("request_headers"), Message::Request))
            .unwrap_or_default();
        let response_headers = f
            .get("response_headers")
            .and_then(|h| self.header_modifier(h, &f.at("response_headers"), Message::Response))
            .unwrap_or_default();
        let rewrite = f
            .get("rewrite")
            .and_then(|r| self.rewrite(r, &f.at("rewrite"), has_prefix));
        Some(RouteConfig {
            name,
            matcher: matcher?,
            backends,
            timeout,
            request_headers,
            response_headers,
            rewrite,
            redirect,
        })
    }

    /// `backends: [{cluster, weight}]`, for routes and tcp listeners.
    fn backends(
        &mut self,
        f: &Fields<'_>,
        required: bool,
        clusters: &HashSet<String>,
    ) -> Vec<BackendConfig> {
        let backends = self
            .list(f, "backends", required)
            .into_iter()
            .filter_map(|(p, v)| self.backend(v, &p, clusters))
            .collect();
        if f.get("backends")
            .is_some_and(|b| b.as_array().is_some_and(|a| a.is_empty()))
        {
            self.err(f.at("backends"), "must name at least one backend");
        }
        backends
    }

    /// A mapping of strings, as `(path, key, value)`; other values are reported.
    fn string_map(&mut self, f: &Fields<'_>, key: &str) -> Vec<(String, String, String)> {
        let Some(v) = f.get(key) else {
            return Vec::new();
        };
        let path = f.at(key);
        let Value::Object(map) = v else {
            self.err(path, format!("expected a mapping, got {}", type_name(v)));
            return Vec::new();
        };
        let mut out = Vec::with_capacity(map.len());
        for (k, value) in map {
            let at = join(&path, k);
            match value {
                Value::String(s) => out.push((at, k.clone(), s.clone())),
                other => self.err(at, format!("expected a string, got {}", type_name(other))),
            }
        }
        out
    }

    fn header_modifier(&mut self, v: &Value, path: &str, msg: Message) -> Option<HeaderModifier> {
        let f = self.object(v, path, &["set", "add", "remove"])?;
        let mut m = HeaderModifier::default();
        for key in ["set", "add"] {
            let mut seen = HashSet::new();
            for (at, name, value) in self.string_map(&f, key) {
                let Some(name) = self.modifiable_header(&at, &name, msg) else {
                    continue;
                };
                if !seen.insert(name.clone()) {
                    self.err(at, format!("duplicate header '{name}'"));
                    continue;
                }
                let Ok(value) = HeaderValue::from_str(&value) else {
                    self.err(at, format!("'{value}' is not a valid header value"));
                    continue;
                };
                match key {
                    "set" => m.set.push((name, value)),
                    _ => m.add.push((name, value)),
                }
            }
        }
        for (at, item) in self.list(&f, "remove", false) {
            let Value::String(name) = item else {
                self.err(at, format!("expected a string, got {}", type_name(item)));
                continue;
            };
            if let Some(name) = self.modifiable_header(&at, name, msg) {
                if m.remove.contains(&name) {
                    self.err(at, format!("duplicate header '{name}'"));
                } else {
                    m.remove.push(name);
                }
            }
        }
        Some(m)
    }

    fn modifiable_header(&mut self, at: &str, name: &str, msg: Message) -> Option<HeaderName> {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            self.err(at, format!("'{name}' is not a valid header name"));
            return None;
        };
        if PROXY_OWNED_HEADERS.contains(&name.as_str()) {
            let message = if name == http::header::HOST && msg == Message::Request {
                "'host' cannot be changed here; use rewrite.host".to_string()
            } else {
                format!("'{name}' is managed by the proxy and cannot be changed")
            };
            self.err(at, message);
            return None;
        }
        Some(name)
    }

    /// A path to send or redirect to: absolute, no query, no fragment.
    fn url_path(&mut self, f: &Fields<'_>, key: &str) -> Option<String> {
        let p = self.string(f, key, false)?;
        if !p.starts_with('/') {
            self.err(f.at(key), format!("'{p}' must start with '/'"));
            return None;
        }
        if p.contains(['?', '#']) || PathAndQuery::try_from(p.as_str()).is_err() {
            self.err(
                f.at(key),
                format!("'{p}' is not a URL path (no query, no fragment, no spaces)"),
            );
            return None;
        }
        Some(p)
    }

    /// `path` or `path_prefix`, as in rewrite and redirect.
    fn path_modifier(&mut self, f: &Fields<'_>, has_prefix: bool) -> Option<PathModifier> {
        if f.get("path").is_some() && f.get("path_prefix").is_some() {
            self.err(&f.path, "give at most one of path, path_prefix");
        }
        let full = self.url_path(f, "path");
        let prefix = self.url_path(f, "path_prefix");
        if f.get("path_prefix").is_some() && !has_prefix {
            self.err(
                f.at("path_prefix"),
                "replaces what match.path_prefix matched, and this route has no match.path_prefix",
            );
        }
        full.map(PathModifier::Full)
            .or(prefix.map(PathModifier::Prefix))
    }

    /// A host name, with a port only when `with_port`.
    fn host(&mut self, f: &Fields<'_>, key: &str, with_port: bool) -> Option<String> {
        let h = self.string(f, key, false)?;
        let valid = !h.contains('@')
            && h.parse::<Authority>()
                .is_ok_and(|a| !a.host().is_empty() && (with_port || a.port().is_none()));
        if !valid {
            let what = if with_port {
                "a host or host:port"
            } else {
                "a host name (a port goes in port)"
            };
            self.err(f.at(key), format!("'{h}' is not {what}"));
            return None;
        }
        Some(h)
    }

    fn rewrite(&mut self, v: &Value, path: &str, has_prefix: bool) -> Option<RewriteConfig> {
        let f = self.object(v, path, &["host", "path", "path_prefix"])?;
        if ["host", "path", "path_prefix"]
            .iter()
            .all(|k| f.get(k).is_none())
        {
            self.err(path, "give at least one of host, path, path_prefix");
            return None;
        }
        let host = self.host(&f, "host", true).and_then(|h| {
            HeaderValue::from_str(&h)
                .map_err(|_| self.err(f.at("host"), format!("'{h}' is not a valid header value")))
                .ok()
        });
        let path = self.path_modifier(&f, has_prefix);
        Some(RewriteConfig { host, path })
    }

    fn redirect(&mut self, v: &Value, path: &str, has_prefix: bool) -> Option<RedirectConfig> {
        let f = self.object(
            v,
            path,
            &["scheme", "host", "port", "path", "path_prefix", "status"],
        )?;
        if ["scheme", "host", "port", "path", "path_prefix"]
            .iter()
            .all(|k| f.get(k).is_none())
        {
            // Only a status would send the client back to the same URL, forever.
            self.err(
                path,
                "give at least one of scheme, host, port, path, path_prefix",
            );
        }
        let scheme = match self.string(&f, "scheme", false) {
            Some(s) if s == "http" || s == "https" => Some(s),
            Some(other) => {
                self.err(
                    f.at("scheme"),
                    format!("'{other}' is not one of: http, https"),
                );
                None
            }
            None => None,
        };
        let host = self.host(&f, "host", false);
        let port = self.uint(&f, "port", 1, 65_535).map(|p| p as u16);
        let path_modifier = self.path_modifier(&f, has_prefix);
        let status = match self.uint(&f, "status", 0, u64::MAX) {
            None => http::StatusCode::FOUND,
            Some(n) => match REDIRECT_STATUSES.iter().find(|&&s| u64::from(s) == n) {
                Some(&s) => http::StatusCode::from_u16(s).unwrap_or(http::StatusCode::FOUND),
                None => {
                    self.err(
                        f.at("status"),
                        format!("{n} is not one of: 301, 302, 303, 307, 308"),
                    );
                    http::StatusCode::FOUND
                }
            },
        };
        Some(RedirectConfig {
            scheme,
            host,
            port,
            path: path_modifier,
            status,
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
                "query",
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
        for (at, name, value) in self.string_map(&f, "headers") {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(hn) => m.headers.push((hn, value)),
                Err(_) => self.err(at, "not a valid header name"),
            }
        }
        for (at, name, value) in self.string_map(&f, "query") {
            if name.is_empty() {
                self.err(at, "a query parameter name must not be empty");
            } else {
                m.query.push((name, value));
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
                "tls",
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
        let tls = f.get("tls").and_then(|t| {
            self.need_identity(&f.at("tls"));
            self.cluster_tls(t, &f.at("tls"))
        });
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
            tls,
        })
    }

    fn need_identity(&mut self, path: &str) {
        if self.no_identity {
            self.err(
                path,
                "mesh mTLS needs the proxy's identity (the top-level identity section)",
            );
        }
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

    /// Issues of a config whose only listener has the given routes (YAML flow
    /// mappings, one per line); clusters `a` and `b` exist.
    fn route_issues(routes: &[&str]) -> Vec<String> {
        let routes: String = routes.iter().map(|r| format!("    - {r}\n")).collect();
        issues(&format!(
            "listeners:\n - name: web\n   address: 127.0.0.1:1\n   routes:\n{routes}clusters:\n - {{name: a, endpoints: []}}\n - {{name: b, endpoints: []}}\n"
        ))
    }

    fn has(got: &[String], want: &str) -> bool {
        got.iter().any(|i| i.starts_with(want))
    }

    #[test]
    fn accepts_every_route_filter() {
        let c = Config::parse(
            r#"
listeners:
  - name: web
    address: 127.0.0.1:8080
    routes:
      - match: {path_prefix: /api, query: {v: "2", debug: ""}}
        backends: [{cluster: a}]
        request_headers: {set: {X-Env: prod}, add: {x-tag: one}, remove: [x-debug]}
        response_headers: {set: {cache-control: no-store}, remove: [server]}
        rewrite: {host: internal.svc:8080, path_prefix: /v2}
      - match: {path: /old}
        rewrite: {path: /new}
        backends: [{cluster: a}]
      - match: {path_prefix: /http}
        redirect: {scheme: https, host: example.com, port: 8443, path_prefix: /, status: 301}
        response_headers: {add: {x-moved: "yes"}}
      - match: {path: /elsewhere}
        redirect: {path: /here}
  - name: db
    address: 127.0.0.1:5433
    protocol: tcp
    backends: [{cluster: a, weight: 3}, {cluster: b, weight: 1}]
  - name: db1
    address: 127.0.0.1:5434
    protocol: tcp
    cluster: b
clusters:
  - {name: a, endpoints: []}
  - {name: b, endpoints: []}
"#,
        )
        .expect("valid");
        let ListenerKind::Http { routes } = &c.listeners[0].kind else {
            panic!()
        };
        let r = &routes[0];
        assert_eq!(
            r.matcher.query,
            [("debug".into(), "".into()), ("v".into(), "2".into())]
        );
        assert_eq!(
            r.request_headers.set[0].0.as_str(),
            "x-env",
            "names lower-cased"
        );
        assert_eq!(r.request_headers.set[0].1, "prod");
        assert_eq!(r.request_headers.add[0].0.as_str(), "x-tag");
        assert_eq!(r.request_headers.remove[0].as_str(), "x-debug");
        assert_eq!(r.response_headers.remove[0].as_str(), "server");
        let rw = r.rewrite.as_ref().unwrap();
        assert_eq!(rw.host.as_ref().unwrap(), "internal.svc:8080");
        assert_eq!(rw.path, Some(PathModifier::Prefix("/v2".into())));
        assert_eq!(
            routes[1].rewrite.as_ref().unwrap().path,
            Some(PathModifier::Full("/new".into()))
        );
        let rd = routes[2].redirect.as_ref().unwrap();
        assert_eq!(rd.scheme.as_deref(), Some("https"));
        assert_eq!(rd.host.as_deref(), Some("example.com"));
        assert_eq!(rd.port, Some(8443));
        assert_eq!(rd.path, Some(PathModifier::Prefix("/".into())));
        assert_eq!(rd.status, http::StatusCode::MOVED_PERMANENTLY);
        assert!(routes[2].backends.is_empty());
        assert_eq!(
            routes[3].redirect.as_ref().unwrap().status,
            http::StatusCode::FOUND,
            "302 by default"
        );
        let ListenerKind::Tcp { backends } = &c.listeners[1].kind else {
            panic!()
        };
        assert_eq!(
            backends,
            &[
                BackendConfig {
                    cluster: "a".into(),
                    weight: 3
                },
                BackendConfig {
                    cluster: "b".into(),
                    weight: 1
                }
            ]
        );
        let ListenerKind::Tcp { backends } = &c.listeners[2].kind else {
            panic!()
        };
        assert_eq!(
            backends,
            &[BackendConfig {
                cluster: "b".into(),
                weight: 1
            }]
        );
    }

    #[test]
    fn rejects_bad_query_matches() {
        let got = route_issues(&[
            "{match: {query: {page: 2, ok: '1', '': x}}, backends: [{cluster: a}]}",
            "{match: {query: [v]}, backends: [{cluster: a}]}",
        ]);
        assert!(
            got.contains(
                &"listeners[0].routes[0].match.query.page: expected a string, got a number"
                    .to_string()
            ),
            "{got:?}"
        );
        assert!(
            has(
                &got,
                "listeners[0].routes[0].match.query.: a query parameter name must not be empty"
            ),
            "{got:?}"
        );
        assert!(
            got.contains(
                &"listeners[0].routes[1].match.query: expected a mapping, got a list".to_string()
            ),
            "{got:?}"
        );
        assert_eq!(got.len(), 3, "{got:?}");
    }

    #[test]
    fn rejects_bad_header_modifiers() {
        let got = route_issues(&[
            "{backends: [{cluster: a}], request_headers: {set: {'bad name': v, host: h, x-a: \"line\\nbreak\", X-Dup: 1, x-dup: '2'}, add: {connection: close}, remove: [te, 3], colour: red}}",
            "{backends: [{cluster: a}], response_headers: {set: {content-length: '1', x-ok: fine}, add: {transfer-encoding: chunked}, remove: [x-gone, X-Gone, ':status']}}",
        ]);
        let r0 = "listeners[0].routes[0].request_headers";
        let r1 = "listeners[0].routes[1].response_headers";
        for want in [
            format!("{r0}.set.bad name: 'bad name' is not a valid header name"),
            format!("{r0}.set.host: 'host' cannot be changed here; use rewrite.host"),
            format!("{r0}.set.x-a: 'line\nbreak' is not a valid header value"),
            format!("{r0}.set.X-Dup: expected a string, got a number"),
            format!("{r0}.add.connection: 'connection' is managed by the proxy"),
            format!("{r0}.remove[0]: 'te' is managed by the proxy"),
            format!("{r0}.remove[1]: expected a string, got a number"),
            format!("{r0}.colour: unknown field"),
            format!("{r1}.set.content-length: 'content-length' is managed by the proxy"),
            format!("{r1}.add.transfer-encoding: 'transfer-encoding' is managed by the proxy"),
            format!("{r1}.remove[1]: duplicate header 'x-gone'"),
            format!("{r1}.remove[2]: ':status' is not a valid header name"),
        ] {
            assert!(has(&got, &want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 12, "{got:?}");
        let dup = route_issues(&[
            "{backends: [{cluster: a}], request_headers: {set: {X-Dup: '1', x-dup: '2'}}}",
        ]);
        assert_eq!(
            dup,
            ["listeners[0].routes[0].request_headers.set.x-dup: duplicate header 'x-dup'"]
        );
    }

    #[test]
    fn rejects_bad_rewrites() {
        let got = route_issues(&[
            "{match: {path_prefix: /api}, backends: [{cluster: a}], rewrite: {path: /a, path_prefix: /b}}",
            "{match: {path: /x}, backends: [{cluster: a}], rewrite: {path_prefix: /b}}",
            "{backends: [{cluster: a}], rewrite: {host: 'user@h', path: 'rel'}}",
            "{backends: [{cluster: a}], rewrite: {host: 'h:1', path: '/a?b'}}",
            "{backends: [{cluster: a}], rewrite: {}}",
        ]);
        for want in [
            "listeners[0].routes[0].rewrite: give at most one of path, path_prefix",
            "listeners[0].routes[1].rewrite.path_prefix: replaces what match.path_prefix matched, and this route has no match.path_prefix",
            "listeners[0].routes[2].rewrite.host: 'user@h' is not a host or host:port",
            "listeners[0].routes[2].rewrite.path: 'rel' must start with '/'",
            "listeners[0].routes[3].rewrite.path: '/a?b' is not a URL path",
            "listeners[0].routes[4].rewrite: give at least one of host, path, path_prefix",
        ] {
            assert!(has(&got, want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 6, "{got:?}");
    }

    #[test]
    fn rejects_bad_redirects() {
        let got = route_issues(&[
            "{redirect: {scheme: https}, backends: [{cluster: a}], timeout_ms: 5, request_headers: {set: {x-a: b}}, rewrite: {path: /x}}",
            "{redirect: {scheme: ftp, host: 'h:80', port: 0, status: 304}}",
            "{match: {path: /x}, redirect: {path_prefix: /y}}",
            "{redirect: {status: 301}}",
            "{match: {path_prefix: /}}",
        ]);
        let not_with =
            "not allowed with redirect: the route answers by itself and forwards nothing";
        for want in [
            format!("listeners[0].routes[0].backends: {not_with}"),
            format!("listeners[0].routes[0].timeout_ms: {not_with}"),
            format!("listeners[0].routes[0].rewrite: {not_with}"),
            "listeners[0].routes[1].redirect.scheme: 'ftp' is not one of: http, https".into(),
            "listeners[0].routes[1].redirect.host: 'h:80' is not a host name (a port goes in port)".into(),
            "listeners[0].routes[1].redirect.port: 0 is out of range 1..=65535".into(),
            "listeners[0].routes[1].redirect.status: 304 is not one of: 301, 302, 303, 307, 308".into(),
            "listeners[0].routes[2].redirect.path_prefix: replaces what match.path_prefix matched".into(),
            "listeners[0].routes[3].redirect: give at least one of scheme, host, port, path, path_prefix".into(),
            "listeners[0].routes[4].backends: required".into(),
        ] {
            assert!(has(&got, &want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 10, "{got:?}");
    }

    #[test]
    fn tcp_listeners_take_a_cluster_or_weighted_backends() {
        let listeners = |l: &str| {
            issues(&format!(
                "listeners:\n{l}clusters: [{{name: a, endpoints: []}}, {{name: b, endpoints: []}}]\n"
            ))
        };
        let got = listeners(
            " - {name: both, address: 127.0.0.1:1, protocol: tcp, cluster: a, backends: [{cluster: b}]}\n \
             - {name: none, address: 127.0.0.1:2, protocol: tcp}\n \
             - {name: empty, address: 127.0.0.1:3, protocol: tcp, backends: []}\n \
             - {name: bad, address: 127.0.0.1:4, protocol: tcp, backends: [{cluster: c, weight: 20000}]}\n \
             - {name: web, address: 127.0.0.1:5, routes: [], backends: [{cluster: a}]}\n",
        );
        for want in [
            "listeners[0]: give either cluster or backends, not both",
            "listeners[1].cluster: required (or give backends)",
            "listeners[2].backends: must name at least one backend",
            "listeners[3].backends[0].cluster: unknown cluster 'c'",
            "listeners[3].backends[0].weight: 20000 is out of range",
            "listeners[4].backends: only tcp listeners take backends",
        ] {
            assert!(has(&got, want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 6, "{got:?}");
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
