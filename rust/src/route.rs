//! Request -> route: first match wins on host, path, method and headers; then
//! a weighted choice among the route's backends.

use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, Method};
use regex::Regex;

use crate::balance::Loads;
use crate::config::{MatchConfig, PathMatch, RouteConfig};

/// The parts of a request that routing looks at.
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Lower-cased, without port.
    pub host: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

enum HostMatcher {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

enum PathMatcher {
    Any,
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

pub struct Matcher {
    host: Option<HostMatcher>,
    path: PathMatcher,
    method: Option<Method>,
    headers: Vec<(HeaderName, String)>,
}

// === impl Matcher ===

impl Matcher {
    /// Regexes were checked by config validation; a failure here is still an error, never a panic.
    pub fn new(m: &MatchConfig) -> Result<Self, regex::Error> {
        let host = m.host.as_ref().map(|h| match h.strip_prefix('*') {
            Some(suffix) => HostMatcher::Suffix(suffix.to_string()),
            None => HostMatcher::Exact(h.clone()),
        });
        let path = match &m.path {
            PathMatch::Any => PathMatcher::Any,
            PathMatch::Exact(p) => PathMatcher::Exact(p.clone()),
            PathMatch::Prefix(p) if p == "/" => PathMatcher::Any,
            PathMatch::Prefix(p) => PathMatcher::Prefix(p.trim_end_matches('/').to_string()),
            PathMatch::Regex(r) => PathMatcher::Regex(Regex::new(&format!("^(?:{r})$"))?),
        };
        Ok(Matcher {
            host,
            path,
            method: m.method.clone(),
            headers: m.headers.clone(),
        })
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(m) = &self.method {
            if m != req.method {
                return false;
            }
        }
        match &self.host {
            Some(HostMatcher::Exact(h)) if h != req.host => return false,
            Some(HostMatcher::Suffix(s))
                if !(req.host.ends_with(s.as_str()) && req.host.len() > s.len()) =>
            {
                return false
            }
            _ => {}
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
        path_ok
            && self.headers.iter().all(|(name, want)| {
                req.headers
                    .get_all(name)
                    .iter()
                    .any(|v| v.as_bytes() == want.as_bytes())
            })
    }
}

/// A compiled route; `T` is what a backend resolves to (a cluster at run time).
pub struct Route<T> {
    pub name: String,
    pub matcher: Matcher,
    pub backends: Vec<T>,
    weights: crate::balance::Balancer,
    pub timeout: Option<Duration>,
}

struct AllUp;

impl Loads for AllUp {
    fn available(&self, _: usize) -> bool {
        true
    }
    fn active(&self, _: usize) -> u64 {
        0
    }
}

// === impl Route ===

impl<T> Route<T> {
    pub fn new(index: usize, cfg: &RouteConfig, backends: Vec<T>) -> Result<Self, regex::Error> {
        let weights: Vec<u32> = cfg.backends.iter().map(|b| b.weight).collect();
        Ok(Route {
            name: cfg.name.clone().unwrap_or_else(|| format!("route-{index}")),
            matcher: Matcher::new(&cfg.matcher)?,
            backends,
            weights: crate::balance::Balancer::new(crate::config::LbPolicy::Random, &weights, &[]),
            timeout: cfg.timeout,
        })
    }

    /// A backend by weight; None when every weight is zero.
    pub fn pick_backend(&self) -> Option<&T> {
        if self.backends.len() == 1 {
            return self.backends.first();
        }
        self.weights.pick(&AllUp, None).map(|i| &self.backends[i])
    }
}

pub fn first_match<'r, T>(routes: &'r [Route<T>], req: &RequestView<'_>) -> Option<&'r Route<T>> {
    routes.iter().find(|r| r.matcher.matches(req))
}

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
                Route::new(i, r, r.backends.iter().map(|b| b.cluster.clone()).collect()).unwrap()
            })
            .collect()
    }

    fn route_for(
        rs: &[Route<String>],
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<String> {
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
}
