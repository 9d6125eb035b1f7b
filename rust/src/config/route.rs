//! A route's section: what it matches (host, path, method, headers, query)
//! and the weighted backends it forwards to. Its filters (header edits,
//! rewrite, redirect) are decoded in `filter`.

use std::collections::HashSet;
use std::time::Duration;

use http::header::HeaderName;
use http::Method;
use serde_json::Value;

use super::decode::{Decoder, Fields, MAX_WEIGHT};
use super::filter::{HeaderModifier, Message, RedirectConfig, RewriteConfig};
use super::resilience::RetryPolicy;
use super::traffic::{FaultConfig, FaultSite, MirrorConfig, RateLimitConfig};

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: Option<String>,
    pub matcher: MatchConfig,
    /// Empty exactly when `redirect` is set or `deny` is true.
    pub backends: Vec<BackendConfig>,
    /// The route answers 403 (an egress denial) by itself.
    pub deny: bool,
    pub timeout: Option<Duration>,
    /// Retries of a failed try; the default retries what is safe to.
    pub retry: RetryPolicy,
    pub fault: Option<FaultConfig>,
    pub mirrors: Vec<MirrorConfig>,
    pub rate_limit: Option<RateLimitConfig>,
    /// Applied to the request sent upstream (no effect on a redirect route).
    pub request_headers: HeaderModifier,
    /// Applied to upstream responses and to this route's redirects (not to
    /// the proxy's error replies).
    pub response_headers: HeaderModifier,
    pub rewrite: Option<RewriteConfig>,
    /// The route answers by itself; nothing is forwarded.
    pub redirect: Option<RedirectConfig>,
    /// A request body over this many bytes gets 413.
    pub max_request_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MatchConfig {
    /// Lower-cased; `*.example.com` matches any subdomain.
    pub host: Option<String>,
    pub path: PathMatch,
    pub method: Option<Method>,
    pub headers: Vec<(HeaderName, String)>,
    /// Header name -> pattern (anchored like `path_regex`); some value of the
    /// header must match it.
    pub header_regex: Vec<(HeaderName, String)>,
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

/// A `path_regex` (or a `header_regex` pattern) as the data plane runs it:
/// anchored at both ends. The control plane checks its regexes with this too
/// (through `_core`).
pub fn path_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

// === impl Decoder (route) ===

impl Decoder {
    pub(super) fn route(
        &mut self,
        v: &Value,
        path: &str,
        clusters: &HashSet<String>,
    ) -> Option<RouteConfig> {
        let f = self.object(
            v,
            path,
            &[
                "name",
                "match",
                "backends",
                "timeout_ms",
                "retry",
                "fault",
                "mirrors",
                "rate_limit",
                "request_headers",
                "response_headers",
                "rewrite",
                "redirect",
                "max_request_bytes",
                "deny",
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
        let deny = self.boolean(&f, "deny").unwrap_or(false);
        let backends = if deny {
            for key in [
                "backends",
                "timeout_ms",
                "retry",
                "mirrors",
                "rewrite",
                "redirect",
            ] {
                if f.get(key).is_some() {
                    self.err(
                        f.at(key),
                        "not allowed with deny: the route answers 403 and forwards nothing",
                    );
                }
            }
            Vec::new()
        } else if f.get("redirect").is_some() {
            // These contradict a redirect. request_headers is let through with no
            // effect: the Gateway API allows a RequestHeaderModifier beside a redirect.
            for key in ["backends", "timeout_ms", "retry", "mirrors", "rewrite"] {
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
        let retry = f
            .get("retry")
            .and_then(|r| self.retry(r, &f.at("retry")))
            .unwrap_or_default();
        let fault = f
            .get("fault")
            .and_then(|x| self.fault(x, &f.at("fault"), FaultSite::Route));
        let mirrors = f
            .get("mirrors")
            .map(|m| self.mirrors(m, &f.at("mirrors"), clusters))
            .unwrap_or_default();
        let rate_limit = f
            .get("rate_limit")
            .and_then(|x| self.rate_limit(x, &f.at("rate_limit")));
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
        let max_request_bytes = self.uint(&f, "max_request_bytes", 0, u64::MAX);
        Some(RouteConfig {
            name,
            matcher: matcher?,
            backends,
            deny,
            timeout,
            retry,
            fault,
            mirrors,
            rate_limit,
            request_headers,
            response_headers,
            rewrite,
            redirect,
            max_request_bytes,
        })
    }

    /// `backends: [{cluster, weight}]`, for routes and tcp listeners.
    pub(super) fn backends(
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

    pub(super) fn matcher(&mut self, v: &Value, path: &str) -> Option<MatchConfig> {
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
                "header_regex",
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
        if let Some(Err(e)) = regex.as_deref().map(path_regex) {
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
        for (at, name, pattern) in self.string_map(&f, "header_regex") {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                path_regex(&pattern),
            ) {
                (Err(_), _) => self.err(at, "not a valid header name"),
                (_, Err(e)) => self.err(at, format!("invalid regex: {e}")),
                (Ok(hn), Ok(_)) => m.header_regex.push((hn, pattern)),
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
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn rejects_bad_matches() {
        let got = issues(
            "listeners:\n - name: a\n   address: 127.0.0.1:1\n   routes:\n    - match: {path: x, path_regex: '(', method: 'G E T', headers: {'bad name': v}, header_regex: {x-a: '(', 'bad name': 'a'}}\n      backends: []\n",
        );
        assert!(
            got.iter()
                .any(|i| i
                    .starts_with("listeners[0].routes[0].match.header_regex.x-a: invalid regex")),
            "{got:?}"
        );
        assert!(
            got.iter().any(|i| i
                .starts_with("listeners[0].routes[0].match.header_regex.bad name: not a valid")),
            "{got:?}"
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
}
