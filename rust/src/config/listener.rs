//! A listener's section: its address, protocol (http routes or tcp
//! backends), server TLS and authorization.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde_json::Value;

use super::authorization::AuthorizationConfig;
use super::decode::Decoder;
use super::egress::EgressConfig;
use super::limits::ListenerLimits;
use super::route::{BackendConfig, RouteConfig};
use super::telemetry::{AccessLogConfig, Direction};
use super::tls::ListenerTls;
use super::traffic::{FaultConfig, FaultSite, RateLimitConfig};

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    /// Bound, or (`bind: false`) the original destination a transparent
    /// listener hands over to this listener.
    pub address: SocketAddr,
    /// False: no socket; reached only through a transparent listener.
    pub bind: bool,
    pub kind: ListenerKind,
    pub tls: Option<ListenerTls>,
    pub authorization: Option<AuthorizationConfig>,
    /// HTTP: requests (before routing); TCP: new connections.
    pub rate_limit: Option<RateLimitConfig>,
    /// TCP only: delays and resets of new connections.
    pub fault: Option<FaultConfig>,
    pub direction: Direction,
    pub access_log: Option<AccessLogConfig>,
    pub limits: ListenerLimits,
    /// http and transparent listeners: what unclaimed destinations get.
    pub egress: Option<EgressConfig>,
    /// tcp only (then with no backends): every connection is closed at once.
    pub deny: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ListenerKind {
    Http {
        routes: Vec<RouteConfig>,
    },
    /// `cluster: NAME` is read as one backend of weight 1; empty with `deny`.
    Tcp {
        backends: Vec<BackendConfig>,
    },
    /// Each connection is served by the listener whose address is its
    /// original destination (SO_ORIGINAL_DST), else by the egress policy.
    Transparent,
}

// === impl Decoder (listener) ===

impl Decoder {
    pub(super) fn listener(
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
                "rate_limit",
                "fault",
                "direction",
                "access_log",
                "limits",
                "bind",
                "deny",
                "egress",
            ],
        )?;
        let name = self.name(&f, seen, "listener");
        let address = self.socket_addr(&f, "address");
        let protocol = self
            .string(&f, "protocol", false)
            .unwrap_or_else(|| "http".into());
        let bind = self.boolean(&f, "bind").unwrap_or(true);
        let deny = self.boolean(&f, "deny").unwrap_or(false);
        if deny && protocol != "tcp" {
            self.err(
                f.at("deny"),
                "only tcp listeners take deny; http ones take it per route",
            );
        }
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
            "tcp" if deny => {
                for key in ["routes", "cluster", "backends"] {
                    if f.get(key).is_some() {
                        self.err(
                            f.at(key),
                            "not allowed with deny: no connection is forwarded",
                        );
                    }
                }
                Some(ListenerKind::Tcp { backends: vec![] })
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
            "transparent" => {
                for key in [
                    "routes",
                    "cluster",
                    "backends",
                    "tls",
                    "fault",
                    "authorization",
                    "rate_limit",
                ] {
                    if f.get(key).is_some() {
                        self.err(
                            f.at(key),
                            "transparent listeners hand each connection to the listener of its original destination",
                        );
                    }
                }
                if !bind {
                    self.err(f.at("bind"), "a transparent listener must be bound");
                }
                Some(ListenerKind::Transparent)
            }
            other => {
                self.err(
                    f.at("protocol"),
                    format!("'{other}' is not one of: http, tcp, transparent"),
                );
                // What is given is checked anyway: a bad protocol must not hide other problems.
                for (p, v) in self.list(&f, "routes", false) {
                    self.route(v, &p, clusters);
                }
                if let Some(c) = self.string(&f, "cluster", false) {
                    if !clusters.contains(&c) {
                        self.err(f.at("cluster"), format!("unknown cluster '{c}'"));
                    }
                }
                if f.get("backends").is_some() {
                    self.backends(&f, false, clusters);
                }
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
        let rate_limit = f
            .get("rate_limit")
            .and_then(|r| self.rate_limit(r, &f.at("rate_limit")));
        let fault = match (f.get("fault"), &kind) {
            (None, _) => None,
            (Some(x), Some(ListenerKind::Tcp { .. })) => {
                self.fault(x, &f.at("fault"), FaultSite::TcpListener)
            }
            (Some(_), _) => {
                if protocol == "http" {
                    self.err(
                        f.at("fault"),
                        "only tcp listeners take a fault; http ones take it per route",
                    );
                }
                None
            }
        };
        let direction = self.direction(&f, tls.as_ref().is_some_and(ListenerTls::is_mesh));
        let access_log = f
            .get("access_log")
            .and_then(|a| self.access_log(a, &f.at("access_log")));
        let limits = self.limits(
            f.get("limits"),
            &f.at("limits"),
            protocol == "tcp" || protocol == "transparent",
        );
        let egress = f.get("egress").and_then(|e| {
            if protocol != "http" && protocol != "transparent" {
                self.err(
                    f.at("egress"),
                    "only http and transparent listeners take egress",
                );
                return None;
            }
            self.egress(e, &f.at("egress"), protocol == "http", clusters)
        });
        if !bind && address.is_some_and(|a| a.port() == 0) {
            self.err(
                f.at("address"),
                "an unbound listener needs the port it is reached on",
            );
        }
        Some(ListenerConfig {
            name: name?,
            address: address?,
            kind: kind?,
            tls,
            authorization,
            rate_limit,
            fault,
            direction,
            access_log,
            limits,
            egress,
            deny,
            bind,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

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
    fn a_bad_protocol_hides_no_other_problem() {
        let got = issues(
            "listeners:\n - {name: web, address: 127.0.0.1:1, protocol: htp, routes: [{backends: [{cluster: nope}]}]}\n \
             - {name: db, address: 127.0.0.1:2, protocol: tpc, cluster: gone}\n\
             clusters: [{name: a, endpoints: []}]\n",
        );
        for want in [
            "listeners[0].protocol: 'htp' is not one of: http, tcp, transparent",
            "listeners[0].routes[0].backends[0].cluster: unknown cluster 'nope'",
            "listeners[1].protocol: 'tpc' is not one of: http, tcp, transparent",
            "listeners[1].cluster: unknown cluster 'gone'",
        ] {
            assert!(
                got.iter().any(|i| i.starts_with(want)),
                "missing {want:?} in {got:?}"
            );
        }
    }

    #[test]
    fn deny_bind_and_transparent_are_checked() {
        let got = issues(
            "listeners:\n \
             - {name: d, address: 127.0.0.1:1, protocol: tcp, deny: true, cluster: a}\n \
             - {name: h, address: 127.0.0.1:2, deny: true, routes: []}\n \
             - {name: t, address: 127.0.0.1:3, protocol: transparent, bind: false, routes: []}\n \
             - {name: v, address: 240.240.0.9:0, bind: false, routes: []}\n \
             - {name: w, address: 240.240.0.9:80, bind: no, routes: []}\n\
             clusters: [{name: a, endpoints: []}]\n",
        );
        for want in [
            "listeners[0].cluster: not allowed with deny",
            "listeners[1].deny: only tcp listeners take deny",
            "listeners[2].routes: transparent listeners hand each connection",
            "listeners[2].bind: a transparent listener must be bound",
            "listeners[3].address: an unbound listener needs the port",
            "listeners[4].bind: expected true or false",
        ] {
            assert!(has(&got, want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 6, "{got:?}");
    }
}
