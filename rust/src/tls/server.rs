//! Server-side TLS of a listener: the mesh's mutual TLS (STRICT, or
//! PERMISSIVE to let plaintext in while a service migrates), or the edge's
//! TLS with operator certificates chosen by SNI.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::verify::{CurrentCert, MeshClientVerifier};
use super::IdentityCell;
use crate::config::EdgeCertificates;
use crate::io::Stream;
use crate::pki::provider;
use crate::pki::SpiffeId;
use crate::stats::{ListenerStats, TlsFailure};

/// A client that sends nothing, or stalls mid-handshake, is cut off after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of every TLS record carrying a handshake.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strict,
    Permissive,
    Edge,
}

pub struct ServerTls {
    acceptor: TlsAcceptor,
    mode: Mode,
}

/// An accepted connection, and the peer's verified identity (mesh mTLS only).
pub struct Accepted {
    pub stream: Stream,
    pub peer: Option<Arc<SpiffeId>>,
}

// === impl ServerTls ===

impl ServerTls {
    /// Mesh mTLS with the current SVID: TLS 1.3, client certificate required.
    pub fn mesh(cell: &IdentityCell, permissive: bool) -> ServerTls {
        let mut config = ServerConfig::builder_with_provider(provider().clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the ring provider supports TLS 1.3")
            .with_client_cert_verifier(Arc::new(MeshClientVerifier(cell.clone())))
            .with_cert_resolver(Arc::new(CurrentCert(cell.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            mode: if permissive {
                Mode::Permissive
            } else {
                Mode::Strict
            },
        }
    }

    /// Edge TLS: TLS 1.2 and 1.3 with the provider's AEAD suites only, a
    /// certificate per SNI name, no client certificate.
    pub fn edge(certs: &EdgeCertificates, alpn_h2: bool) -> ServerTls {
        let mut config = ServerConfig::builder_with_provider(provider().clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniCertificates::new(certs)));
        config.alpn_protocols = if alpn_h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![]
        };
        ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            mode: Mode::Edge,
        }
    }

    /// Mesh mTLS (STRICT or PERMISSIVE), as opposed to edge TLS.
    pub fn is_mesh(&self) -> bool {
        self.mode != Mode::Edge
    }

    /// Runs the handshake (or lets plaintext through in PERMISSIVE mode);
    /// None when the connection is refused or fails.
    pub async fn accept(&self, tcp: TcpStream, stats: &ListenerStats) -> Option<Accepted> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(tcp, stats)).await {
            Ok(accepted) => accepted,
            Err(_) => {
                stats.tls_failures.inc(TlsFailure::Timeout);
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }

    async fn handshake(&self, tcp: TcpStream, stats: &ListenerStats) -> Option<Accepted> {
        if self.mode != Mode::Edge {
            let mut first = [0u8; 1];
            match tcp.peek(&mut first).await {
                Ok(1) if first[0] == TLS_HANDSHAKE_RECORD => {}
                Ok(1) if self.mode == Mode::Permissive => {
                    stats.plaintext_accepted.inc();
                    return Some(Accepted {
                        stream: Stream::Plain(tcp),
                        peer: None,
                    });
                }
                Ok(1) => {
                    stats.plaintext_rejected.inc();
                    tracing::debug!("plaintext connection refused: mTLS is STRICT");
                    return None;
                }
                _ => return None,
            }
        }
        let tls = match self.acceptor.accept(tcp).await {
            Ok(tls) => tls,
            Err(e) => {
                stats.tls_failures.inc(super::failure_reason(&e));
                tracing::debug!("TLS handshake failed: {e}");
                return None;
            }
        };
        stats.tls_handshakes.inc();
        let peer = if self.mode == Mode::Edge {
            None
        } else {
            // The verifier has checked the chain and the SPIFFE ID already.
            let (_, conn) = tls.get_ref();
            let leaf = conn.peer_certificates().and_then(|c| c.first())?;
            Some(Arc::new(SpiffeId::from_cert(leaf).ok()?))
        };
        Some(Accepted {
            stream: Stream::ServerTls(Box::new(tls)),
            peer,
        })
    }
}

/// Operator certificates by server name: exact names first, then the
/// longest `*.suffix` wildcard; a client without SNI (or with an unknown
/// name) gets the first certificate.
#[derive(Debug)]
struct SniCertificates {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl SniCertificates {
    /// The config decoder guarantees at least one certificate.
    fn new(certs: &EdgeCertificates) -> Self {
        let default = certs.entries[0].1.clone();
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        for (names, key) in &certs.entries {
            for name in names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.push((format!(".{suffix}"), key.clone())),
                    None => {
                        exact.entry(name).or_insert_with(|| key.clone());
                    }
                }
            }
        }
        wildcard.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        SniCertificates {
            exact,
            wildcard,
            default,
        }
    }

    fn lookup(&self, name: &str) -> Arc<CertifiedKey> {
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        self.wildcard
            .iter()
            // A wildcard covers exactly one label: `*.a.com` serves x.a.com, not x.y.a.com.
            .find(|(suffix, _)| {
                name.strip_suffix(suffix.as_str())
                    .is_some_and(|label| !label.is_empty() && !label.contains('.'))
            })
            .map_or_else(|| self.default.clone(), |(_, key)| key.clone())
    }
}

impl ResolvesServerCert for SniCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match hello.server_name() {
            Some(name) => self.lookup(name),
            None => self.default.clone(),
        })
    }
}
