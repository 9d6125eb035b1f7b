//! A cluster's section: its endpoints, load balancer, upstream protocol,
//! connect timeout, outlier detection and mesh mTLS.

use std::collections::HashSet;
use std::time::Duration;

use http::header::HeaderName;
use serde_json::Value;

use super::decode::{join, Decoder, MAX_WEIGHT};
use super::health::{HealthCheckConfig, LocalityConfig, OutlierConfig};
use super::resilience::{CircuitBreakers, RetryBudget};
use super::tls::ClusterTls;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
    /// Latency-aware: the cheaper of two random endpoints, by the peak-EWMA
    /// of their response times times their requests in flight.
    PeakEwma,
}

impl LbPolicy {
    pub const ALL: [(&'static str, LbPolicy); 5] = [
        ("round_robin", LbPolicy::RoundRobin),
        ("least_request", LbPolicy::LeastRequest),
        ("random", LbPolicy::Random),
        ("ring_hash", LbPolicy::RingHash),
        ("peak_ewma", LbPolicy::PeakEwma),
    ];

    pub fn name(self) -> &'static str {
        LbPolicy::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(n, _)| n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub name: String,
    pub lb: LbPolicy,
    /// ring_hash only: the request header hashed; the client address when absent.
    pub hash_header: Option<HeaderName>,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub endpoints: Vec<EndpointConfig>,
    pub outlier: OutlierConfig,
    pub health_check: Option<HealthCheckConfig>,
    pub locality: Option<LocalityConfig>,
    /// Limits on what this proxy sends to the cluster at once.
    pub circuit_breakers: CircuitBreakers,
    /// How many retries the cluster's requests may add.
    pub retry_budget: RetryBudget,
    /// Mesh mTLS to the endpoints, or TLS origination to a server outside the mesh.
    pub tls: Option<ClusterTls>,
    /// No endpoints: each call goes to its request's authority or its
    /// connection's original destination.
    pub original_destination: bool,
    /// The mesh service behind it ("namespace/name"): the destination in
    /// metrics and spans. Default: the cluster's name.
    pub service: String,
    /// How long a resolved endpoint name is used before it is resolved
    /// again (see `dns::Resolver`).
    pub dns_refresh: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// `host:port`; an IP literal, or a name resolved through the cache.
    pub address: String,
    pub weight: u32,
    pub zone: Option<String>,
}

// === impl Decoder (cluster) ===

impl Decoder {
    pub(super) fn cluster(
        &mut self,
        v: &Value,
        path: &str,
        seen: &mut HashSet<String>,
    ) -> Option<ClusterConfig> {
        let f = self.object(
            v,
            path,
            &[
                "name",
                "lb",
                "hash_header",
                "protocol",
                "connect_timeout_ms",
                "endpoints",
                "outlier_detection",
                "health_check",
                "locality",
                "circuit_breakers",
                "retry_budget",
                "tls",
                "service",
                "original_destination",
                "dns_refresh_ms",
            ],
        )?;
        let name = self.name(&f, seen, "cluster");
        let lb = match self.string(&f, "lb", false) {
            None => LbPolicy::RoundRobin,
            Some(name) => match LbPolicy::ALL.iter().find(|(n, _)| *n == name) {
                Some((_, p)) => *p,
                None => {
                    let names: Vec<&str> = LbPolicy::ALL.iter().map(|(n, _)| *n).collect();
                    self.err(
                        f.at("lb"),
                        format!("'{name}' is not one of: {}", names.join(", ")),
                    );
                    LbPolicy::RoundRobin
                }
            },
        };
        let hash_header = self.string(&f, "hash_header", false).and_then(|h| {
            if lb != LbPolicy::RingHash {
                self.err(f.at("hash_header"), "only used with lb: ring_hash");
            }
            HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| {
                    self.err(
                        f.at("hash_header"),
                        format!("'{h}' is not a valid header name"),
                    )
                })
                .ok()
        });
        let protocol = match self.string(&f, "protocol", false).as_deref() {
            None | Some("http1") => UpstreamProtocol::Http1,
            Some("http2") => UpstreamProtocol::Http2,
            Some(other) => {
                self.err(
                    f.at("protocol"),
                    format!("'{other}' is not one of: http1, http2"),
                );
                UpstreamProtocol::Http1
            }
        };
        let connect_timeout = self.millis(&f, "connect_timeout_ms", 1_000);
        let dns_refresh = self.millis(&f, "dns_refresh_ms", 5_000);
        let tls = f.get("tls").and_then(|t| self.cluster_tls(t, &f.at("tls")));
        let original_destination = self.boolean(&f, "original_destination").unwrap_or(false);
        if original_destination {
            for key in ["endpoints", "health_check", "locality"] {
                if f.get(key).is_some() {
                    self.err(
                        f.at(key),
                        "not allowed with original_destination: each call picks its own destination",
                    );
                }
            }
        }
        let mut seen_eps = HashSet::new();
        let endpoints = self
            .list(&f, "endpoints", !original_destination)
            .into_iter()
            .filter_map(|(p, v)| {
                let ep = self.endpoint(v, &p)?;
                if !seen_eps.insert(ep.address.clone()) {
                    self.err(
                        join(&p, "address"),
                        format!("duplicate endpoint '{}'", ep.address),
                    );
                }
                Some(ep)
            })
            .collect();
        let outlier = f
            .get("outlier_detection")
            .map(|o| self.outlier(o, &f.at("outlier_detection")))
            .unwrap_or_default();
        let health_check = f
            .get("health_check")
            .and_then(|h| self.health_check(h, &f.at("health_check")));
        let locality = f
            .get("locality")
            .and_then(|l| self.locality(l, &f.at("locality")));
        let circuit_breakers = f
            .get("circuit_breakers")
            .map(|c| self.circuit_breakers(c, &f.at("circuit_breakers")))
            .unwrap_or_default();
        let retry_budget = f
            .get("retry_budget")
            .map(|b| self.retry_budget(b, &f.at("retry_budget")))
            .unwrap_or_default();
        let service = self.string(&f, "service", false);
        let name = name?;
        Some(ClusterConfig {
            service: service.unwrap_or_else(|| name.clone()),
            name,
            lb,
            hash_header,
            protocol,
            connect_timeout,
            dns_refresh,
            endpoints,
            outlier,
            health_check,
            locality,
            circuit_breakers,
            retry_budget,
            tls,
            original_destination,
        })
    }

    fn endpoint(&mut self, v: &Value, path: &str) -> Option<EndpointConfig> {
        let f = self.object(v, path, &["address", "weight", "zone"])?;
        let address = self.string(&f, "address", true)?;
        let port_ok = address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !port_ok {
            self.err(
                f.at("address"),
                format!("'{address}' is not a host:port address"),
            );
        }
        let weight = self.uint(&f, "weight", 1, MAX_WEIGHT).unwrap_or(1) as u32;
        let zone = self.string(&f, "zone", false);
        Some(EndpointConfig {
            address,
            weight,
            zone,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::{Config, LbPolicy, UpstreamProtocol};

    fn cluster_issues(cluster: &str) -> Vec<String> {
        issues(&format!("clusters:\n - {cluster}\n"))
    }

    #[test]
    fn accepts_every_cluster_field() {
        let c = Config::parse(
            "clusters:\n - {name: a, lb: ring_hash, hash_header: X-User, protocol: http2, connect_timeout_ms: 250, dns_refresh_ms: 750, \
             outlier_detection: {consecutive_gateway_errors: 3, base_ejection_ms: 500}, endpoints: [{address: 'h:1', weight: 2}]}\n",
        )
        .expect("valid");
        let a = &c.clusters[0];
        assert_eq!(a.lb, LbPolicy::RingHash);
        assert_eq!(a.hash_header.as_ref().map(|h| h.as_str()), Some("x-user"));
        assert_eq!(a.protocol, UpstreamProtocol::Http2);
        assert_eq!(a.connect_timeout.as_millis(), 250);
        assert_eq!(a.dns_refresh.as_millis(), 750);
        assert_eq!(c.effective()["clusters"][0]["dns_refresh_ms"], 750);
        assert_eq!(a.outlier.consecutive_gateway_errors, 3);
        assert_eq!(a.outlier.base_ejection.as_millis(), 500);
        assert_eq!(a.endpoints[0].weight, 2);
    }

    #[test]
    fn rejects_bad_clusters_with_paths() {
        let got = cluster_issues(
            "{name: 'a b', lb: fastest, hash_header: x-user, protocol: h3, connect_timeout_ms: 0, dns_refresh_ms: 0, \
             outlier_detection: {consecutive_5xx: -1, colour: red}, \
             endpoints: [{address: nowhere}, {address: 'h:1', weight: 0}, {address: 'h:1'}]}",
        );
        for want in [
            "clusters[0].name: 'a b' may only hold",
            "clusters[0].lb: 'fastest' is not one of",
            "clusters[0].hash_header: only used with lb: ring_hash",
            "clusters[0].protocol: 'h3' is not one of: http1, http2",
            "clusters[0].connect_timeout_ms: 0 is out of range",
            "clusters[0].dns_refresh_ms: 0 is out of range",
            "clusters[0].outlier_detection.colour: unknown field",
            "clusters[0].outlier_detection.consecutive_5xx: expected a whole number",
            "clusters[0].endpoints[0].address: 'nowhere' is not a host:port address",
            "clusters[0].endpoints[1].weight: 0 is out of range",
            "clusters[0].endpoints[2].address: duplicate endpoint 'h:1'",
        ] {
            assert!(has(&got, want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 11, "{got:?}");
        assert_eq!(
            cluster_issues("{name: a}"),
            ["clusters[0].endpoints: required"]
        );
    }
}
