//! Certificate material as values: SPIFFE IDs, and the proxy's SVID with its
//! roots, parsed and checked once when a config is decoded. Below both the
//! config decoder and the TLS run time, which build on these types.

pub mod identity;
#[cfg(any(feature = "python", test))] // (only Python asks for these)
pub mod request;
pub mod spiffe;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use identity::Identity;
pub use spiffe::SpiffeId;

/// One provider for every key and TLS config, built on first use.
pub fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}
