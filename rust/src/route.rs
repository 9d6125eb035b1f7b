//! Request -> route: first match wins on host, path, method, headers and
//! query parameters; then a weighted choice among the route's backends.

use std::borrow::Cow;
use std::ops::Deref;
use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, Method};
use regex::Regex;

use crate::balance::{Balancer, Loads};
use crate::config::{
    path_regex, FaultConfig, HeaderModifier, LbPolicy, MatchConfig, PathMatch, RedirectConfig,
    RetryPolicy, RewriteConfig, RouteConfig,
};
use crate::policy::ratelimit::RateLimiter;

/// The parts of a request that routing looks at.
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Lower-cased, without port.
    pub host: &'a str,
    pub path: &'a str,
    /// Raw, still percent-encoded.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// A host pattern: exact, or `*.suffix` for any name below the suffix (not
/// the suffix itself). Both sides are lower-cased by their callers.
pub enum HostMatcher {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

// === impl HostMatcher ===

impl HostMatcher {
    pub fn new(pattern: &str) -> Self {
        match pattern.strip_prefix('*') {
            Some(suffix) => HostMatcher::Suffix(suffix.to_string()),
            None => HostMatcher::Exact(pattern.to_string()),
        }
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatcher::Exact(h) => h == host,
            HostMatcher::Suffix(s) => host.ends_with(s.as_str()) && host.len() > s.len(),
        }
    }
}

enum PathMatcher {
    Any,
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

/// The first condition of a match that a request fails; `Header` and
/// `Query` hold the index of the pair in the match, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    Method,
    Host,
    Path,
    Header(usize),
    HeaderRegex(usize),
    Query(usize),
}

pub struct Matcher {
    host: Option<HostMatcher>,
    path: PathMatcher,
    method: Option<Method>,
    headers: Vec<(HeaderName, String)>,
    header_regex: Vec<(HeaderName, Regex)>,
    query: Vec<(String, String)>,
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// `%XX` escapes decoded (a malformed one is kept as is); `+` is left alone,
/// as this is URL decoding, not form decoding. Borrows when there is no `%`.
pub fn percent_decode(s: &str) -> Cow<'_, [u8]> {
    if !s.contains('%') {
        return Cow::Borrowed(s.as_bytes());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).copied().and_then(hex_digit);
            let lo = b.get(i + 2).copied().and_then(hex_digit);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// True when some `name=value` pair of `query` (decoded) is exactly the one
/// wanted; a parameter without `=` has the empty value.
pub fn query_has(query: &str, name: &str, value: &str) -> bool {
    query.split('&').any(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        *percent_decode(n) == *name.as_bytes() && *percent_decode(v) == *value.as_bytes()
    })
}

// === impl Matcher ===

impl Matcher {
    /// Regexes were checked by config validation; a failure here is still an error, never a panic.
    pub fn new(m: &MatchConfig) -> Result<Self, regex::Error> {
        let host = m.host.as_deref().map(HostMatcher::new);
        let path = match &m.path {
            PathMatch::Any => PathMatcher::Any,
            PathMatch::Exact(p) => PathMatcher::Exact(p.clone()),
            PathMatch::Prefix(p) if p == "/" => PathMatcher::Any,
            PathMatch::Prefix(p) => PathMatcher::Prefix(p.trim_end_matches('/').to_string()),
            PathMatch::Regex(r) => PathMatcher::Regex(path_regex(r)?),
        };
        Ok(Matcher {
            host,
            path,
            method: m.method.clone(),
            headers: m.headers.clone(),
            header_regex: m
                .header_regex
                .iter()
                .map(|(name, p)| Ok((name.clone(), path_regex(p)?)))
                .collect::<Result<_, regex::Error>>()?,
            query: m.query.clone(),
        })
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.mismatch(req).is_none()
    }

    /// None when the request matches; else the first condition that fails,
    /// in the order method, host, path, headers, query.
    pub fn mismatch(&self, req: &RequestView<'_>) -> Option<Mismatch> {
        if self.method.as_ref().is_some_and(|m| m != req.method) {
            return Some(Mismatch::Method);
        }
        if !self.host.as_ref().is_none_or(|h| h.matches(req.host)) {
            return Some(Mismatch::Host);
        }
        let path_ok = match &self.path {
            PathMatcher::Any => true,
            PathMatcher::Exact(p) => req.path == p,
            PathMatcher::Prefix(p) => {
                req.path.starts_with(p.as_str())
                    && matches!(req.path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatcher::Regex(r) => r.is_match(req.path),
        };
        if !path_ok {
            return Some(Mismatch::Path);
        }
        let header_miss = self.headers.iter().position(|(name, want)| {
            !req.headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == want.as_bytes())
        });
        if let Some(i) = header_miss {
            return Some(Mismatch::Header(i));
        }
        // A value that is not UTF-8 matches no pattern.
        let regex_miss = self.header_regex.iter().position(|(name, re)| {
            !req.headers
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| re.is_match(v)))
        });
        if let Some(i) = regex_miss {
            return Some(Mismatch::HeaderRegex(i));
        }
        self.query
            .iter()
            .position(|(name, want)| !req.query.is_some_and(|q| query_has(q, name, want)))
            .map(Mismatch::Query)
    }
}

/// Targets with weights, chosen at random in proportion: per request for a
/// route, per connection for a tcp listener. Derefs to the targets.
pub struct Backends<T> {
    targets: Vec<T>,
    weights: Balancer,
}

/// Weights alone decide: a target's health is its cluster's business.
struct AllUp;

impl Loads for AllUp {
    fn available(&self, _: usize) -> bool {
        true
    }
    fn active(&self, _: usize) -> u64 {
        0
    }
}

// === impl Backends ===

impl<T> Backends<T> {
    pub fn new(targets: Vec<T>, weights: &[u32]) -> Self {
        Backends {
            targets,
            weights: Balancer::new(LbPolicy::Random, weights, &[]),
        }
    }

    /// A target by weight; None when every weight is zero.
    pub fn pick(&self) -> Option<&T> {
        if self.targets.len() == 1 {
            return self.targets.first();
        }
        self.weights.pick(&AllUp, None).map(|i| &self.targets[i])
    }
}

impl<T> Deref for Backends<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.targets
    }
}

/// A compiled route; `T` is what a backend resolves to (a cluster at run time).
pub struct Route<T> {
    pub name: String,
    /// The name again, shared by the records and edges that carry it.
    pub label: std::sync::Arc<str>,
    pub matcher: Matcher,
    /// Empty for a redirect route.
    pub backends: Backends<T>,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub fault: Option<FaultConfig>,
    /// Where copies go, each with its percentage.
    pub mirrors: Vec<(T, f64)>,
    pub rate_limit: Option<RateLimiter>,
    pub request_headers: HeaderModifier,
    pub response_headers: HeaderModifier,
    pub rewrite: Option<RewriteConfig>,
    pub redirect: Option<RedirectConfig>,
    /// Answers 403 (an egress denial) by itself.
    pub deny: bool,
    /// The `match.path_prefix`, which prefix rewrites and redirects replace.
    pub matched_prefix: Option<String>,
    /// A request body over this many bytes gets 413.
    pub max_request_bytes: Option<u64>,
    /// The edges (source, destination) its requests went over.
    pub edges: crate::telemetry::edges::EdgeTable,
}

// === impl Route ===

impl<T> Route<T> {
    /// `backends` and `mirrors` are what the config's cluster names resolve to, in order.
    pub fn new(
        index: usize,
        cfg: &RouteConfig,
        backends: Vec<T>,
        mirrors: Vec<T>,
    ) -> Result<Self, regex::Error> {
        let weights: Vec<u32> = cfg.backends.iter().map(|b| b.weight).collect();
        let matched_prefix = match &cfg.matcher.path {
            PathMatch::Prefix(p) => Some(p.clone()),
            _ => None,
        };
        let name = cfg.name.clone().unwrap_or_else(|| format!("route-{index}"));
        Ok(Route {
            label: name.as_str().into(),
            name,
            matcher: Matcher::new(&cfg.matcher)?,
            backends: Backends::new(backends, &weights),
            timeout: cfg.timeout,
            retry: cfg.retry.clone(),
            fault: cfg.fault.clone(),
            mirrors: mirrors
                .into_iter()
                .zip(cfg.mirrors.iter().map(|m| m.percent))
                .collect(),
            rate_limit: cfg.rate_limit.as_ref().map(RateLimiter::new),
            request_headers: cfg.request_headers.clone(),
            response_headers: cfg.response_headers.clone(),
            rewrite: cfg.rewrite.clone(),
            redirect: cfg.redirect.clone(),
            deny: cfg.deny,
            matched_prefix,
            max_request_bytes: cfg.max_request_bytes,
            edges: Default::default(),
        })
    }

    /// A backend by weight; None when every weight is zero.
    pub fn pick_backend(&self) -> Option<&T> {
        self.backends.pick()
    }
}

#[cfg(test)]
fn first_match<'r, T>(routes: &'r [Route<T>], req: &RequestView<'_>) -> Option<&'r Route<T>> {
    routes.iter().find(|r| r.matcher.matches(req))
}

#[cfg(test)]
#[path = "route_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ListenerKind};

    fn routes(yaml_routes: &str) -> Vec<Route<String>> {
        let text = format!(
            "listeners:\n - name: l\n   address: 127.0.0.1:1\n   routes:\n{yaml_routes}\nclusters:\n - {{name: a, endpoints: []}}\n - {{name: b, endpoints: []}}\n"
        );
        let c = Config::parse(&text).unwrap();
        let ListenerKind::Http { routes } = &c.listeners[0].kind else {
            panic!()
        };
        routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let names = |v: Vec<String>| v;
                let backends = names(r.backends.iter().map(|b| b.cluster.clone()).collect());
                let mirrors = r.mirrors.iter().map(|m| m.cluster.clone()).collect();
                Route::new(i, r, backends, mirrors).unwrap()
            })
            .collect()
    }

    fn route_for(
        rs: &[Route<String>],
        method: &str,
        host: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Option<String> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let mut hm = HeaderMap::new();
        for (k, v) in headers {
            hm.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let view = RequestView {
            method: &method,
            host,
            path,
            query,
            headers: &hm,
        };
        first_match(rs, &view).map(|r| r.name.clone())
    }

    #[test]
    fn first_match_wins_in_order() {
        let rs = routes(
            "    - {name: canary, match: {path_prefix: /api, method: GET, headers: {x-canary: 'true'}}, backends: [{cluster: b}]}\n    - {name: api, match: {path_prefix: /api}, backends: [{cluster: a}]}\n    - {name: rest, match: {path_prefix: /}, backends: [{cluster: a}]}",
        );
        assert_eq!(
            route_for(&rs, "GET", "x", "/api/v1", &[("x-canary", "true")]).as_deref(),
            Some("canary")
        );
        assert_eq!(
            route_for(&rs, "POST", "x", "/api/v1", &[("x-canary", "true")]).as_deref(),
            Some("api")
        );
        assert_eq!(
            route_for(&rs, "GET", "x", "/api", &[("x-canary", "false")]).as_deref(),
            Some("api")
        );
        assert_eq!(
            route_for(&rs, "GET", "x", "/apix", &[]).as_deref(),
            Some("rest")
        );
    }

    #[test]
    fn header_regex_matches_any_value_whole() {
        let rs = routes(
            "    - {name: beta, match: {header_regex: {x-user: 'beta-[0-9]+'}}, backends: [{cluster: b}]}\n    - {name: rest, match: {path_prefix: /}, backends: [{cluster: a}]}",
        );
        let pick = |hs: &[(&str, &str)]| route_for(&rs, "GET", "h", "/", hs);
        assert_eq!(pick(&[("x-user", "beta-42")]).as_deref(), Some("beta"));
        // Anchored: a value that only contains a match is no match.
        assert_eq!(pick(&[("x-user", "xbeta-42")]).as_deref(), Some("rest"));
        assert_eq!(pick(&[("x-user", "beta-42x")]).as_deref(), Some("rest"));
        // Any of a repeated header's values may match.
        assert_eq!(
            pick(&[("x-user", "alpha"), ("x-user", "beta-7")]).as_deref(),
            Some("beta")
        );
        assert_eq!(pick(&[]).as_deref(), Some("rest"));
    }

    #[test]
    fn path_kinds() {
        let rs = routes(
            "    - {name: exact, match: {path: /a}, backends: [{cluster: a}]}\n    - {name: re, match: {path_regex: '/u/[0-9]+'}, backends: [{cluster: a}]}\n    - {name: pre, match: {path_prefix: /p/}, backends: [{cluster: a}]}",
        );
        assert_eq!(
            route_for(&rs, "GET", "h", "/a", &[]).as_deref(),
            Some("exact")
        );
        assert_eq!(route_for(&rs, "GET", "h", "/a/", &[]), None);
        assert_eq!(
            route_for(&rs, "GET", "h", "/u/42", &[]).as_deref(),
            Some("re")
        );
        assert_eq!(
            route_for(&rs, "GET", "h", "/u/42x", &[]),
            None,
            "regex is anchored"
        );
        assert_eq!(
            route_for(&rs, "GET", "h", "/p", &[]).as_deref(),
            Some("pre")
        );
        assert_eq!(
            route_for(&rs, "GET", "h", "/p/q", &[]).as_deref(),
            Some("pre")
        );
        assert_eq!(route_for(&rs, "GET", "h", "/pq", &[]), None);
    }

    #[test]
    fn hosts_exact_and_wildcard() {
        let rs = routes(
            "    - {name: one, match: {host: Api.Example.com}, backends: [{cluster: a}]}\n    - {name: any, match: {host: '*.example.com'}, backends: [{cluster: b}]}",
        );
        assert_eq!(
            route_for(&rs, "GET", "api.example.com", "/", &[]).as_deref(),
            Some("one")
        );
        assert_eq!(
            route_for(&rs, "GET", "www.example.com", "/", &[]).as_deref(),
            Some("any")
        );
        assert_eq!(route_for(&rs, "GET", "example.com", "/", &[]), None);
    }

    #[test]
    fn query_parameters_decoded_and_any_occurrence() {
        let rs = routes(
            "    - {name: q, match: {query: {v: '2', 'a b': 'c&d'}}, backends: [{cluster: a}]}\n    - {name: rest, backends: [{cluster: b}]}",
        );
        let q = |target: &str| route_for(&rs, "GET", "h", target, &[]);
        assert_eq!(q("/?v=2&a%20b=c%26d").as_deref(), Some("q"));
        assert_eq!(q("/x?a%20b=c%26d&v=1&v=2").as_deref(), Some("q"));
        assert_eq!(
            q("/?v=%32&a+b=c%26d").as_deref(),
            Some("rest"),
            "+ is not a space"
        );
        assert_eq!(q("/?v=2").as_deref(), Some("rest"), "all must match");
        assert_eq!(q("/?v=20&a%20b=c%26d").as_deref(), Some("rest"));
        assert_eq!(q("/").as_deref(), Some("rest"));
        assert_eq!(&*percent_decode("%zz%4"), b"%zz%4");
        assert!(query_has("flag&x=1", "flag", ""));
    }

    #[test]
    fn weighted_backends() {
        let rs = routes("    - {backends: [{cluster: a, weight: 90}, {cluster: b, weight: 10}]}");
        let n = 20_000;
        let b = (0..n)
            .filter(|_| rs[0].pick_backend().map(String::as_str) == Some("b"))
            .count();
        let share = b as f64 / n as f64;
        assert!((share - 0.10).abs() < 0.015, "{share}");
        let zero = routes("    - {backends: [{cluster: a, weight: 0}, {cluster: b, weight: 0}]}");
        assert!(zero[0].pick_backend().is_none());
    }

    #[test]
    fn host_patterns_match_exact_names_and_names_below_a_suffix() {
        let exact = HostMatcher::new("api.example.com");
        assert!(exact.matches("api.example.com"));
        assert!(!exact.matches("x.api.example.com"));
        let suffix = HostMatcher::new("*.example.com");
        assert!(suffix.matches("api.example.com"));
        assert!(suffix.matches("a.b.example.com"));
        assert!(!suffix.matches("example.com"), "not the suffix itself");
        assert!(!suffix.matches("badexample.com"), "a label boundary");
    }
}
