//! The load generator behind `meshctl bench`, and a fast test backend for it.
//!
//! Every connection is its own task with its own histogram and counters;
//! they meet only at the end (merge) and in a few relaxed atomics that the
//! progress bar reads. Open-loop runs time each request from when it was
//! *meant* to be sent, so a stalled server shows up in the percentiles
//! instead of silently slowing the sender (coordinated omission).

pub mod backend;
pub(crate) mod h1_client;
mod http_load;
pub mod recorder;
pub mod spec;
mod tcp_load;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use recorder::{Recorder, Report};
pub use spec::{BenchSpec, Target};

/// Live counters for a progress bar.
#[derive(Default)]
pub struct Progress {
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub bytes: AtomicU64,
    pub finished: AtomicBool,
}

impl Progress {
    pub fn snapshot(&self) -> (u64, u64, u64, bool) {
        (
            self.completed.load(Relaxed),
            self.errors.load(Relaxed),
            self.bytes.load(Relaxed),
            self.finished.load(Relaxed),
        )
    }
}

/// When a connection may send its next request, and when to stop.
pub struct Pacing {
    pub start: Instant,
    pub deadline: Option<Instant>,
    /// Open loop: the gap between one connection's requests.
    pub interval: Option<Duration>,
    /// Requests issued so far across connections, and the cap (closed or open).
    pub issued: AtomicU64,
    pub limit: Option<u64>,
}

impl Pacing {
    pub fn new(spec: &BenchSpec) -> Self {
        let start = Instant::now();
        let interval = spec
            .rps
            .map(|rps| Duration::from_secs_f64(spec.connections as f64 / rps));
        Pacing {
            start,
            deadline: spec.duration.map(|d| start + d),
            interval,
            issued: AtomicU64::new(0),
            limit: spec.requests,
        }
    }

    /// Takes the next request slot; false when the run is over. Only a
    /// request cap needs the shared counter; a timed run reads the clock.
    pub fn next(&self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| now >= d) {
            return false;
        }
        match self.limit {
            Some(limit) => self.issued.fetch_add(1, Relaxed) < limit,
            None => true,
        }
    }

    /// Open loop: when connection `conn` (of `conns`) should send its `k`-th
    /// request; connections are staggered so the aggregate rate is smooth.
    pub fn intended(&self, conn: usize, conns: usize, k: u64) -> Option<Instant> {
        let i = self.interval?;
        let offset = i.mul_f64(conn as f64 / conns as f64);
        Some(self.start + offset + i.mul_f64(k as f64))
    }
}

/// What one exchange produced: status (0 for raw TCP), bytes moved, and
/// whether the connection may carry the next one.
pub(crate) struct Exchanged {
    pub status: u16,
    pub bytes: u64,
    pub reusable: bool,
}

/// A protocol the per-connection loop can drive: how to connect, how to
/// make one timed exchange.
pub(crate) trait Exchanger {
    type Conn;
    async fn connect(&mut self) -> Result<Self::Conn, recorder::ErrorKind>;
    async fn exchange(&mut self, conn: &mut Self::Conn) -> Result<Exchanged, ()>;
}

/// Connects with a deadline and TCP_NODELAY; failures sorted by kind.
pub(crate) async fn dial(
    addr: &str,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, recorder::ErrorKind> {
    crate::io::connect(addr, timeout)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => recorder::ErrorKind::Timeout,
            _ => recorder::ErrorKind::Connect,
        })
}

/// One load connection: paces requests (open loop) or sends back to back
/// (closed loop), reconnects after errors, times and counts every exchange.
pub(crate) async fn drive<E: Exchanger>(
    mut e: E,
    spec: &BenchSpec,
    conn_index: usize,
    pacing: &Pacing,
    progress: &Progress,
    rec: &mut Recorder,
) {
    use recorder::ErrorKind;
    let mut conn: Option<E::Conn> = None;
    let mut k = 0u64;
    loop {
        let intended = pacing.intended(conn_index, spec.connections, k);
        if let Some(t) = intended {
            if pacing.deadline.is_some_and(|d| t >= d) {
                break;
            }
            tokio::time::sleep_until(t.into()).await;
        }
        if !pacing.next(Instant::now()) {
            break;
        }
        k += 1;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match e.connect().await {
                Ok(c) => conn.insert(c),
                Err(kind) => {
                    rec.error(kind);
                    progress.errors.fetch_add(1, Relaxed);
                    if intended.is_none() {
                        // Closed loop: do not spin on a refusing port.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    continue;
                }
            },
        };
        let started = intended.unwrap_or_else(Instant::now);
        match tokio::time::timeout(spec.timeout, e.exchange(c)).await {
            Ok(Ok(x)) => {
                rec.record(started.elapsed(), x.status, x.bytes);
                progress.completed.fetch_add(1, Relaxed);
                progress.bytes.fetch_add(x.bytes, Relaxed);
                if x.status >= 400 {
                    progress.errors.fetch_add(1, Relaxed);
                }
                if !x.reusable {
                    conn = None;
                }
            }
            Ok(Err(())) => {
                rec.error(ErrorKind::Io);
                progress.errors.fetch_add(1, Relaxed);
                conn = None;
            }
            Err(_) => {
                rec.error(ErrorKind::Timeout);
                progress.errors.fetch_add(1, Relaxed);
                conn = None;
            }
        }
    }
}

/// Runs a benchmark to the end and returns the merged report. Each generator
/// thread runs its share of the connections on its own single-threaded
/// runtime, as wrk does: no work stealing, no cross-thread wake-ups.
pub fn run(
    spec: &BenchSpec,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> std::io::Result<Report> {
    let threads = spec.threads.clamp(1, spec.connections);
    let pacing = Arc::new(Pacing::new(spec));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (spec, pacing, progress, cancel) = (
            spec.clone(),
            pacing.clone(),
            progress.clone(),
            cancel.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("meshctl-bench-{t}"))
            .spawn(move || {
                runtime.block_on(async {
                    let mine: Vec<usize> = (t..spec.connections).step_by(threads).collect();
                    let tasks: Vec<_> = mine
                        .into_iter()
                        .map(|conn| {
                            let (spec, pacing, progress, cancel) = (
                                spec.clone(),
                                pacing.clone(),
                                progress.clone(),
                                cancel.clone(),
                            );
                            tokio::spawn(async move {
                                let mut rec = Recorder::new();
                                let work = async {
                                    match &spec.target {
                                        Target::Http { .. } => {
                                            http_load::connection(
                                                &spec, conn, &pacing, &progress, &mut rec,
                                            )
                                            .await
                                        }
                                        Target::Tcp { .. } => {
                                            tcp_load::connection(
                                                &spec, conn, &pacing, &progress, &mut rec,
                                            )
                                            .await
                                        }
                                    }
                                };
                                tokio::select! {
                                    _ = work => {}
                                    _ = cancel.cancelled() => {}
                                }
                                rec
                            })
                        })
                        .collect();
                    let mut total = Recorder::new();
                    for task in tasks {
                        if let Ok(rec) = task.await {
                            total.merge(&rec);
                        }
                    }
                    total
                })
            })?;
        handles.push(thread);
    }
    let mut total = Recorder::new();
    for h in handles {
        if let Ok(rec) = h.join() {
            total.merge(&rec);
        }
    }
    let report = total.report(pacing.start.elapsed(), spec);
    progress.finished.store(true, Relaxed);
    Ok(report)
}
