//! Identity-based authorization on a listener: rules that allow or deny by
//! the peer's SPIFFE ID (principal, namespace, service), the request path
//! and method. DENY rules are checked first; when any ALLOW rule exists the
//! request must match one; otherwise the listener's default decides.

use http::Method;

use crate::config::{Action, AuthorizationConfig, RuleConfig};
use crate::pki::SpiffeId;

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

    /// The pattern as written.
    pub fn pattern(&self) -> String {
        self.parts.join("*")
    }

    pub fn matches(&self, text: &str) -> bool {
        if self.parts.len() == 1 {
            return self.parts[0] == text;
        }
        let (first, last) = (&self.parts[0], &self.parts[self.parts.len() - 1]);
        // strip_suffix, not slicing at `len - last.len()`: that index may fall
        // inside a multi-byte character (found by the authz fuzz target).
        let Some(mut rest) = text
            .strip_prefix(first.as_str())
            .and_then(|r| r.strip_suffix(last.as_str()))
        else {
            return false;
        };
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

/// The first condition of a rule that a request does not meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    Principal,
    Namespace,
    Service,
    Path,
    Method,
    /// An ALLOW rule that names a path or method, on a TCP connection.
    NoOperation,
}

fn any(globs: &[Glob], value: Option<&str>) -> bool {
    globs.is_empty() || value.is_some_and(|v| globs.iter().any(|g| g.matches(v)))
}

fn globs(patterns: &[String]) -> Vec<Glob> {
    patterns.iter().map(|p| Glob::new(p)).collect()
}

// === impl Rule ===

impl Rule {
    fn new(cfg: &RuleConfig) -> Rule {
        Rule {
            name: cfg.name.clone(),
            action: cfg.action,
            principals: globs(&cfg.principals),
            namespaces: globs(&cfg.namespaces),
            services: globs(&cfg.services),
            paths: globs(&cfg.paths),
            methods: cfg.methods.clone(),
        }
    }

    fn has_source(&self) -> bool {
        !(self.principals.is_empty() && self.namespaces.is_empty() && self.services.is_empty())
    }

    fn has_operation(&self) -> bool {
        !(self.paths.is_empty() && self.methods.is_empty())
    }

    /// None when the rule matches; else the first condition that fails, in
    /// the order principal, namespace, service, path, method.
    pub fn miss(&self, peer: Option<&SpiffeId>, op: Operation<'_>) -> Option<Miss> {
        // A source condition needs a verified peer: plaintext matches none.
        if self.has_source() {
            if !any(&self.principals, peer.map(SpiffeId::as_str)) {
                return Some(Miss::Principal);
            }
            if !any(&self.namespaces, peer.and_then(SpiffeId::namespace)) {
                return Some(Miss::Namespace);
            }
            if !any(&self.services, peer.and_then(SpiffeId::service)) {
                return Some(Miss::Service);
            }
        }
        match op {
            Some((method, path)) => {
                if !any(&self.paths, Some(path)) {
                    Some(Miss::Path)
                } else if !(self.methods.is_empty() || self.methods.contains(method)) {
                    Some(Miss::Method)
                } else {
                    None
                }
            }
            // TCP has no path or method: an ALLOW that asks for one cannot be met;
            // a DENY that names one still applies (the stricter reading).
            None if self.action == Action::Allow && self.has_operation() => Some(Miss::NoOperation),
            None => None,
        }
    }

    fn matches(&self, peer: Option<&SpiffeId>, op: Operation<'_>) -> bool {
        self.miss(peer, op).is_none()
    }

    /// The patterns (or methods) of the condition `miss` names, as configured.
    pub fn wanted(&self, miss: Miss) -> Vec<String> {
        let patterns = |g: &[Glob]| g.iter().map(Glob::pattern).collect();
        match miss {
            Miss::Principal => patterns(&self.principals),
            Miss::Namespace => patterns(&self.namespaces),
            Miss::Service => patterns(&self.services),
            Miss::Path => patterns(&self.paths),
            Miss::Method => self.methods.iter().map(ToString::to_string).collect(),
            Miss::NoOperation => Vec::new(),
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

// === impl Authorization ===

impl Authorization {
    pub fn new(cfg: &AuthorizationConfig) -> Authorization {
        let of = |action| {
            cfg.rules
                .iter()
                .filter(|r| r.action == action)
                .map(Rule::new)
                .collect()
        };
        Authorization {
            default_allow: cfg.default_allow,
            deny: of(Action::Deny),
            allow: of(Action::Allow),
        }
    }

    /// Every rule in the order they are tried: DENY rules, then ALLOW rules.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.deny.iter().chain(&self.allow)
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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
            ("*b", "é", false),
            ("/*/b", "/é/b", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }

    /// The authorization of a one-listener config with this section.
    fn policy(section: &str) -> Authorization {
        let doc = format!("listeners:\n - name: l\n   address: 127.0.0.1:1\n   protocol: tcp\n   cluster: c\n   authorization:\n{}\nclusters: [{{name: c, endpoints: []}}]\n",
            section.lines().map(|l| format!("     {l}\n")).collect::<String>());
        let config = Config::parse(&doc).expect("valid");
        Authorization::new(config.listeners[0].authorization.as_ref().expect("present"))
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
}
