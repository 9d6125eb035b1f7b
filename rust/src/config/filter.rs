//! A route's filters: header modifiers, the URL rewrite and the redirect, in
//! the shapes of Gateway API's filters.

use std::collections::HashSet;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use serde_json::Value;

use super::decode::{type_name, Decoder, Fields};

/// Headers the proxy owns on every hop (framing, hop-by-hop, the authority):
/// header modifiers may not touch them.
pub const PROXY_OWNED_HEADERS: &[&str] = &[
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
pub(super) enum Message {
    Request,
    Response,
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

// === impl Decoder (filters) ===

impl Decoder {
    pub(super) fn header_modifier(
        &mut self,
        v: &Value,
        path: &str,
        msg: Message,
    ) -> Option<HeaderModifier> {
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

    pub(super) fn rewrite(
        &mut self,
        v: &Value,
        path: &str,
        has_prefix: bool,
    ) -> Option<RewriteConfig> {
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

    pub(super) fn redirect(
        &mut self,
        v: &Value,
        path: &str,
        has_prefix: bool,
    ) -> Option<RedirectConfig> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::route::BackendConfig;
    use crate::config::test_support::*;
    use crate::config::{Config, ListenerKind};

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
}
