//! The state every request and connection reads: the active snapshot, the
//! stats registry and the identity cell. It sits below the engine, the
//! listeners and the HTTP code, which all hold an `Arc<Shared>`; it imports
//! none of them.

use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::snapshot::Snapshot;
use crate::stats::Registry;
use crate::tls::IdentityCell;

/// What request handlers share: the active snapshot and the stats registry.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub registry: Registry,
    /// The SVID and roots every mesh TLS config reads at handshake time.
    pub identity: IdentityCell,
    ready: AtomicBool,
}

// === impl Shared ===

impl Shared {
    /// An empty snapshot, not ready: the engine installs the first config.
    pub fn new() -> Self {
        Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            registry: Registry::default(),
            identity: IdentityCell::default(),
            ready: AtomicBool::new(false),
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The metrics exposition (see `telemetry::prometheus`).
    pub fn metrics(&self, openmetrics: bool) -> String {
        crate::telemetry::prometheus::encode(
            self.snapshot.load_full(),
            self.registry.edges.all(),
            self.registry.telemetry.clone(),
            self.registry.config.counts(),
            (
                self.registry.dns.counts.by_result(),
                self.registry.dns_server.by_result(),
            ),
            self.registry.workers.counts(),
            openmetrics,
        )
    }

    /// The edges' counters for heartbeats (see `telemetry::report`).
    pub fn telemetry(&self) -> Value {
        crate::telemetry::report(&self.registry.edges.all())
    }

    /// Counters of the active snapshot, and the identity in use.
    pub fn stats(&self) -> Value {
        let snapshot = self.snapshot.load();
        let mut stats = snapshot.stats();
        stats["config"] = self.registry.config.to_json(snapshot.version);
        stats["dns"] = self.registry.dns.counts.to_json();
        stats["dns_server"] = self.registry.dns_server.to_json();
        stats["workers"] = self.registry.workers.to_json();
        if let Some(identity) = self.identity.load().as_ref() {
            stats["identity"] = serde_json::json!({
                "spiffe_id": identity.id.as_str(),
                "not_before": identity.not_before,
                "not_after": identity.not_after,
            });
        }
        stats
    }
}
