//! What a route does to a request besides choosing a backend: header edits,
//! URL rewrites and redirects. Pure functions over `http` types, so the
//! forwarding path only calls them and the tests need no sockets.

use http::HeaderMap;

use crate::config::{HeaderModifier, PathModifier, RedirectConfig};

// === impl HeaderModifier ===

impl HeaderModifier {
    /// Remove, then set, then add: a header both removed and added ends up
    /// with the added value only, as in Envoy.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Replaces the part of `path` that a `path_prefix` match on `matched`
/// covered with `replacement`, segment by segment as Gateway API's
/// ReplacePrefixMatch: matched `/api`, replacement `/v2` turns `/api/x` into
/// `/v2/x` and `/api` into `/v2`; replacement `/` turns `/api/x` into `/x`.
/// A path the prefix does not cover is returned unchanged.
pub fn replace_prefix(path: &str, matched: &str, replacement: &str) -> String {
    // Trailing slashes are not part of the segment comparison (`/api/` == `/api`).
    let matched = matched.trim_end_matches('/');
    let Some(rest) = path
        .strip_prefix(matched)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    else {
        return path.to_string();
    };
    let replacement = replacement.trim_end_matches('/');
    let mut out = String::with_capacity(replacement.len() + rest.len() + 1);
    out.push_str(replacement);
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The new path (without query) for a rewrite or redirect; `matched` is the
/// route's `match.path_prefix` (validation requires it for a prefix rewrite).
pub fn rewrite_path(path: &str, matched: Option<&str>, modifier: &PathModifier) -> String {
    match (modifier, matched) {
        (PathModifier::Full(p), _) => p.clone(),
        (PathModifier::Prefix(replacement), Some(matched)) => {
            replace_prefix(path, matched, replacement)
        }
        (PathModifier::Prefix(_), None) => path.to_string(),
    }
}

/// `path` followed by `?query` when the request had one.
pub fn with_query(mut path: String, query: Option<&str>) -> String {
    if let Some(q) = query {
        path.push('?');
        path.push_str(q);
    }
    path
}

/// The URL the client asked for, in the pieces a redirect may replace.
pub struct RequestUrl<'a> {
    /// `http` unless the request said otherwise (absolute-form, HTTP/2 `:scheme`).
    pub scheme: &'a str,
    /// As sent: `Host` or `:authority`, with its port if it had one.
    pub authority: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

fn default_port(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    }
}

/// Splits `host[:port]`, keeping an IPv6 literal's brackets; a port that is
/// not a number is dropped.
fn split_authority(authority: &str) -> (&str, Option<u16>) {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => (&authority[..=end], authority[end + 1..].strip_prefix(':')),
            None => (authority, None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    (host, port.and_then(|p| p.parse().ok()))
}

/// The `Location` of a redirect: the request's URL with the configured parts
/// replaced. As in the Gateway API, a new scheme without a port goes to that
/// scheme's well-known port, otherwise the port the client used is kept; the
/// port is left out when it is the scheme's default. The query is kept. With
/// no host known at all the result is a relative reference (path and query).
pub fn redirect_location(
    redirect: &RedirectConfig,
    matched: Option<&str>,
    req: &RequestUrl<'_>,
) -> String {
    let (req_host, req_port) = split_authority(req.authority);
    let path = match &redirect.path {
        Some(m) => rewrite_path(req.path, matched, m),
        None => req.path.to_string(),
    };
    let path = with_query(path, req.query);
    let host = redirect.host.as_deref().unwrap_or(req_host);
    if host.is_empty() {
        return path;
    }
    let scheme = redirect.scheme.as_deref().unwrap_or(req.scheme);
    let port = redirect
        .port
        .or(if redirect.scheme.is_some() {
            None
        } else {
            req_port
        })
        .filter(|&p| p != default_port(scheme));
    let bracketed = host.contains(':') && !host.starts_with('[');
    let mut out = String::with_capacity(scheme.len() + host.len() + path.len() + 16);
    out.push_str(scheme);
    out.push_str("://");
    if bracketed {
        out.push('[');
    }
    out.push_str(host);
    if bracketed {
        out.push(']');
    }
    if let Some(p) = port {
        out.push(':');
        out.push_str(&p.to_string());
    }
    out.push_str(&path);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue};
    use http::StatusCode;

    fn redirect(
        scheme: Option<&str>,
        host: Option<&str>,
        port: Option<u16>,
        path: Option<PathModifier>,
    ) -> RedirectConfig {
        RedirectConfig {
            scheme: scheme.map(str::to_string),
            host: host.map(str::to_string),
            port,
            path,
            status: StatusCode::FOUND,
        }
    }

    fn url<'a>(authority: &'a str, path: &'a str, query: Option<&'a str>) -> RequestUrl<'a> {
        RequestUrl {
            scheme: "http",
            authority,
            path,
            query,
        }
    }

    #[test]
    fn prefix_replacement_is_segment_aware() {
        let cases = [
            ("/api/x", "/api", "/v2", "/v2/x"),
            ("/api", "/api", "/v2", "/v2"),
            ("/api/", "/api", "/v2", "/v2/"),
            ("/api/x/y", "/api/", "/v2/", "/v2/x/y"),
            ("/api/x", "/api", "/", "/x"),
            ("/api", "/api", "/", "/"),
            ("/x", "/", "/v2", "/v2/x"),
            ("/", "/", "/v2", "/v2/"),
            // Not covered by the prefix: unchanged.
            ("/apix", "/api", "/v2", "/apix"),
        ];
        for (path, matched, replacement, want) in cases {
            assert_eq!(
                replace_prefix(path, matched, replacement),
                want,
                "{path} with {matched} -> {replacement}"
            );
        }
    }

    #[test]
    fn rewrite_path_full_and_prefix_and_query() {
        let full = PathModifier::Full("/new".into());
        assert_eq!(rewrite_path("/api/x", Some("/api"), &full), "/new");
        let prefix = PathModifier::Prefix("/v2".into());
        assert_eq!(rewrite_path("/api/x", Some("/api"), &prefix), "/v2/x");
        assert_eq!(rewrite_path("/api/x", None, &prefix), "/api/x");
        assert_eq!(
            with_query(rewrite_path("/api/x", Some("/api"), &prefix), Some("q=1")),
            "/v2/x?q=1"
        );
        assert_eq!(with_query("/a".into(), None), "/a");
    }

    #[test]
    fn location_replaces_only_the_given_parts() {
        let req = url("example.com:8080", "/api/x", Some("q=1"));
        let to_https = redirect(Some("https"), None, None, None);
        assert_eq!(
            redirect_location(&to_https, None, &req),
            "https://example.com/api/x?q=1",
            "a new scheme drops the old port for its default"
        );
        let keep = redirect(None, Some("other.example"), None, None);
        assert_eq!(
            redirect_location(&keep, None, &req),
            "http://other.example:8080/api/x?q=1",
            "same scheme keeps the client's port"
        );
        let port = redirect(Some("https"), None, Some(8443), None);
        assert_eq!(
            redirect_location(&port, None, &req),
            "https://example.com:8443/api/x?q=1"
        );
        let default_port = redirect(None, None, Some(80), None);
        assert_eq!(
            redirect_location(&default_port, None, &req),
            "http://example.com/api/x?q=1"
        );
        let prefix = redirect(None, None, None, Some(PathModifier::Prefix("/v2".into())));
        assert_eq!(
            redirect_location(&prefix, Some("/api"), &req),
            "http://example.com:8080/v2/x?q=1"
        );
        let full = redirect(None, None, None, Some(PathModifier::Full("/moved".into())));
        assert_eq!(
            redirect_location(&full, None, &url("example.com", "/old", None)),
            "http://example.com/moved"
        );
    }

    #[test]
    fn location_handles_ipv6_and_a_missing_host() {
        let to_https = redirect(Some("https"), None, None, None);
        assert_eq!(
            redirect_location(&to_https, None, &url("[::1]:8080", "/", None)),
            "https://[::1]/"
        );
        let port = redirect(None, None, Some(81), None);
        assert_eq!(
            redirect_location(&port, None, &url("[::1]", "/a", None)),
            "http://[::1]:81/a"
        );
        let v6_host = redirect(None, Some("[::2]"), None, None);
        assert_eq!(
            redirect_location(&v6_host, None, &url("h", "/", None)),
            "http://[::2]/"
        );
        let full = redirect(None, None, None, Some(PathModifier::Full("/b".into())));
        assert_eq!(
            redirect_location(&full, None, &url("", "/a", Some("x"))),
            "/b?x"
        );
    }

    #[test]
    fn header_modifier_removes_sets_then_adds() {
        let name = |s: &str| HeaderName::from_bytes(s.as_bytes()).unwrap();
        let value = |s: &str| HeaderValue::from_str(s).unwrap();
        let m = HeaderModifier {
            set: vec![(name("x-set"), value("new"))],
            add: vec![(name("x-add"), value("b")), (name("x-gone"), value("back"))],
            remove: vec![name("x-gone")],
        };
        let mut h = HeaderMap::new();
        h.append(name("x-set"), value("old1"));
        h.append(name("x-set"), value("old2"));
        h.append(name("x-add"), value("a"));
        h.append(name("x-gone"), value("1"));
        h.append(name("x-kept"), value("k"));
        m.apply(&mut h);
        let all =
            |n: &str| -> Vec<&str> { h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect() };
        assert_eq!(all("x-set"), ["new"]);
        assert_eq!(all("x-add"), ["a", "b"]);
        assert_eq!(all("x-gone"), ["back"]);
        assert_eq!(all("x-kept"), ["k"]);
    }
}
