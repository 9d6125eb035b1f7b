//! Identity-based authorization on a listener: rules that allow or deny by
//! the peer's SPIFFE ID (principal, namespace, service), the request path
//! and method. DENY rules are checked first; when any ALLOW rule exists the
//! request must match one; otherwise the listener's default decides.

use http::Method;
use serde_json::Value;

use crate::config::{Decoder, Fields};
use crate::tls::SpiffeId;

/// A `*` glob: `*` stands for any run of characters, everything else is literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// The literal pieces between the stars (one piece: no star).
    parts: Vec<String>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob {
            parts: pattern.split('*').map(str::to_string).collect(),
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        if self.parts.len() == 1 {
            return self.parts[0] == text;
        }
        let (first, last) = (&self.parts[0], &self.parts[self.parts.len() - 1]);
        let Some(mut rest) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        if rest.len() < last.len() {
            return false;
        }
        let tail_at = rest.len() - last.len();
        if !rest[tail_at..].eq(last.as_str()) {
            return false;
        }
        rest = &rest[..tail_at];
        // Middle pieces in order, each as early as possible (greedy is exact for `*`).
        for part in &self.parts[1..self.parts.len() - 1] {
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// One rule: every field given must match; an empty field matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    principals: Vec<Glob>,
    namespaces: Vec<Glob>,
    services: Vec<Glob>,
    paths: Vec<Glob>,
    methods: Vec<Method>,
}

/// What is known of a request when it is authorized: the HTTP method and
/// path, or nothing for a TCP connection.
pub type Operation<'a> = Option<(&'a Method, &'a str)>;

fn any(globs: &[Glob], value: Option<&str>) -> bool {
    globs.is_empty() || value.is_some_and(|v| globs.iter().any(|g| g.matches(v)))
}

impl Rule {
    fn has_source(&self) -> bool {
        !(self.principals.is_empty() && self.namespaces.is_empty() && self.services.is_empty())
    }

    fn has_operation(&self) -> bool {
        !(self.paths.is_empty() && self.methods.is_empty())
    }

    fn matches(&self, peer: Option<&SpiffeId>, op: Operation<'_>) -> bool {
        // A source condition needs a verified peer: plaintext matches none.
        if self.has_source() {
            let Some(peer) = peer else { return false };
            if !(any(&self.principals, Some(peer.as_str()))
                && any(&self.namespaces, peer.namespace())
                && any(&self.services, peer.service()))
            {
                return false;
            }
        }
        match op {
            Some((method, path)) => {
                any(&self.paths, Some(path))
                    && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            }
            // TCP has no path or method: an ALLOW that asks for one cannot be met;
            // a DENY that names one still applies (the stricter reading).
            None => self.action == Action::Deny || !self.has_operation(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    default_allow: bool,
    deny: Vec<Rule>,
    allow: Vec<Rule>,
}

/// The outcome, with the rule (or default) that decided, for stats and logs.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    Allow(&'a str),
    Deny(&'a str),
}

impl Authorization {
    pub fn decide(&self, peer: Option<&SpiffeId>, op: Operation<'_>) -> Decision<'_> {
        if let Some(rule) = self.deny.iter().find(|r| r.matches(peer, op)) {
            return Decision::Deny(&rule.name);
        }
        if !self.allow.is_empty() {
            return match self.allow.iter().find(|r| r.matches(peer, op)) {
                Some(rule) => Decision::Allow(&rule.name),
                None => Decision::Deny("no ALLOW rule matched"),
            };
        }
        if self.default_allow {
            Decision::Allow("default allow")
        } else {
            Decision::Deny("default deny")
        }
    }
}

// === impl Decoder (authorization) ===

impl Decoder {
    fn globs(&mut self, f: &Fields<'_>, key: &str) -> Vec<Glob> {
        self.list(f, key, false)
            .into_iter()
            .filter_map(|(p, v)| match v.as_str() {
                Some(s) if !s.is_empty() => Some(Glob::new(s)),
                _ => {
                    self.err(p, "expected a non-empty pattern");
                    None
                }
            })
            .collect()
    }

    pub(crate) fn authorization(&mut self, v: &Value, path: &str) -> Option<Authorization> {
        let f = self.object(v, path, &["default", "rules"])?;
        let default_allow = match self.string(&f, "default", false).as_deref() {
            None | Some("allow") => true,
            Some("deny") => false,
            Some(other) => {
                self.err(
                    f.at("default"),
                    format!("'{other}' is not one of: allow, deny"),
                );
                true
            }
        };
        let mut auth = Authorization {
            default_allow,
            deny: Vec::new(),
            allow: Vec::new(),
        };
        for (i, (p, item)) in self.list(&f, "rules", false).into_iter().enumerate() {
            let Some(rf) = self.object(
                item,
                &p,
                &[
                    "name",
                    "action",
                    "principals",
                    "namespaces",
                    "services",
                    "paths",
                    "methods",
                ],
            ) else {
                continue;
            };
            let name = self
                .string(&rf, "name", false)
                .unwrap_or_else(|| format!("rules[{i}]"));
            let action = match self.string(&rf, "action", true).as_deref() {
                Some("allow") => Action::Allow,
                Some("deny") => Action::Deny,
                Some(other) => {
                    self.err(
                        rf.at("action"),
                        format!("'{other}' is not one of: allow, deny"),
                    );
                    continue;
                }
                None => continue,
            };
            let methods = self
                .list(&rf, "methods", false)
                .into_iter()
                .filter_map(
                    |(mp, v)| match v.as_str().map(|s| Method::from_bytes(s.as_bytes())) {
                        Some(Ok(m)) => Some(m),
                        _ => {
                            self.err(mp, "expected an HTTP method");
                            None
                        }
                    },
                )
                .collect();
            let rule = Rule {
                name,
                action,
                principals: self.globs(&rf, "principals"),
                namespaces: self.globs(&rf, "namespaces"),
                services: self.globs(&rf, "services"),
                paths: self.globs(&rf, "paths"),
                methods,
            };
            match action {
                Action::Allow => auth.allow.push(rule),
                Action::Deny => auth.deny.push(rule),
            }
        }
        Some(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shell_stars() {
        let cases = [
            ("/admin/*", "/admin/x/y", true),
            ("/admin/*", "/admin", false),
            ("*", "", true),
            ("spiffe://*/ns/ops/sa/*", "spiffe://td/ns/ops/sa/a", true),
            ("spiffe://*/ns/ops/sa/*", "spiffe://td/ns/shop/sa/a", false),
            ("*.css", "/a/b.css", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("/exact", "/exact", true),
            ("/exact", "/exact/", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }

    fn policy(doc: &str) -> Authorization {
        let value: Value = serde_yaml::from_str(doc).unwrap();
        let mut d = Decoder::default();
        let a = d.authorization(&value, "authorization").unwrap();
        assert!(d.issues.is_empty(), "{:?}", d.issues);
        a
    }

    #[test]
    fn deny_comes_before_allow_and_allow_rules_close_the_door() {
        let a = policy(
            "rules:\n\
             - {name: allow-frontend, action: allow, services: [frontend]}\n\
             - {name: no-admin, action: deny, paths: ['/admin/*']}\n",
        );
        let frontend = SpiffeId::parse("spiffe://td/ns/shop/sa/frontend").unwrap();
        let other = SpiffeId::parse("spiffe://td/ns/shop/sa/batch").unwrap();
        let get = Method::GET;
        assert_eq!(
            a.decide(Some(&frontend), Some((&get, "/items"))),
            Decision::Allow("allow-frontend")
        );
        assert_eq!(
            a.decide(Some(&frontend), Some((&get, "/admin/x"))),
            Decision::Deny("no-admin")
        );
        assert_eq!(
            a.decide(Some(&other), Some((&get, "/items"))),
            Decision::Deny("no ALLOW rule matched")
        );
        assert_eq!(
            a.decide(None, Some((&get, "/items"))),
            Decision::Deny("no ALLOW rule matched")
        );
        // TCP: the path-scoped DENY applies to the whole connection.
        assert_eq!(a.decide(Some(&frontend), None), Decision::Deny("no-admin"));
    }

    #[test]
    fn defaults_apply_without_allow_rules() {
        let deny_all = policy("default: deny\n");
        assert_eq!(deny_all.decide(None, None), Decision::Deny("default deny"));
        let allow = policy("rules: [{action: deny, methods: [DELETE]}]\n");
        assert_eq!(
            allow.decide(None, Some((&Method::GET, "/"))),
            Decision::Allow("default allow")
        );
        assert_eq!(
            allow.decide(None, Some((&Method::DELETE, "/"))),
            Decision::Deny("rules[0]")
        );
    }

    #[test]
    fn bad_rules_are_reported_with_paths() {
        let value: Value = serde_yaml::from_str(
            "default: maybe\nrules: [{action: permit}, {action: allow, methods: ['GE T'], paths: ['']}]\n",
        )
        .unwrap();
        let mut d = Decoder::default();
        d.authorization(&value, "l.authorization");
        let paths: Vec<&str> = d.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "l.authorization.default",
                "l.authorization.rules[0].action",
                "l.authorization.rules[1].methods[0]",
                "l.authorization.rules[1].paths[0]"
            ]
        );
    }
}
