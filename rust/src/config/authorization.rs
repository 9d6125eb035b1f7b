//! A listener's `authorization` section: rules that allow or deny by the
//! peer's SPIFFE ID (principal, namespace, service), the request path and
//! method, and the default when no ALLOW rule exists. `policy::authz`
//! compiles it into the decision the data path takes.

use http::Method;
use serde_json::Value;

use super::decode::{Decoder, Fields};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// One rule as configured: every field given must match; an empty field
/// matches anything. Patterns are `*` globs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleConfig {
    pub name: String,
    pub action: Action,
    pub principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub services: Vec<String>,
    pub paths: Vec<String>,
    pub methods: Vec<Method>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationConfig {
    /// What decides when no rule does and there is no ALLOW rule.
    pub default_allow: bool,
    /// In the order given.
    pub rules: Vec<RuleConfig>,
}

// === impl Decoder (authorization) ===

impl Decoder {
    fn patterns(&mut self, f: &Fields<'_>, key: &str) -> Vec<String> {
        self.list(f, key, false)
            .into_iter()
            .filter_map(|(p, v)| match v.as_str() {
                Some(s) if !s.is_empty() => Some(s.to_string()),
                _ => {
                    self.err(p, "expected a non-empty pattern");
                    None
                }
            })
            .collect()
    }

    pub(super) fn authorization(&mut self, v: &Value, path: &str) -> Option<AuthorizationConfig> {
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
        let mut auth = AuthorizationConfig {
            default_allow,
            rules: Vec::new(),
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
            auth.rules.push(RuleConfig {
                name,
                action,
                principals: self.patterns(&rf, "principals"),
                namespaces: self.patterns(&rf, "namespaces"),
                services: self.patterns(&rf, "services"),
                paths: self.patterns(&rf, "paths"),
                methods,
            });
        }
        Some(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rules_are_reported_with_paths() {
        let value: Value = yaml_serde::from_str(
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

    #[test]
    fn rules_keep_their_order_and_default_names() {
        let value: Value = yaml_serde::from_str(
            "default: deny\nrules: [{action: deny, methods: [DELETE]}, {name: web, action: allow, services: ['w*']}]\n",
        )
        .unwrap();
        let mut d = Decoder::default();
        let a = d.authorization(&value, "authorization").unwrap();
        assert!(d.issues.is_empty(), "{:?}", d.issues);
        assert!(!a.default_allow);
        assert_eq!(a.rules[0].name, "rules[0]");
        assert_eq!(a.rules[0].methods, [Method::DELETE]);
        assert_eq!(a.rules[1].action, Action::Allow);
        assert_eq!(a.rules[1].services, ["w*"]);
    }
}
