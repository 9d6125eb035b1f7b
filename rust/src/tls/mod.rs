//! TLS on both sides of the proxy at run time, on rustls with the ring
//! provider: the mesh's mutual TLS between sidecars (TLS 1.3, SPIFFE
//! identities checked both ways) and the edge's server TLS (operator
//! certificates by SNI, TLS 1.2 and 1.3). The certificates themselves are
//! values of `crate::pki`, decoded by `crate::config`.

pub mod client;
pub mod server;
mod verify;

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::pki::Identity;
use crate::stats::TlsFailure;

/// The proxy's current identity. `update()` swaps it; every handshake reads
/// it, so a renewed SVID serves the next connection and no connection drops.
pub type IdentityCell = Arc<ArcSwapOption<Identity>>;

/// The roots in `pem` (one or more PEM certificates), for a webpki check
/// of a server outside the mesh; an error says what is wrong with them.
pub fn roots(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not PEM: {e}"))?;
        roots.add(cert).map_err(|e| format!("unusable root: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(roots)
}

/// Why a handshake failed, from the error tokio-rustls returned (rustls's
/// error inside an `io::Error`; an alert from the peer says its reason).
pub fn failure_reason(e: &std::io::Error) -> TlsFailure {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<E>()) else {
        return match e.kind() {
            std::io::ErrorKind::TimedOut => TlsFailure::Timeout,
            _ => TlsFailure::Other,
        };
    };
    match tls {
        E::InvalidCertificate(c) => match c {
            C::Expired
            | C::NotValidYet
            | C::ExpiredContext { .. }
            | C::NotValidYetContext { .. } => TlsFailure::Expired,
            C::UnknownIssuer | C::BadSignature | C::BadEncoding => TlsFailure::Untrusted,
            // Our verifiers' verdict on the SPIFFE ID (see verify.rs).
            _ => TlsFailure::Identity,
        },
        E::NoCertificatesPresented => TlsFailure::NoCertificate,
        E::AlertReceived(A::CertificateExpired) => TlsFailure::Expired,
        E::AlertReceived(A::UnknownCA) => TlsFailure::Untrusted,
        E::AlertReceived(A::CertificateRequired) => TlsFailure::NoCertificate,
        _ => TlsFailure::Other,
    }
}
