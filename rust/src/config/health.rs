//! A cluster's health sections: passive `outlier_detection` (answers and
//! failures seen by real requests), active `health_check` (probes on a
//! timer) and `locality` (which endpoints a proxy prefers while they are
//! healthy). An endpoint takes traffic only while both kinds of health say so.

use std::time::Duration;

use serde_json::{json, Value};

use super::decode::Decoder;

/// Passive health. An endpoint with too many failures in a row is ejected
/// for base x (its number of ejections), at most `max_ejection`; never more
/// than `max_ejection_percent` of the endpoints at once, though one always
/// may be. Below `panic_threshold_percent` healthy, the cluster balances
/// over every endpoint, as a few healthy ones would be swamped anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// 5xx answers (gateway errors included) in a row; 0 disables.
    pub consecutive_5xx: u32,
    /// Connect failures, resets and 502/503/504 in a row; 0 disables.
    pub consecutive_gateway_errors: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejection_percent: u32,
    pub panic_threshold_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: 5,
            consecutive_gateway_errors: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
            panic_threshold_percent: 50,
        }
    }
}

impl OutlierConfig {
    pub fn to_json(&self) -> Value {
        json!({
            "consecutive_5xx": self.consecutive_5xx,
            "consecutive_gateway_errors": self.consecutive_gateway_errors,
            "base_ejection_ms": self.base_ejection.as_millis() as u64,
            "max_ejection_ms": self.max_ejection.as_millis() as u64,
            "max_ejection_percent": self.max_ejection_percent,
            "panic_threshold_percent": self.panic_threshold_percent,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProbe {
    /// GET `path`; passes on one of `expected` (any 2xx when empty).
    Http { path: String, expected: Vec<u16> },
    /// Passes when a connection (mTLS included, for mesh clusters) opens.
    Tcp,
}

/// Active health checks, run by every proxy for the clusters it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub probe: HealthProbe,
    pub interval: Duration,
    /// A random extra wait, up to this, before each check.
    pub jitter: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl HealthCheckConfig {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "interval_ms": self.interval.as_millis() as u64,
            "jitter_ms": self.jitter.as_millis() as u64,
            "timeout_ms": self.timeout.as_millis() as u64,
            "healthy_threshold": self.healthy_threshold,
            "unhealthy_threshold": self.unhealthy_threshold,
        });
        match &self.probe {
            HealthProbe::Http { path, expected } => {
                v["type"] = "http".into();
                v["path"] = path.as_str().into();
                v["expected_statuses"] = expected.clone().into();
            }
            HealthProbe::Tcp => v["type"] = "tcp".into(),
        }
        v
    }

    /// True when `status` passes an HTTP check.
    pub fn passes(&self, status: u16) -> bool {
        match &self.probe {
            HealthProbe::Http { expected, .. } if !expected.is_empty() => {
                expected.contains(&status)
            }
            _ => (200..300).contains(&status),
        }
    }
}

/// Which endpoints this proxy prefers: those in its own zone while enough
/// of them are healthy, then the `failover` zones in order, then any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalityConfig {
    pub zone: String,
    pub failover: Vec<String>,
    pub min_healthy_percent: u32,
}

impl LocalityConfig {
    pub fn to_json(&self) -> Value {
        json!({
            "zone": self.zone,
            "failover": self.failover,
            "min_healthy_percent": self.min_healthy_percent,
        })
    }
}

// === impl Decoder (health) ===

impl Decoder {
    pub(super) fn outlier(&mut self, v: &Value, path: &str) -> OutlierConfig {
        let d = OutlierConfig::default();
        let keys = [
            "consecutive_5xx",
            "consecutive_gateway_errors",
            "base_ejection_ms",
            "max_ejection_ms",
            "max_ejection_percent",
            "panic_threshold_percent",
        ];
        let Some(f) = self.object(v, path, &keys) else {
            return d;
        };
        let mut count =
            |key, default: u32, max| self.uint(&f, key, 0, max).map_or(default, |n| n as u32);
        let consecutive_5xx = count("consecutive_5xx", d.consecutive_5xx, 1_000);
        let consecutive_gateway_errors = count(
            "consecutive_gateway_errors",
            d.consecutive_gateway_errors,
            1_000,
        );
        let max_ejection_percent = count("max_ejection_percent", d.max_ejection_percent, 100);
        let panic_threshold_percent =
            count("panic_threshold_percent", d.panic_threshold_percent, 100);
        let base_ejection = self.millis(&f, "base_ejection_ms", d.base_ejection.as_millis() as u64);
        let max_ejection = self.millis(&f, "max_ejection_ms", d.max_ejection.as_millis() as u64);
        if max_ejection < base_ejection {
            self.err(f.at("max_ejection_ms"), "must be at least base_ejection_ms");
        }
        OutlierConfig {
            consecutive_5xx,
            consecutive_gateway_errors,
            base_ejection,
            max_ejection,
            max_ejection_percent,
            panic_threshold_percent,
        }
    }

    pub(super) fn health_check(&mut self, v: &Value, path: &str) -> Option<HealthCheckConfig> {
        let f = self.object(
            v,
            path,
            &[
                "type",
                "path",
                "expected_statuses",
                "interval_ms",
                "jitter_ms",
                "timeout_ms",
                "healthy_threshold",
                "unhealthy_threshold",
            ],
        )?;
        let kind = self.string(&f, "type", true);
        let probe = match kind.as_deref() {
            Some("http") => {
                let p = self.string(&f, "path", true);
                if p.as_ref().is_some_and(|p| !p.starts_with('/')) {
                    self.err(f.at("path"), "must start with '/'");
                }
                let expected = self.statuses(&f, "expected_statuses");
                p.map(|path| HealthProbe::Http { path, expected })
            }
            Some("tcp") => {
                for key in ["path", "expected_statuses"] {
                    if f.get(key).is_some() {
                        self.err(f.at(key), "only used with type: http");
                    }
                }
                Some(HealthProbe::Tcp)
            }
            Some(other) => {
                self.err(f.at("type"), format!("'{other}' is not one of: http, tcp"));
                None
            }
            None => None,
        };
        let interval = self.millis(&f, "interval_ms", 5_000);
        let default_jitter = interval.as_millis() as u64 / 10;
        let jitter = match f.get("jitter_ms") {
            None => Duration::from_millis(default_jitter),
            Some(_) => {
                Duration::from_millis(self.uint(&f, "jitter_ms", 0, 86_400_000).unwrap_or(0))
            }
        };
        let timeout = self.millis(&f, "timeout_ms", 1_000);
        if timeout > interval {
            self.err(f.at("timeout_ms"), "must be at most interval_ms");
        }
        let mut threshold = |key, default| self.uint(&f, key, 1, 100).map_or(default, |n| n as u32);
        let healthy_threshold = threshold("healthy_threshold", 2);
        let unhealthy_threshold = threshold("unhealthy_threshold", 3);
        Some(HealthCheckConfig {
            probe: probe?,
            interval,
            jitter,
            timeout,
            healthy_threshold,
            unhealthy_threshold,
        })
    }

    pub(super) fn locality(&mut self, v: &Value, path: &str) -> Option<LocalityConfig> {
        let f = self.object(v, path, &["zone", "failover", "min_healthy_percent"])?;
        let zone = self.string(&f, "zone", true);
        let failover = self
            .list(&f, "failover", false)
            .into_iter()
            .filter_map(|(at, z)| match z.as_str() {
                Some(s) if !s.is_empty() => Some(s.to_string()),
                _ => {
                    self.err(at, "expected a zone name");
                    None
                }
            })
            .collect();
        let min_healthy_percent = self
            .uint(&f, "min_healthy_percent", 0, 100)
            .map_or(70, |n| n as u32);
        Some(LocalityConfig {
            zone: zone?,
            failover,
            min_healthy_percent,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::{Config, HealthProbe};

    fn cluster_issues(section: &str) -> Vec<String> {
        issues(&format!(
            "clusters:\n - {{name: a, endpoints: [{{address: 'h:1', zone: z1}}], {section}}}\n"
        ))
    }

    #[test]
    fn health_sections_decode_with_defaults() {
        let c = Config::parse(
            "clusters:\n - {name: a, endpoints: [{address: 'h:1', zone: z1}], \
             outlier_detection: {consecutive_5xx: 3, base_ejection_ms: 500}, \
             health_check: {type: http, path: /healthz, expected_statuses: [200, 204], interval_ms: 1000}, \
             locality: {zone: z1, failover: [z2]}}\n - {name: b, endpoints: [], health_check: {type: tcp}}\n",
        )
        .unwrap();
        let a = &c.clusters[0];
        assert_eq!(a.endpoints[0].zone.as_deref(), Some("z1"));
        assert_eq!(a.outlier.consecutive_5xx, 3);
        assert_eq!(a.outlier.consecutive_gateway_errors, 5);
        assert_eq!(a.outlier.base_ejection.as_millis(), 500);
        assert_eq!(a.outlier.max_ejection_percent, 50);
        let hc = a.health_check.as_ref().unwrap();
        assert_eq!(
            hc.probe,
            HealthProbe::Http {
                path: "/healthz".into(),
                expected: vec![200, 204]
            }
        );
        assert_eq!(
            (
                hc.interval.as_millis(),
                hc.jitter.as_millis(),
                hc.timeout.as_millis()
            ),
            (1000, 100, 1000)
        );
        assert!(hc.passes(204) && !hc.passes(201));
        let loc = a.locality.as_ref().unwrap();
        assert_eq!((loc.zone.as_str(), loc.min_healthy_percent), ("z1", 70));
        let b = c.clusters[1].health_check.as_ref().unwrap();
        assert_eq!(b.probe, HealthProbe::Tcp);
        assert!(b.passes(299) && !b.passes(300));
    }

    #[test]
    fn bad_health_sections_are_reported_with_paths() {
        let got = cluster_issues(
            "outlier_detection: {max_ejection_percent: 101, base_ejection_ms: 5000, max_ejection_ms: 10}, \
             health_check: {type: http, path: healthz, timeout_ms: 6000, healthy_threshold: 0}, \
             locality: {failover: [1]}",
        );
        for want in [
            "clusters[0].outlier_detection.max_ejection_percent: 101 is out of range 0..=100",
            "clusters[0].outlier_detection.max_ejection_ms: must be at least base_ejection_ms",
            "clusters[0].health_check.path: must start with '/'",
            "clusters[0].health_check.timeout_ms: must be at most interval_ms",
            "clusters[0].health_check.healthy_threshold: 0 is out of range 1..=100",
            "clusters[0].locality.zone: required",
            "clusters[0].locality.failover[0]: expected a zone name",
        ] {
            assert!(has(&got, want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 7, "{got:?}");
        let got = cluster_issues("health_check: {type: tcp, path: /x}");
        assert_eq!(
            got,
            ["clusters[0].health_check.path: only used with type: http"]
        );
        let got = cluster_issues("health_check: {type: udp}");
        assert_eq!(
            got,
            ["clusters[0].health_check.type: 'udp' is not one of: http, tcp"]
        );
    }
}
