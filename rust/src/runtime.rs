//! The data plane's tokio runtimes: one current-thread runtime per worker,
//! each on a thread of its own with its own I/O driver and timers (thread
//! per core, as HAProxy's threads and Envoy's workers are). A connection is
//! given to one worker (see `listener::accept_loop`) and stays there with
//! everything it starts (upstream connections, timers), so no work-stealing
//! bookkeeping runs on a wake-up and no request's state crosses threads.
//! Measured against tokio's multi-thread scheduler with two workers: see
//! bench/README.md, profiling log item 16.
//!
//! Worker 0's handle is the runtime's for everything else (the engine's own
//! tasks, drains, the DNS answerer, health checks and sweeps).

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio_util::sync::CancellationToken;

/// One worker: its runtime, the thread that drives it, and what stops it.
struct Worker {
    runtime: Arc<Runtime>,
    driver: JoinHandle<()>,
    stop: CancellationToken,
}

pub struct Workers {
    workers: Vec<Worker>,
    handles: Arc<[Handle]>,
}

// === impl Workers ===

impl Workers {
    pub fn new(workers: usize) -> std::io::Result<Self> {
        let mut started = Vec::new();
        for index in 0..workers.max(1) {
            match Worker::start(index) {
                Ok(w) => started.push(w),
                Err(e) => {
                    Workers::stop(started);
                    return Err(e);
                }
            }
        }
        let handles = started.iter().map(|w| w.runtime.handle().clone());
        Ok(Workers {
            handles: handles.collect(),
            workers: started,
        })
    }

    /// Worker 0's runtime: where the engine spawns what is not a connection.
    pub fn handle(&self) -> &Handle {
        &self.handles[0]
    }

    /// Every worker's runtime, in worker order (accept loops hand
    /// connections to them).
    pub fn handles(&self) -> &Arc<[Handle]> {
        &self.handles
    }

    /// Runs `f` to completion from a thread outside the runtimes (worker 0's
    /// driver thread keeps its I/O and timers turning meanwhile).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.handle().block_on(f)
    }

    /// Stops the runtimes, waiting up to `timeout` for each one's tasks to unwind.
    pub fn shutdown(self, timeout: Duration) {
        for w in self.workers {
            w.stop.cancel();
            let _ = w.driver.join();
            if let Ok(rt) = Arc::try_unwrap(w.runtime) {
                rt.shutdown_timeout(timeout);
            }
        }
    }

    /// Stops without waiting (for drops).
    pub fn shutdown_background(self) {
        Workers::stop(self.workers);
    }

    fn stop(workers: Vec<Worker>) {
        for w in workers {
            w.stop.cancel();
            if let Ok(rt) = Arc::try_unwrap(w.runtime) {
                rt.shutdown_background();
            }
        }
    }
}

// === impl Worker ===

impl Worker {
    fn start(index: usize) -> std::io::Result<Self> {
        let runtime = Arc::new(Builder::new_current_thread().enable_all().build()?);
        let stop = CancellationToken::new();
        let (rt, token) = (runtime.clone(), stop.clone());
        let driver = std::thread::Builder::new()
            .name(format!("meshctl-worker{index}"))
            .spawn(move || {
                crate::worker::set_index(index);
                rt.block_on(token.cancelled())
            })?;
        Ok(Worker {
            runtime,
            driver,
            stop,
        })
    }
}
