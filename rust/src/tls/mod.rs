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

/// The proxy's current identity. `update()` swaps it; every handshake reads
/// it, so a renewed SVID serves the next connection and no connection drops.
pub type IdentityCell = Arc<ArcSwapOption<Identity>>;
