//! Client-side TLS of a cluster: mesh mTLS to a peer sidecar (presenting
//! this proxy's SVID and insisting on the peer's), or TLS origination to a
//! server outside the mesh (webpki check of its name against given roots).

use std::io;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::verify::{CurrentCert, PeerVerifier};
use super::IdentityCell;
use crate::pki::provider;

pub struct ClientTls {
    connector: TlsConnector,
    /// Origination: the name sent and checked, whatever the endpoint's address.
    server_name: Option<ServerName<'static>>,
}

// === impl ClientTls ===

impl ClientTls {
    /// TLS 1.3 only; `expected` are the SPIFFE IDs the peer may present;
    /// `alpn` is offered as is (h2 between sidecars).
    pub fn mesh(cell: &IdentityCell, expected: Vec<String>, alpn: &[&[u8]]) -> ClientTls {
        let verifier = Arc::new(PeerVerifier {
            cell: cell.clone(),
            expected,
        });
        let mut config = ClientConfig::builder_with_provider(provider().clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the ring provider supports TLS 1.3")
            .dangerous()
            // Not a weaker check: PeerVerifier verifies the chain itself and then the SPIFFE ID.
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(CurrentCert(cell.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // Peers are known by SPIFFE ID, not by name: no SNI to leak or match.
        config.enable_sni = false;
        ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: None,
        }
    }

    /// TLS origination to a server outside the mesh: its certificate must
    /// chain to `roots` and name `server_name` (also sent as SNI). The
    /// decoder checked both, so an error here is one more config error.
    pub fn origination(server_name: &str, ca: &[u8], alpn: &[&[u8]]) -> Result<ClientTls, String> {
        let roots = super::roots(ca)?;
        let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
        let mut config = ClientConfig::builder_with_provider(provider().clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: Some(name),
        })
    }

    /// Handshakes over `tcp` with the endpoint at `host` (its address; it
    /// keys session resumption, so each endpoint resumes its own sessions).
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(host.to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
            }
        };
        self.connector.connect(name, tcp).await
    }
}
