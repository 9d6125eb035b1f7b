//! The top-level `dns` section: the small DNS answerer a transparent-mode
//! sidecar runs, so that an unchanged app resolves mesh names (to their
//! VIPs). Names in `records` are answered from them; everything else is
//! forwarded to `upstream` (by default the nameservers of
//! `/etc/resolv.conf`, read when the config is decoded, that is applied).
//! UDP only: a TCP DNS listener is not served.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::{json, Value};

use super::decode::{join, type_name, Decoder};

/// Where the default upstream servers come from.
const RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The UDP socket's address.
    pub address: SocketAddr,
    /// Normalised name (lower case, no trailing dot) -> its A records.
    pub records: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Servers other names are forwarded to; empty: forwarding fails (SERVFAIL).
    pub upstream: Vec<SocketAddr>,
    /// TTL of the answers from `records`, in seconds.
    pub ttl_s: u32,
}

// === impl DnsConfig ===

impl DnsConfig {
    /// For `/config`: the records normalised and the upstream in use.
    pub fn to_json(&self) -> Value {
        json!({
            "address": self.address.to_string(),
            "records": self.records.iter().map(|(n, a)| {
                (n.clone(), a.iter().map(|ip| ip.to_string()).collect::<Value>())
            }).collect::<serde_json::Map<_, _>>(),
            "upstream": self.upstream.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
            "ttl_s": self.ttl_s,
        })
    }
}

/// A DNS name as records are keyed: lower case, without the trailing dot.
pub fn normalise(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Whether `name` (normalised) can be asked for: dot-separated labels of 1
/// to 63 printable ASCII characters, at most 253 in all.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_graphic()))
}

/// The `nameserver` lines of a resolv.conf, as ip:53 (a zone index on an
/// IPv6 address is dropped; lines that do not parse are skipped).
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip = words.next()?;
            let ip = ip.split_once('%').map_or(ip, |(ip, _)| ip);
            ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

// === impl Decoder (dns) ===

impl Decoder {
    pub(super) fn dns(&mut self, v: &Value, path: &str) -> Option<DnsConfig> {
        let f = self.object(v, path, &["address", "records", "upstream", "ttl_s"])?;
        let address = self.socket_addr(&f, "address");
        let mut records = BTreeMap::new();
        if let Some(given) = f.get("records") {
            let at = f.at("records");
            match given {
                Value::Object(map) => {
                    for (name, addrs) in map {
                        let key = normalise(name);
                        let name_at = join(&at, name);
                        if !valid_name(&key) {
                            self.err(&name_at, format!("'{name}' is not a DNS name"));
                            continue;
                        }
                        let addrs = self.ipv4_list(addrs, &name_at);
                        if records.insert(key, addrs).is_some() {
                            self.err(&name_at, format!("duplicate name '{name}'"));
                        }
                    }
                }
                other => self.err(at, format!("expected a mapping, got {}", type_name(other))),
            }
        }
        let upstream = match f.get("upstream") {
            Some(_) => {
                let mut seen = HashSet::new();
                self.list(&f, "upstream", false)
                    .into_iter()
                    .filter_map(|(at, item)| {
                        let parsed = item.as_str().and_then(|s| s.parse::<SocketAddr>().ok());
                        if parsed.is_none() {
                            self.err(&at, format!("{item} is not an IP:port address"));
                        }
                        parsed.filter(|u| seen.insert(*u))
                    })
                    .collect()
            }
            // Read now, so that an update picks up a changed resolv.conf.
            None => std::fs::read_to_string(RESOLV_CONF)
                .map(|text| nameservers(&text))
                .unwrap_or_default(),
        };
        let ttl_s = self.uint(&f, "ttl_s", 0, 86_400).unwrap_or(30) as u32;
        Some(DnsConfig {
            address: address?,
            records,
            upstream,
            ttl_s,
        })
    }

    fn ipv4_list(&mut self, v: &Value, path: &str) -> Vec<Ipv4Addr> {
        let Value::Array(items) = v else {
            self.err(path, format!("expected a list, got {}", type_name(v)));
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let ip = item.as_str().and_then(|s| s.parse::<Ipv4Addr>().ok());
                if ip.is_none() {
                    self.err(
                        format!("{path}[{i}]"),
                        format!("{item} is not an IPv4 address"),
                    );
                }
                ip
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::Config;

    #[test]
    fn decodes_records_normalised() {
        let c = Config::parse(
            "dns: {address: '127.0.0.1:15053', records: {Pricing.Default.: [240.240.0.7, 10.0.0.1], api.example.com: []}, upstream: ['10.0.0.2:53'], ttl_s: 5}\n",
        )
        .expect("valid");
        let d = c.dns.expect("dns");
        assert_eq!(d.address, "127.0.0.1:15053".parse().unwrap());
        assert_eq!(
            d.records["pricing.default"],
            [Ipv4Addr::new(240, 240, 0, 7), Ipv4Addr::new(10, 0, 0, 1)]
        );
        assert!(d.records["api.example.com"].is_empty());
        assert_eq!(d.upstream, ["10.0.0.2:53".parse().unwrap()]);
        assert_eq!(d.ttl_s, 5);
        assert_eq!(d.to_json()["records"]["pricing.default"][0], "240.240.0.7");
    }

    #[test]
    fn rejects_bad_dns_sections_with_paths() {
        let got = issues(
            "dns: {address: nowhere, records: {'a..b': ['1.2.3.4'], ok: ['::1', 7], Dup: [], dup.: []}, upstream: ['10.0.0.2'], ttl_s: -1, colour: red}\n",
        );
        for want in [
            "dns.address: 'nowhere' is not an IP:port address",
            "dns.records.a..b: 'a..b' is not a DNS name",
            "dns.records.ok[0]: \"::1\" is not an IPv4 address",
            "dns.records.ok[1]: 7 is not an IPv4 address",
            "dns.upstream[0]: \"10.0.0.2\" is not an IP:port address",
            "dns.ttl_s: expected a whole number",
            "dns.colour: unknown field",
        ] {
            assert!(has(&got, want), "missing {want:?} in {got:?}");
        }
        assert!(got.iter().any(|i| i.contains("duplicate name")), "{got:?}");
        assert_eq!(got.len(), 8, "{got:?}");
        assert_eq!(issues("dns: {}\n"), ["dns.address: required"]);
    }

    #[test]
    fn reads_nameservers() {
        let text = "# a comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:5\n";
        assert_eq!(
            nameservers(text),
            [
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
