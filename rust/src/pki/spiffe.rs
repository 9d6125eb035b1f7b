//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`) and reading them out of
//! X.509 SVIDs, whose only URI SAN is the ID.

use std::fmt;

use x509_parser::extensions::GeneralName;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    uri: String,
    /// Where the trust domain ends in `uri`.
    td_end: usize,
}

const SCHEME: &str = "spiffe://";

// === impl SpiffeId ===

impl SpiffeId {
    /// Parses an ID as the SPIFFE spec shapes it: a lower-case trust domain
    /// and a non-empty path of non-empty segments, none of them `.` or `..`.
    pub fn parse(s: &str) -> Option<SpiffeId> {
        let rest = s.strip_prefix(SCHEME)?;
        let (td, path) = rest.split_once('/')?;
        let td_ok = !td.is_empty()
            && td
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        let path_ok = path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        });
        (td_ok && path_ok).then(|| SpiffeId {
            uri: s.to_string(),
            td_end: SCHEME.len() + td.len(),
        })
    }

    /// The ID in a DER certificate: its one URI SAN, which must be a SPIFFE ID.
    pub fn from_cert(der: &[u8]) -> Result<SpiffeId, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| format!("unreadable subjectAltName: {e}"))?
            .ok_or("the certificate has no subjectAltName")?;
        let uris: Vec<&str> = san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [one] => SpiffeId::parse(one).ok_or_else(|| format!("'{one}' is not a SPIFFE ID")),
            [] => Err("the certificate has no URI SAN (no SPIFFE ID)".into()),
            _ => Err(format!(
                "the certificate has {} URI SANs; an SVID has one",
                uris.len()
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.uri
    }

    pub fn trust_domain(&self) -> &str {
        &self.uri[SCHEME.len()..self.td_end]
    }

    /// The path, with its leading `/`.
    pub fn path(&self) -> &str {
        &self.uri[self.td_end..]
    }

    /// `<ns>` and `<svc>` of a meshctl identity, `/ns/<ns>/sa/<svc>`.
    fn workload(&self) -> Option<(&str, &str)> {
        let mut it = self.path().strip_prefix('/')?.split('/');
        match (it.next(), it.next(), it.next(), it.next(), it.next()) {
            (Some("ns"), Some(ns), Some("sa"), Some(svc), None) => Some((ns, svc)),
            _ => None,
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        self.workload().map(|(ns, _)| ns)
    }

    pub fn service(&self) -> Option<&str> {
        self.workload().map(|(_, svc)| svc)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workload_ids() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/catalog").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.path(), "/ns/shop/sa/catalog");
        assert_eq!(id.namespace(), Some("shop"));
        assert_eq!(id.service(), Some("catalog"));
        let other = SpiffeId::parse("spiffe://td/agent/x").unwrap();
        assert_eq!(other.namespace(), None);
    }

    #[test]
    fn refuses_malformed_ids() {
        for bad in [
            "https://td/ns/a/sa/b",
            "spiffe://td",
            "spiffe://td/",
            "spiffe://TD/ns/a",
            "spiffe:///ns/a",
            "spiffe://td/ns//a",
            "spiffe://td/ns/../a",
            "spiffe://td/ns/a?x=1",
        ] {
            assert!(SpiffeId::parse(bad).is_none(), "{bad}");
        }
    }
}
