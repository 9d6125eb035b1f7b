//! The mesh's certificate checks, and the resolvers that hand rustls the
//! current certificate. All of them read the identity cell at each
//! handshake, so a renewed SVID or a new trust bundle applies to the next
//! connection without rebuilding any TLS config.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, ResolvesClientCert};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::IdentityCell;
use crate::pki::provider;
use crate::pki::SpiffeId;

fn no_identity() -> Error {
    Error::General("no mesh identity is installed".into())
}

/// A peer whose chain is fine but whose identity is not the one wanted.
fn wrong_identity(why: String) -> Error {
    tracing::debug!("peer refused: {why}");
    Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// The handshake-signature checks and schemes, the same for both verifiers:
/// the provider's algorithms, nothing of our own.
macro_rules! provider_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &provider().signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &provider().signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Inbound: a client certificate is required; it must chain to the current
/// roots and name a SPIFFE ID of this proxy's trust domain.
#[derive(Debug)]
pub struct MeshClientVerifier(pub IdentityCell);

impl ClientCertVerifier for MeshClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let current = self.0.load();
        let ours = current.as_ref().ok_or_else(no_identity)?;
        ours.client_verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        let peer = SpiffeId::from_cert(end_entity).map_err(wrong_identity)?;
        if peer.trust_domain() != ours.id.trust_domain() {
            return Err(wrong_identity(format!(
                "{peer} is not in trust domain {}",
                ours.id.trust_domain()
            )));
        }
        Ok(ClientCertVerified::assertion())
    }

    provider_signatures!();
}

/// Outbound: the server's chain must verify against the current roots, and
/// it must present one of the SPIFFE IDs expected for the destination — a
/// valid chain alone would let any workload of the mesh pose as any other.
#[derive(Debug)]
pub struct PeerVerifier {
    pub cell: IdentityCell,
    pub expected: Vec<String>,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let current = self.cell.load();
        let ours = current.as_ref().ok_or_else(no_identity)?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &ours.roots,
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )?;
        let peer = SpiffeId::from_cert(end_entity).map_err(wrong_identity)?;
        if !self.expected.iter().any(|e| e == peer.as_str()) {
            return Err(wrong_identity(format!(
                "the peer is {peer}, expected one of {:?}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    provider_signatures!();
}

/// Hands out the SVID currently installed, on either side of a handshake.
#[derive(Debug)]
pub struct CurrentCert(pub IdentityCell);

impl CurrentCert {
    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.0.load().as_ref().map(|i| i.key.clone())
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
