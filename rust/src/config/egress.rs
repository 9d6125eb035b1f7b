//! A listener's `egress` section: what happens to a destination that no
//! route (http) or listener (transparent) claims, and which CONNECT targets
//! an http listener tunnels to.

use std::collections::HashSet;

use serde_json::Value;

use super::decode::Decoder;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressPolicy {
    /// Unclaimed destinations are reached as they are (an original-destination call).
    AllowAny,
    /// Unclaimed destinations are refused: 403, or a closed connection.
    RegistryOnly,
}

impl EgressPolicy {
    pub const ALL: [(&'static str, EgressPolicy); 2] = [
        ("allow_any", EgressPolicy::AllowAny),
        ("registry_only", EgressPolicy::RegistryOnly),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressConfig {
    pub policy: EgressPolicy,
    /// http listeners only: CONNECT targets allowed whatever the policy.
    pub connect: Vec<ConnectRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRule {
    /// Lower-cased; `*.example.com` matches any name below it.
    pub host: String,
    pub port: u16,
    /// Where the tunnel goes; None: to the CONNECT's own host:port.
    pub cluster: Option<String>,
    /// Refused (403, counted), whatever the policy: a host this caller may not reach.
    pub deny: bool,
}

/// A host name as a route or connect rule gives it: letters, digits, `-`
/// and `.`, or an IP literal, optionally behind one leading `*.`.
pub(super) fn valid_host_pattern(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']'))
}

// === impl Decoder (egress) ===

impl Decoder {
    /// `http`: the listener is an http one (only those take `connect`).
    pub(super) fn egress(
        &mut self,
        v: &Value,
        path: &str,
        http: bool,
        clusters: &HashSet<String>,
    ) -> Option<EgressConfig> {
        let f = self.object(v, path, &["policy", "connect"])?;
        let policy = self.string(&f, "policy", true).and_then(|p| {
            let found = EgressPolicy::ALL.iter().find(|(n, _)| *n == p);
            if found.is_none() {
                self.err(
                    f.at("policy"),
                    format!("'{p}' is not one of: allow_any, registry_only"),
                );
            }
            found.map(|(_, policy)| *policy)
        });
        if !http && f.get("connect").is_some() {
            self.err(f.at("connect"), "only http listeners take connect");
        }
        let connect = self
            .list(&f, "connect", false)
            .into_iter()
            .filter_map(|(p, v)| self.connect_rule(v, &p, clusters))
            .collect();
        Some(EgressConfig {
            policy: policy?,
            connect,
        })
    }

    fn connect_rule(
        &mut self,
        v: &Value,
        path: &str,
        clusters: &HashSet<String>,
    ) -> Option<ConnectRule> {
        let f = self.object(v, path, &["host", "port", "cluster", "deny"])?;
        let host = self
            .string(&f, "host", true)
            .map(|h| h.to_ascii_lowercase());
        if let Some(h) = host.as_deref().filter(|h| !valid_host_pattern(h)) {
            self.err(
                f.at("host"),
                format!("'{h}' is not a host name or *.suffix"),
            );
        }
        if f.get("port").is_none() {
            self.err(f.at("port"), "required");
        }
        let port = self.uint(&f, "port", 1, 65_535);
        let cluster = self.string(&f, "cluster", false);
        if let Some(c) = cluster.as_deref().filter(|c| !clusters.contains(*c)) {
            self.err(f.at("cluster"), format!("unknown cluster '{c}'"));
        }
        let deny = self.boolean(&f, "deny").unwrap_or(false);
        if deny && cluster.is_some() {
            self.err(f.at("deny"), "a denied target takes no cluster");
        }
        Some(ConnectRule {
            host: host?,
            port: port? as u16,
            cluster,
            deny,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::{Config, EgressPolicy, ListenerKind};

    const CLUSTERS: &str = "clusters: [{name: a, endpoints: []}]\n";

    #[test]
    fn egress_sections_are_checked_with_their_paths() {
        let got = issues(&format!(
            "listeners:\n \
             - {{name: p, address: 127.0.0.1:1, routes: [], egress: {{policy: maybe, connect: [{{host: 'bad host', port: 0, cluster: nope}}, {{port: 443}}, {{host: x.example, port: 443, cluster: a, deny: true}}]}}}}\n \
             - {{name: t, address: 127.0.0.1:2, protocol: transparent, egress: {{connect: []}}}}\n \
             - {{name: d, address: 127.0.0.1:3, protocol: tcp, cluster: a, egress: {{policy: allow_any}}}}\n{CLUSTERS}"
        ));
        for want in [
            "listeners[0].egress.policy: 'maybe' is not one of: allow_any, registry_only",
            "listeners[0].egress.connect[0].host: 'bad host' is not a host name",
            "listeners[0].egress.connect[0].port: 0 is out of range",
            "listeners[0].egress.connect[0].cluster: unknown cluster 'nope'",
            "listeners[0].egress.connect[1].host: required",
            "listeners[0].egress.connect[2].deny: a denied target takes no cluster",
            "listeners[1].egress.policy: required",
            "listeners[1].egress.connect: only http listeners take connect",
            "listeners[2].egress: only http and transparent listeners take egress",
        ] {
            assert!(has(&got, want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 9, "{got:?}");
    }

    #[test]
    fn a_good_egress_section_decodes() {
        let c = Config::parse(&format!(
            "listeners:\n \
             - {{name: p, address: 127.0.0.1:1, routes: [], egress: {{policy: registry_only, connect: [{{host: '*.Example.com', port: 443, cluster: a}}, {{host: no.example, port: 443, deny: true}}]}}}}\n \
             - {{name: t, address: 127.0.0.1:2, protocol: transparent, egress: {{policy: allow_any}}}}\n{CLUSTERS}"
        ))
        .unwrap();
        let e = c.listeners[0].egress.as_ref().unwrap();
        assert_eq!(e.policy, EgressPolicy::RegistryOnly);
        assert_eq!(e.connect[0].host, "*.example.com");
        assert_eq!(e.connect[0].cluster.as_deref(), Some("a"));
        assert!(!e.connect[0].deny && e.connect[1].deny);
        assert_eq!(c.listeners[1].kind, ListenerKind::Transparent);
        assert_eq!(
            c.listeners[1].egress.as_ref().map(|e| e.policy),
            Some(EgressPolicy::AllowAny)
        );
    }

    #[test]
    fn deny_routes_forward_nothing() {
        let got = route_issues(&[
            "{match: {host: blocked.test}, deny: true, backends: [{cluster: a}], redirect: {host: x}}",
            "{deny: 1, backends: [{cluster: a}]}",
        ]);
        for want in [
            "listeners[0].routes[0].backends: not allowed with deny",
            "listeners[0].routes[0].redirect: not allowed with deny",
            "listeners[0].routes[1].deny: expected true or false",
        ] {
            assert!(has(&got, want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 3, "{got:?}");
        let c =
            Config::parse("listeners: [{name: p, address: 127.0.0.1:1, routes: [{deny: true}]}]\n")
                .unwrap();
        let ListenerKind::Http { routes } = &c.listeners[0].kind else {
            panic!()
        };
        assert!(routes[0].deny && routes[0].backends.is_empty());
    }

    #[test]
    fn original_destination_clusters_take_no_endpoints() {
        let got = issues(
            "clusters:\n - {name: a, original_destination: true, endpoints: [{address: 'h:1'}]}\n \
             - {name: b, original_destination: true}\n - {name: c}\n",
        );
        assert_eq!(
            got.iter()
                .map(|i| i.split(':').next().unwrap_or(""))
                .collect::<Vec<_>>(),
            ["clusters[0].endpoints", "clusters[2].endpoints"],
            "{got:?}"
        );
        assert!(has(
            &got,
            "clusters[0].endpoints: not allowed with original_destination"
        ));
    }
}
