//! DNS in the data plane: the cache that resolves endpoint host names
//! (`cache`, used by every endpoint connect), and the small answerer of the
//! `dns` section for transparent mode (`server`, with the wire format it
//! reads and writes in `wire`).

mod cache;
mod server;
pub(crate) mod wire;

pub use cache::{is_unresolved, Resolver, DEFAULT_REFRESH};
pub use server::{bind, Answerer, ServerStats};
