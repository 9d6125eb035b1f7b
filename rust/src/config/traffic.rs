//! What a route or listener does to traffic besides forwarding it: fault
//! injection (`fault`), shadow copies (`mirrors`) and local rate limits
//! (`rate_limit`).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::decode::Decoder;

/// Delays and aborts, each for its own share of requests (or connections).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultConfig {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultDelay {
    pub percent: f64,
    pub fixed: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultAbort {
    pub percent: f64,
    pub answer: AbortAnswer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortAnswer {
    Http(u16),
    /// A trailers-only gRPC answer with this status.
    Grpc(u16),
    /// TCP: the connection is reset.
    Reset,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MirrorConfig {
    pub cluster: String,
    pub percent: f64,
}

/// A token bucket: `rps` a second, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub rps: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitOverride {
    pub identities: Vec<String>,
    pub bucket: Bucket,
}

/// Linkerd's local rate limit: a total, a bucket per caller identity, and
/// overrides for named callers (each its own bucket).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RateLimitConfig {
    pub total: Option<Bucket>,
    pub per_identity: Option<Bucket>,
    pub overrides: Vec<RateLimitOverride>,
}

/// Where a fault is decoded: HTTP routes abort with a status, TCP
/// listeners with a reset.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FaultSite {
    Route,
    TcpListener,
}

// === impl (to_json) ===

impl FaultConfig {
    pub fn to_json(&self) -> Value {
        let mut v = json!({});
        if let Some(d) = &self.delay {
            v["delay"] = json!({"percent": d.percent, "fixed_ms": d.fixed.as_millis() as u64});
        }
        if let Some(a) = &self.abort {
            v["abort"] = match a.answer {
                AbortAnswer::Http(s) => json!({"percent": a.percent, "http_status": s}),
                AbortAnswer::Grpc(s) => json!({"percent": a.percent, "grpc_status": s}),
                AbortAnswer::Reset => json!({"percent": a.percent}),
            };
        }
        v
    }
}

impl Bucket {
    pub fn to_json(self) -> Value {
        json!({"rps": self.rps, "burst": self.burst})
    }
}

impl RateLimitConfig {
    pub fn to_json(&self) -> Value {
        let mut v = json!({});
        if let Some(b) = &self.total {
            v["total"] = b.to_json();
        }
        if let Some(b) = &self.per_identity {
            v["per_identity"] = b.to_json();
        }
        if !self.overrides.is_empty() {
            v["overrides"] = self
                .overrides
                .iter()
                .map(|o| {
                    let mut b = o.bucket.to_json();
                    b["identities"] = o.identities.clone().into();
                    b
                })
                .collect();
        }
        v
    }
}

// === impl Decoder (traffic) ===

impl Decoder {
    pub(super) fn fault(&mut self, v: &Value, path: &str, site: FaultSite) -> Option<FaultConfig> {
        let f = self.object(v, path, &["delay", "abort"])?;
        if f.get("delay").is_none() && f.get("abort").is_none() {
            self.err(path, "give delay, abort or both");
        }
        let delay = f.get("delay").and_then(|d| {
            let df = self.object(d, &f.at("delay"), &["percent", "fixed_ms"])?;
            let percent = self.percent(&df, "percent");
            if df.get("percent").is_none() {
                self.err(df.at("percent"), "required");
            }
            if df.get("fixed_ms").is_none() {
                self.err(df.at("fixed_ms"), "required");
            }
            let fixed = self.uint(&df, "fixed_ms", 1, 3_600_000)?;
            Some(FaultDelay {
                percent: percent?,
                fixed: Duration::from_millis(fixed),
            })
        });
        let abort = f.get("abort").and_then(|a| {
            let af = self.object(
                a,
                &f.at("abort"),
                &["percent", "http_status", "grpc_status"],
            )?;
            let percent = self.percent(&af, "percent");
            if af.get("percent").is_none() {
                self.err(af.at("percent"), "required");
            }
            let http = self.uint(&af, "http_status", 200, 599);
            let grpc = self.uint(&af, "grpc_status", 1, 16);
            let answer = match site {
                FaultSite::TcpListener => {
                    for key in ["http_status", "grpc_status"] {
                        if af.get(key).is_some() {
                            self.err(
                                af.at(key),
                                "tcp listeners abort with a reset: give only percent",
                            );
                        }
                    }
                    Some(AbortAnswer::Reset)
                }
                FaultSite::Route => match (af.get("http_status"), af.get("grpc_status")) {
                    (Some(_), Some(_)) => {
                        self.err(af.path.clone(), "give http_status or grpc_status, not both");
                        None
                    }
                    (None, None) => {
                        self.err(af.path.clone(), "give http_status or grpc_status");
                        None
                    }
                    _ => http
                        .map(|s| AbortAnswer::Http(s as u16))
                        .or(grpc.map(|s| AbortAnswer::Grpc(s as u16))),
                },
            };
            Some(FaultAbort {
                percent: percent?,
                answer: answer?,
            })
        });
        Some(FaultConfig { delay, abort })
    }

    pub(super) fn mirrors(
        &mut self,
        v: &Value,
        path: &str,
        clusters: &HashSet<String>,
    ) -> Vec<MirrorConfig> {
        let Value::Array(items) = v else {
            self.err(
                path,
                format!("expected a list, got {}", super::decode::type_name(v)),
            );
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let at = format!("{path}[{i}]");
                let f = self.object(m, &at, &["cluster", "percent"])?;
                let cluster = self.string(&f, "cluster", true)?;
                if !clusters.contains(&cluster) {
                    self.err(f.at("cluster"), format!("unknown cluster '{cluster}'"));
                }
                let percent = self.percent(&f, "percent").unwrap_or(100.0);
                Some(MirrorConfig { cluster, percent })
            })
            .collect()
    }

    pub(super) fn rate_limit(&mut self, v: &Value, path: &str) -> Option<RateLimitConfig> {
        let f = self.object(v, path, &["total", "per_identity", "overrides"])?;
        let total = f.get("total").and_then(|b| self.bucket(b, &f.at("total")));
        let per_identity = f
            .get("per_identity")
            .and_then(|b| self.bucket(b, &f.at("per_identity")));
        let overrides: Vec<RateLimitOverride> = self
            .list(&f, "overrides", false)
            .into_iter()
            .filter_map(|(at, o)| {
                let of = self.object(o, &at, &["identities", "rps", "burst"])?;
                let identities: Vec<String> = self
                    .list(&of, "identities", true)
                    .into_iter()
                    .filter_map(|(p, id)| match id.as_str() {
                        Some(s) if s.starts_with("spiffe://") => Some(s.to_string()),
                        _ => {
                            self.err(p, "expected a SPIFFE ID (spiffe://...)");
                            None
                        }
                    })
                    .collect();
                let bucket = self.bucket_fields(&of)?;
                Some(RateLimitOverride { identities, bucket })
            })
            .collect();
        if ["total", "per_identity", "overrides"]
            .iter()
            .all(|k| f.get(k).is_none())
        {
            self.err(path, "give total, per_identity or overrides");
        }
        Some(RateLimitConfig {
            total,
            per_identity,
            overrides,
        })
    }

    fn bucket(&mut self, v: &Value, path: &str) -> Option<Bucket> {
        let f = self.object(v, path, &["rps", "burst"])?;
        self.bucket_fields(&f)
    }

    fn bucket_fields(&mut self, f: &super::decode::Fields<'_>) -> Option<Bucket> {
        let rps = self.rate(f, "rps", true)?;
        // At least one token, so that a rate under 1/s still lets requests through.
        let default_burst = rps.ceil().max(1.0) as u64;
        let burst = self
            .uint(f, "burst", 1, 10_000_000)
            .unwrap_or(default_burst) as u32;
        Some(Bucket { rps, burst })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::{AbortAnswer, Config, ListenerKind};

    #[test]
    fn route_traffic_sections_decode() {
        let c = Config::parse(
            "listeners:\n - {name: l, address: 127.0.0.1:1, rate_limit: {total: {rps: 100, burst: 10}}, routes: [{backends: [{cluster: a}], \
             fault: {delay: {percent: 12.5, fixed_ms: 40}, abort: {percent: 10, grpc_status: 14}}, \
             mirrors: [{cluster: b}, {cluster: b, percent: 0.5}], \
             rate_limit: {per_identity: {rps: 0.5}, overrides: [{identities: ['spiffe://td/ns/a/sa/b'], rps: 50}]}}]}\n\
             clusters:\n - {name: a, endpoints: []}\n - {name: b, endpoints: []}\n",
        )
        .unwrap();
        let ListenerKind::Http { routes } = &c.listeners[0].kind else {
            panic!()
        };
        let r = &routes[0];
        let fault = r.fault.as_ref().unwrap();
        assert_eq!(fault.delay.as_ref().unwrap().percent, 12.5);
        assert_eq!(fault.abort.as_ref().unwrap().answer, AbortAnswer::Grpc(14));
        assert_eq!(r.mirrors.len(), 2);
        assert_eq!((r.mirrors[0].percent, r.mirrors[1].percent), (100.0, 0.5));
        let rl = r.rate_limit.as_ref().unwrap();
        assert_eq!(rl.per_identity.unwrap().burst, 1, "at least one token");
        assert_eq!(rl.overrides[0].bucket.burst, 50);
        let total = c.listeners[0].rate_limit.as_ref().unwrap().total.unwrap();
        assert_eq!((total.rps, total.burst), (100.0, 10));
    }

    #[test]
    fn bad_traffic_sections_are_reported_with_paths() {
        let got = route_issues(&[
            "{backends: [{cluster: a}], fault: {delay: {percent: 101}, abort: {percent: 5, http_status: 503, grpc_status: 14}}, \
             mirrors: [{cluster: nowhere, percent: -1}], rate_limit: {total: {rps: 0}, overrides: [{identities: [bob], rps: 1}]}}",
            "{backends: [{cluster: a}], fault: {}, rate_limit: {}}",
        ]);
        let r = "listeners[0].routes[0]";
        for want in [
            format!("{r}.fault.delay.percent: 101 is out of range 0..=100"),
            format!("{r}.fault.delay.fixed_ms: required"),
            format!("{r}.fault.abort: give http_status or grpc_status, not both"),
            format!("{r}.mirrors[0].cluster: unknown cluster 'nowhere'"),
            format!("{r}.mirrors[0].percent: -1 is out of range 0..=100"),
            format!("{r}.rate_limit.total.rps: 0 is out of range"),
            format!("{r}.rate_limit.overrides[0].identities[0]: expected a SPIFFE ID"),
            "listeners[0].routes[1].fault: give delay, abort or both".to_string(),
            "listeners[0].routes[1].rate_limit: give total, per_identity or overrides".to_string(),
        ] {
            assert!(has(&got, &want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 9, "{got:?}");
    }

    #[test]
    fn tcp_listeners_take_connection_faults_and_limits() {
        let c = Config::parse(
            "listeners:\n - {name: t, address: 127.0.0.1:1, protocol: tcp, cluster: a, \
             fault: {abort: {percent: 5}, delay: {percent: 1, fixed_ms: 10}}, rate_limit: {total: {rps: 5}}}\n\
             clusters:\n - {name: a, endpoints: []}\n",
        )
        .unwrap();
        let l = &c.listeners[0];
        assert_eq!(
            l.fault.as_ref().unwrap().abort.as_ref().unwrap().answer,
            AbortAnswer::Reset
        );
        let got = issues(
            "listeners:\n - {name: t, address: 127.0.0.1:1, protocol: tcp, cluster: a, fault: {abort: {percent: 5, http_status: 503}}}\n\
             \x20- {name: h, address: 127.0.0.1:2, routes: [{backends: [{cluster: a}]}], fault: {abort: {percent: 5}}}\n\
             clusters:\n - {name: a, endpoints: []}\n",
        );
        for want in [
            "listeners[0].fault.abort.http_status: tcp listeners abort with a reset",
            "listeners[1].fault: only tcp listeners take a fault; http ones take it per route",
        ] {
            assert!(has(&got, want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 2, "{got:?}");
    }
}
