//! Draining: a listener stops accepting, asks its connections to finish,
//! and at last cuts them off. Shared by the engine (updates, stop), the
//! listeners and the HTTP code (upgraded tunnels join the tracker).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Lets a listener stop accepting, ask its connections to finish, and at
/// last cut them off.
#[derive(Clone, Default)]
pub struct Drain {
    /// Stop accepting; HTTP connections close once their requests finish.
    pub stop: CancellationToken,
    /// Cut everything still open.
    pub abort: CancellationToken,
    /// Every task of the listener: its accept loop and connections.
    pub tracker: TaskTracker,
}

impl Drain {
    /// Stops accepting and waits for connections up to `grace`, then aborts them.
    pub async fn drain(&self, grace: Duration) {
        drain_all(std::slice::from_ref(self), grace).await;
    }
}

/// Drains several listeners at once, under one deadline.
pub async fn drain_all(drains: &[Drain], grace: Duration) {
    for d in drains {
        d.stop.cancel();
        d.tracker.close();
    }
    let wait_all = || async {
        for d in drains {
            d.tracker.wait().await;
        }
    };
    if tokio::time::timeout(grace, wait_all()).await.is_err() {
        for d in drains {
            d.abort.cancel();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), wait_all()).await;
    }
}
