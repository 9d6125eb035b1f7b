//! The TLS sections of the data-plane config: the proxy's `identity`, a
//! listener's `tls` and a cluster's `tls`. Certificates and keys are read
//! (inline PEM, or a `*_file`) and checked while the document is decoded,
//! so a bad or expired certificate fails `update()` with its field path.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use serde_json::Value;

use super::decode::{join, Decoder, Fields};
use crate::pki::identity::{certified_key, Identity, IdentityError};
use crate::pki::SpiffeId;

/// A listener's server-side TLS.
#[derive(Debug, Clone, PartialEq)]
pub enum ListenerTls {
    /// Mesh mTLS required: plaintext and certificate-less clients are refused.
    Strict,
    /// Mesh mTLS, or plaintext (counted) while a service migrates.
    Permissive,
    /// Edge TLS with operator certificates, no client certificate.
    Simple(Arc<EdgeCertificates>),
}

/// The operator certificates of an edge listener, checked, in the order
/// given: the first one serves clients without a known server name.
#[derive(Debug)]
pub struct EdgeCertificates {
    /// Server names (`*.suffix` allowed) and the certified key serving them.
    pub entries: Vec<(Vec<String>, Arc<CertifiedKey>)>,
    /// The PEM sources, so that an unchanged config compares equal.
    source: Vec<u8>,
}

impl PartialEq for EdgeCertificates {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl ListenerTls {
    pub fn is_mesh(&self) -> bool {
        matches!(self, ListenerTls::Strict | ListenerTls::Permissive)
    }
}

/// A cluster's client-side TLS: exactly one of the two forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterTls {
    /// Mesh mTLS: its endpoints must present one of these SPIFFE IDs.
    Mesh { peer_ids: Vec<String> },
    /// TLS origination to a server outside the mesh: `server_name` is sent
    /// as SNI and checked against its certificate, which must chain to `ca`.
    Origination { server_name: String, ca: Vec<u8> },
}

impl ClusterTls {
    pub fn is_mesh(&self) -> bool {
        matches!(self, ClusterTls::Mesh { .. })
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

// === impl Decoder (TLS) ===

impl Decoder {
    /// PEM text given inline as `key` or read from `key_file`; exactly one.
    fn pem(&mut self, f: &Fields<'_>, key: &str) -> Option<Vec<u8>> {
        let file_key = format!("{key}_file");
        let inline = self.string(f, key, false);
        let file = self.string(f, &file_key, false);
        match (inline, file) {
            (Some(text), None) => Some(text.into_bytes()),
            (None, Some(path)) => match std::fs::read(&path) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    self.err(f.at(&file_key), format!("cannot read '{path}': {e}"));
                    None
                }
            },
            (Some(_), Some(_)) => {
                self.err(f.at(key), format!("give {key} or {file_key}, not both"));
                None
            }
            (None, None) => {
                if f.get(key).is_none() && f.get(&file_key).is_none() {
                    self.err(f.at(key), format!("required (or give {file_key})"));
                }
                None
            }
        }
    }

    fn identity_error(&mut self, path: &str, e: IdentityError) {
        self.err(join(path, e.field), e.message);
    }

    pub(super) fn identity(&mut self, v: &Value, path: &str) -> Option<Arc<Identity>> {
        let f = self.object(
            v,
            path,
            &[
                "cert_chain",
                "cert_chain_file",
                "private_key",
                "private_key_file",
                "roots",
                "roots_file",
            ],
        )?;
        let chain = self.pem(&f, "cert_chain");
        let key = self.pem(&f, "private_key");
        let roots = self.pem(&f, "roots");
        match Identity::from_pem(&chain?, &key?, &roots?, unix_now()) {
            Ok(identity) => Some(Arc::new(identity)),
            Err(e) => {
                self.identity_error(path, e);
                None
            }
        }
    }

    pub(super) fn listener_tls(&mut self, v: &Value, path: &str) -> Option<ListenerTls> {
        let f = self.object(v, path, &["mode", "certificates"])?;
        let mode = self.string(&f, "mode", true)?;
        if mode != "simple" && f.get("certificates").is_some() {
            self.err(
                f.at("certificates"),
                "only mode simple takes certificates; mesh modes use the identity",
            );
        }
        match mode.as_str() {
            "strict" => Some(ListenerTls::Strict),
            "permissive" => Some(ListenerTls::Permissive),
            "simple" => {
                let mut entries = Vec::new();
                let mut source = Vec::new();
                for (p, item) in self.list(&f, "certificates", true) {
                    let Some(cf) = self.object(
                        item,
                        &p,
                        &[
                            "server_names",
                            "cert_chain",
                            "cert_chain_file",
                            "private_key",
                            "private_key_file",
                        ],
                    ) else {
                        continue;
                    };
                    let names = self.server_names(&cf);
                    let (Some(chain), Some(key)) =
                        (self.pem(&cf, "cert_chain"), self.pem(&cf, "private_key"))
                    else {
                        continue;
                    };
                    match certified_key(&chain, &key) {
                        Ok((_, certified)) => {
                            source.extend_from_slice(&chain);
                            source.extend_from_slice(&key);
                            source.extend(names.join(",").bytes());
                            entries.push((names, Arc::new(certified)));
                        }
                        Err(e) => self.identity_error(&p, e),
                    }
                }
                if entries.is_empty() {
                    if f.get("certificates").is_some() {
                        self.err(f.at("certificates"), "at least one certificate is needed");
                    }
                    return None;
                }
                Some(ListenerTls::Simple(Arc::new(EdgeCertificates {
                    entries,
                    source,
                })))
            }
            other => {
                self.err(
                    f.at("mode"),
                    format!("'{other}' is not one of: strict, permissive, simple"),
                );
                None
            }
        }
    }

    fn server_names(&mut self, f: &Fields<'_>) -> Vec<String> {
        let mut names = Vec::new();
        for (p, v) in self.list(f, "server_names", false) {
            let Some(name) = v.as_str() else {
                self.err(p, "expected a host name");
                continue;
            };
            let bare = name.strip_prefix("*.").unwrap_or(name);
            let valid = !bare.is_empty()
                && bare.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if valid {
                names.push(name.to_string());
            } else {
                self.err(p, format!("'{name}' is not a host name (or *.suffix)"));
            }
        }
        names
    }

    pub(super) fn cluster_tls(&mut self, v: &Value, path: &str) -> Option<ClusterTls> {
        let f = self.object(v, path, &["peer_ids", "server_name", "ca", "ca_file"])?;
        let origination = ["server_name", "ca", "ca_file"]
            .iter()
            .any(|k| f.get(k).is_some());
        if !origination {
            self.need_identity(path);
            return self.mesh_cluster_tls(&f);
        }
        if f.get("peer_ids").is_some() {
            self.err(
                f.at("peer_ids"),
                "give peer_ids (mesh mTLS) or server_name and ca (TLS origination), not both",
            );
        }
        let server_name = self.string(&f, "server_name", true);
        if let Some(name) = server_name.as_deref() {
            if ServerName::try_from(name).is_err() {
                self.err(
                    f.at("server_name"),
                    format!("'{name}' is not a host name or IP address"),
                );
            }
        }
        let ca = self.pem(&f, "ca")?;
        if let Err(e) = crate::tls::roots(&ca) {
            let key = if f.get("ca").is_some() {
                "ca"
            } else {
                "ca_file"
            };
            self.err(f.at(key), e);
            return None;
        }
        Some(ClusterTls::Origination {
            server_name: server_name?,
            ca,
        })
    }

    fn mesh_cluster_tls(&mut self, f: &Fields<'_>) -> Option<ClusterTls> {
        let mut peer_ids = Vec::new();
        for (p, v) in self.list(f, "peer_ids", true) {
            match v.as_str().and_then(SpiffeId::parse) {
                Some(id) => peer_ids.push(id.as_str().to_string()),
                None => self.err(p, "expected a SPIFFE ID (spiffe://<trust-domain>/<path>)"),
            }
        }
        if peer_ids.is_empty() {
            if f.get("peer_ids").is_some() {
                self.err(f.at("peer_ids"), "at least one SPIFFE ID is needed");
            }
            return None;
        }
        Some(ClusterTls::Mesh { peer_ids })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn mesh_tls_needs_an_identity_and_valid_fields() {
        let got = issues(
            "listeners:\n \
             - {name: a, address: 127.0.0.1:1, protocol: tcp, cluster: c, tls: {mode: strict, certificates: []}}\n \
             - {name: b, address: 127.0.0.1:2, protocol: tcp, cluster: c, tls: {mode: mutual}}\n \
             - {name: e, address: 127.0.0.1:3, protocol: tcp, cluster: c, tls: {mode: simple, certificates: [{server_names: ['bad name'], cert_chain: x, cert_chain_file: y}]}}\n\
             clusters:\n - {name: c, endpoints: [], tls: {peer_ids: ['not-spiffe']}}\n",
        );
        for want in [
            "listeners[0].tls.certificates: only mode simple takes certificates",
            "listeners[0].tls: mesh mTLS needs the proxy's identity",
            "listeners[1].tls.mode: 'mutual' is not one of: strict, permissive, simple",
            "listeners[2].tls.certificates[0].server_names[0]: 'bad name' is not a host name",
            "listeners[2].tls.certificates[0].cert_chain: give cert_chain or cert_chain_file, not both",
            "listeners[2].tls.certificates[0].private_key: required (or give private_key_file)",
            "clusters[0].tls: mesh mTLS needs the proxy's identity",
            "clusters[0].tls.peer_ids[0]: expected a SPIFFE ID",
        ] {
            assert!(has(&got, want), "missing {want:?} in {got:?}");
        }
    }

    #[test]
    fn an_identity_reports_each_part() {
        let got = issues("identity: {cert_chain_file: /nonexistent/chain.pem, private_key: x}\n");
        assert!(
            has(
                &got,
                "identity.cert_chain_file: cannot read '/nonexistent/chain.pem'"
            ),
            "{got:?}"
        );
        assert!(
            has(&got, "identity.roots: required (or give roots_file)"),
            "{got:?}"
        );
    }

    /// A self-signed CA (P-256, valid until 2126), for the decoder's checks only.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBiTCCAS+gAwIBAgIUPymf7l2MZgp3LAyC/i2smDNZenYwCgYIKoZIzj0EAwIw\nGTEXMBUGA1UEAwwOZWdyZXNzIHRlc3QgQ0EwIBcNMjYxMjAzMTkwMjQxWhgPMjEy\nNjExMDkxOTAyNDFaMBkxFzAVBgNVBAMMDmVncmVzcyB0ZXN0IENBMFkwEwYHKoZI\nzj0CAQYIKoZIzj0DAQcDQgAEgwbwRkoDDriff9acHfPbtjoDolidLOh9L7u/yQa7\nX8PN+2dvuozl8iDzbpSNMvL8psX17GJjLTH/1xpwgnZKSKNTMFEwHQYDVR0OBBYE\nFIzOQE2rxRxG2zLLhqXa/70MEXTUMB8GA1UdIwQYMBaAFIzOQE2rxRxG2zLLhqXa\n/70MEXTUMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgZ35LaTrS\nOuVA8hJUzcxLBunR0YW90e1Gi45ZZUypvzMCIQDAiUn5EI0EcWVkdD01+hvBAwvQ\nk5HWegZiTMha66HaTA==\n-----END CERTIFICATE-----\n";

    #[test]
    fn tls_origination_takes_a_server_name_and_roots() {
        let ca = TEST_CA;
        let got = issues(&format!(
            "clusters:\n \
             - {{name: a, endpoints: [], tls: {{server_name: 'bad name!', ca: 'not pem'}}}}\n \
             - {{name: b, endpoints: [], tls: {{server_name: x.test}}}}\n \
             - {{name: c, endpoints: [], tls: {{ca_file: /nonexistent/ca.pem, peer_ids: ['spiffe://td/x']}}}}\n \
             - {{name: d, endpoints: [], tls: {{server_name: x.test, ca: {ca:?}, ca_file: /x}}}}\n"
        ));
        for want in [
            "clusters[0].tls.server_name: 'bad name!' is not a host name",
            "clusters[0].tls.ca: no certificate in it",
            "clusters[1].tls.ca: required (or give ca_file)",
            "clusters[2].tls.peer_ids: give peer_ids (mesh mTLS) or server_name and ca",
            "clusters[2].tls.server_name: required",
            "clusters[2].tls.ca_file: cannot read '/nonexistent/ca.pem'",
            "clusters[3].tls.ca: give ca or ca_file, not both",
        ] {
            assert!(has(&got, want), "missing {want:?} in {got:?}");
        }
        assert_eq!(got.len(), 7, "{got:?}");
        // No identity needed: origination is not mesh mTLS.
        let good = format!(
            "clusters: [{{name: a, endpoints: [], tls: {{server_name: x.test, ca: {ca:?}}}}}]\n"
        );
        assert_eq!(issues(&good), Vec::<String>::new());
    }
}
