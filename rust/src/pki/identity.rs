//! This proxy's mesh identity: its SVID chain and key, and the roots that
//! peers' SVIDs must chain to. Checked completely when loaded, so that a
//! broken or expired certificate is refused by `update()` and never served.

use std::fmt;
use std::sync::Arc;

use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use super::provider;
use super::spiffe::SpiffeId;

pub struct Identity {
    pub id: SpiffeId,
    pub key: Arc<CertifiedKey>,
    pub roots: Arc<RootCertStore>,
    /// Chain verification of client certificates against `roots`.
    pub client_verifier: Arc<dyn ClientCertVerifier>,
    /// Validity of the SVID, as Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// A problem with one part of an identity: `field` is `cert_chain`,
/// `private_key` or `roots`.
#[derive(Debug, PartialEq, Eq)]
pub struct IdentityError {
    pub field: &'static str,
    pub message: String,
}

fn fail<T>(field: &'static str, message: impl Into<String>) -> Result<T, IdentityError> {
    Err(IdentityError {
        field,
        message: message.into(),
    })
}

/// Every certificate in a PEM text; an error when there is none.
pub fn certificates(
    pem: &[u8],
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .or_else(|e| fail(field, format!("unreadable PEM: {e}")))?;
    if certs.is_empty() {
        return fail(field, "no CERTIFICATE block in the PEM text");
    }
    Ok(certs)
}

/// A certificate chain and its private key, checked to belong together.
pub fn certified_key(
    chain: &[u8],
    key: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, CertifiedKey), IdentityError> {
    let certs = certificates(chain, "cert_chain")?;
    let key = PrivateKeyDer::from_pem_slice(key)
        .or_else(|e| fail("private_key", format!("no readable private key: {e}")))?;
    let certified = CertifiedKey::from_der(certs.clone(), key, provider())
        .or_else(|e| fail("private_key", format!("does not fit the certificate: {e}")))?;
    Ok((certs, certified))
}

/// The validity window of a DER certificate, as Unix seconds.
pub fn validity(der: &[u8]) -> Result<(i64, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

// === impl Identity ===

impl Identity {
    /// Loads and checks an identity at time `now` (Unix seconds): the key
    /// fits the leaf, the leaf carries a SPIFFE ID, is valid now, and chains
    /// to the roots.
    pub fn from_pem(
        chain: &[u8],
        key: &[u8],
        roots: &[u8],
        now: i64,
    ) -> Result<Identity, IdentityError> {
        let (certs, certified) = certified_key(chain, key)?;
        let id = SpiffeId::from_cert(&certs[0]).or_else(|e| fail("cert_chain", e))?;
        let (not_before, not_after) = validity(&certs[0]).or_else(|e| fail("cert_chain", e))?;
        if now >= not_after {
            return fail(
                "cert_chain",
                format!("the certificate expired {} s ago", now - not_after),
            );
        }
        if now < not_before {
            return fail(
                "cert_chain",
                format!(
                    "the certificate is not valid for another {} s",
                    not_before - now
                ),
            );
        }
        let mut store = RootCertStore::empty();
        for (i, root) in certificates(roots, "roots")?.into_iter().enumerate() {
            store.add(root).or_else(|e| {
                fail(
                    "roots",
                    format!("certificate {i} is not a usable root: {e}"),
                )
            })?;
        }
        let store = Arc::new(store);
        let parsed = ParsedCertificate::try_from(&certs[0])
            .or_else(|e| fail("cert_chain", format!("unusable certificate: {e}")))?;
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.max(0) as u64));
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &store,
            &certs[1..],
            at,
            provider().signature_verification_algorithms.all,
        )
        .or_else(|e| {
            fail(
                "cert_chain",
                format!("does not verify against the roots: {e}"),
            )
        })?;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(store.clone(), provider().clone())
                .build()
                .or_else(|e| fail("roots", format!("unusable roots: {e}")))?;
        Ok(Identity {
            id,
            key: Arc::new(certified),
            roots: store,
            client_verifier,
            not_before,
            not_after,
        })
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}
