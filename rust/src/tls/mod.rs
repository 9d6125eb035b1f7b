//! TLS on both sides of the proxy, on rustls with the ring provider: the
//! mesh's mutual TLS between sidecars (TLS 1.3, SPIFFE identities checked
//! both ways) and the edge's server TLS (operator certificates by SNI,
//! TLS 1.2 and 1.3).

pub mod client;
pub mod config;
pub mod identity;
pub mod server;
pub mod spiffe;
mod verify;

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;

pub use identity::Identity;
pub use spiffe::SpiffeId;

/// The proxy's current identity. `update()` swaps it; every handshake reads
/// it, so a renewed SVID serves the next connection and no connection drops.
pub type IdentityCell = Arc<ArcSwapOption<Identity>>;

/// One provider for every TLS config, built on first use.
pub fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}
