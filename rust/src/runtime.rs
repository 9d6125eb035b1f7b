//! The data plane's tokio runtime. One worker gets a current-thread runtime
//! on a dedicated thread (no work-stealing bookkeeping on every wake-up);
//! more get the multi-thread scheduler.

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio_util::sync::CancellationToken;

enum Kind {
    Multi(Runtime),
    Single {
        runtime: Arc<Runtime>,
        driver: JoinHandle<()>,
        stop: CancellationToken,
    },
}

pub struct Workers {
    kind: Kind,
    handle: Handle,
}

impl Workers {
    pub fn new(workers: usize) -> std::io::Result<Self> {
        if workers <= 1 {
            let runtime = Arc::new(Builder::new_current_thread().enable_all().build()?);
            let stop = CancellationToken::new();
            let (rt, token) = (runtime.clone(), stop.clone());
            let driver = std::thread::Builder::new()
                .name("meshctl-worker".into())
                .spawn(move || rt.block_on(token.cancelled()))?;
            let handle = runtime.handle().clone();
            return Ok(Workers {
                kind: Kind::Single {
                    runtime,
                    driver,
                    stop,
                },
                handle,
            });
        }
        let runtime = Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("meshctl-worker")
            .on_thread_start(crate::worker::numbering())
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Workers {
            kind: Kind::Multi(runtime),
            handle,
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `f` to completion from a thread outside the runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        match &self.kind {
            Kind::Multi(rt) => rt.block_on(f),
            // The driver thread keeps the I/O and timers turning meanwhile.
            Kind::Single { .. } => self.handle.block_on(f),
        }
    }

    /// Stops the runtime, waiting up to `timeout` for its tasks to unwind.
    pub fn shutdown(self, timeout: Duration) {
        match self.kind {
            Kind::Multi(rt) => rt.shutdown_timeout(timeout),
            Kind::Single {
                runtime,
                driver,
                stop,
            } => {
                stop.cancel();
                let _ = driver.join();
                if let Ok(rt) = Arc::try_unwrap(runtime) {
                    rt.shutdown_timeout(timeout);
                }
            }
        }
    }

    /// Stops without waiting (for drops).
    pub fn shutdown_background(self) {
        match self.kind {
            Kind::Multi(rt) => rt.shutdown_background(),
            Kind::Single { runtime, stop, .. } => {
                stop.cancel();
                if let Ok(rt) = Arc::try_unwrap(runtime) {
                    rt.shutdown_background();
                }
            }
        }
    }
}
