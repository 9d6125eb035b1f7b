//! The endpoint-name cache: `host:port` endpoint addresses with a DNS name
//! are resolved once and the answer reused for the cluster's
//! `dns_refresh_ms`; after that, the next connect still uses it but starts
//! one lookup in the background (stale-while-revalidate), so a connect
//! never waits on DNS for a name it has resolved before. A failed refresh
//! keeps the stale answer, is counted, and is tried again a refresh later.
//!
//! A name with no answer yet is looked up by the first connect; connects
//! that come meanwhile wait for that same lookup (single flight), and share
//! its failure too. IP literals never reach the cache.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::stats::Counter;

/// How long an answer is used when the caller does not say (a cluster's
/// `dns_refresh_ms` default).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);

/// Names held at most; past it, entries nobody is using are dropped (the
/// `original_destination` traffic of a proxy may name any host).
const MAX_ENTRIES: usize = 4096;

type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// What the cache did, for stats and metrics.
#[derive(Debug, Default)]
pub struct Counts {
    /// Lookups made (first ones and refreshes).
    pub lookups: Counter,
    /// Lookups that failed or found no address.
    pub failures: Counter,
    /// Connects served from the cache (fresh or stale).
    pub cache_hits: Counter,
}

impl Counts {
    pub fn to_json(&self) -> Value {
        json!({
            "lookups": self.lookups.get(),
            "failures": self.failures.get(),
            "cache_hits": self.cache_hits.get(),
        })
    }

    /// `meshctl_dns_lookups_total` rows: (result, count).
    pub fn by_result(&self) -> [(&'static str, u64); 3] {
        let failed = self.failures.get();
        [
            ("resolved", self.lookups.get().saturating_sub(failed)),
            ("failed", failed),
            ("cached", self.cache_hits.get()),
        ]
    }
}

#[derive(Clone)]
struct Answer {
    addrs: Arc<[SocketAddr]>,
    at: Instant,
}

#[derive(Default)]
struct Entry {
    answer: Mutex<Option<Answer>>,
    /// Held by the lookup of a name without an answer: the connects queued
    /// behind it share its outcome.
    turn: tokio::sync::Mutex<()>,
    /// Lookups finished, and the last one's failure (shared by waiters).
    finished: AtomicU64,
    last_error: Mutex<Option<(io::ErrorKind, String)>>,
    /// A background refresh is running.
    refreshing: AtomicBool,
}

impl Entry {
    fn answer(&self) -> Option<Answer> {
        self.answer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn last_error(&self) -> io::Error {
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((kind, message)) => io::Error::new(*kind, Unresolved(message.clone())),
            None => io::Error::other(Unresolved("name lookup failed".into())),
        }
    }
}

pub struct Resolver {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    lookup: Lookup,
    pub counts: Arc<Counts>,
}

// === impl Resolver ===

impl Default for Resolver {
    /// Resolves with the system's resolver (`getaddrinfo`).
    fn default() -> Self {
        Resolver::with_lookup(Arc::new(|name: String| {
            Box::pin(async move { Ok(tokio::net::lookup_host(name).await?.collect()) })
        }))
    }
}

impl Resolver {
    fn with_lookup(lookup: Lookup) -> Self {
        Resolver {
            entries: Mutex::default(),
            lookup,
            counts: Arc::default(),
        }
    }

    /// The process-wide cache of `io::connect`, for callers without an
    /// engine's (the load generator); its counts show in no stats.
    pub fn global() -> &'static Resolver {
        static GLOBAL: OnceLock<Resolver> = OnceLock::new();
        GLOBAL.get_or_init(Resolver::default)
    }

    /// The addresses of `host_port` (an IP literal as it is), from the cache
    /// while its answer is younger than `refresh`.
    pub async fn resolve(
        &self,
        host_port: &str,
        refresh: Duration,
    ) -> io::Result<Arc<[SocketAddr]>> {
        if let Ok(addr) = host_port.parse::<SocketAddr>() {
            return Ok(Arc::from([addr]));
        }
        let entry = self.entry(host_port);
        if let Some(answer) = entry.answer() {
            self.counts.cache_hits.inc();
            if answer.at.elapsed() >= refresh && !entry.refreshing.swap(true, Ordering::AcqRel) {
                self.refresh_in_background(host_port, entry);
            }
            return Ok(answer.addrs);
        }
        let seen = entry.finished.load(Ordering::Acquire);
        let _turn = entry.turn.lock().await;
        if let Some(answer) = entry.answer() {
            self.counts.cache_hits.inc();
            return Ok(answer.addrs);
        }
        if entry.finished.load(Ordering::Acquire) != seen {
            // A lookup ran while this connect waited, and failed.
            return Err(entry.last_error());
        }
        let found = lookup(&self.lookup, &self.counts, host_port).await;
        let result = match found {
            Ok(addrs) => {
                let addrs: Arc<[SocketAddr]> = addrs.into();
                store(&entry, addrs.clone());
                Ok(addrs)
            }
            Err(e) => {
                *entry.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((e.kind(), e.to_string()));
                Err(e)
            }
        };
        entry.finished.fetch_add(1, Ordering::AcqRel);
        result
    }

    fn entry(&self, host_port: &str) -> Arc<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get(host_port) {
            return e.clone();
        }
        if entries.len() >= MAX_ENTRIES {
            // Only entries no connect or refresh holds.
            entries.retain(|_, e| Arc::strong_count(e) > 1);
        }
        entries.entry(host_port.to_string()).or_default().clone()
    }

    fn refresh_in_background(&self, host_port: &str, entry: Arc<Entry>) {
        let (lookup_fn, counts, name) = (
            self.lookup.clone(),
            self.counts.clone(),
            host_port.to_string(),
        );
        tokio::spawn(async move {
            match lookup(&lookup_fn, &counts, &name).await {
                Ok(addrs) => store(&entry, addrs.into()),
                Err(e) => {
                    tracing::warn!("refreshing {name} failed, the previous answer stays: {e}");
                    // Stale but kept; the next try is a refresh from now.
                    if let Some(a) = entry
                        .answer
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_mut()
                    {
                        a.at = Instant::now();
                    }
                }
            }
            entry.refreshing.store(false, Ordering::Release);
        });
    }

    /// Connects to `addr` (host:port) within `timeout` with TCP_NODELAY set,
    /// trying its addresses in order.
    pub async fn connect(
        &self,
        addr: &str,
        timeout: Duration,
        refresh: Duration,
    ) -> io::Result<tokio::net::TcpStream> {
        let attempt = async {
            let addrs = self.resolve(addr, refresh).await?;
            let mut last = None;
            for a in addrs.iter() {
                match tokio::net::TcpStream::connect(a).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::other(format!("{addr} has no address"))))
        };
        let stream = tokio::time::timeout(timeout, attempt).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {timeout:?}"),
            )
        })??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Why a name has no address: inside the `io::Error` of a failed lookup,
/// so that callers tell it from a refused connection (see `is_unresolved`).
#[derive(Debug)]
struct Unresolved(String);

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unresolved {}

/// Whether a connect failed because the host name did not resolve.
pub fn is_unresolved(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Unresolved>())
}

/// One counted lookup; no address is a failure too.
async fn lookup(lookup: &Lookup, counts: &Counts, name: &str) -> io::Result<Vec<SocketAddr>> {
    counts.lookups.inc();
    let failed = match lookup(name.to_string()).await {
        Ok(addrs) if !addrs.is_empty() => return Ok(addrs),
        Ok(_) => io::Error::new(
            io::ErrorKind::NotFound,
            Unresolved(format!("{name} has no address")),
        ),
        Err(e) => io::Error::new(e.kind(), Unresolved(format!("cannot resolve {name}: {e}"))),
    };
    counts.failures.inc();
    Err(failed)
}

fn store(entry: &Entry, addrs: Arc<[SocketAddr]>) {
    *entry.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(Answer {
        addrs,
        at: Instant::now(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A resolver whose lookups answer 10.0.0.<n> for the n-th lookup (after
    /// `delay`), or fail while `failing` is set.
    fn fake(delay: Duration) -> (Resolver, Arc<AtomicUsize>, Arc<AtomicBool>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let (c, f) = (calls.clone(), failing.clone());
        let r = Resolver::with_lookup(Arc::new(move |_name| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let fail = f.load(Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                if fail {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "no such name"));
                }
                Ok(vec![SocketAddr::from(([10, 0, 0, n as u8], 80))])
            })
        }));
        (r, calls, failing)
    }

    fn first(addrs: &[SocketAddr]) -> String {
        addrs[0].to_string()
    }

    /// Lets spawned refreshes run to their end.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_kept_for_the_refresh_then_refreshed_behind_the_caller() {
        let (r, calls, _) = fake(Duration::from_millis(10));
        let refresh = Duration::from_secs(5);
        assert_eq!(
            first(&r.resolve("svc:80", refresh).await.unwrap()),
            "10.0.0.1:80"
        );
        for _ in 0..5 {
            assert_eq!(
                first(&r.resolve("svc:80", refresh).await.unwrap()),
                "10.0.0.1:80"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(r.counts.cache_hits.get(), 5);

        tokio::time::advance(Duration::from_secs(5)).await;
        // Stale: served at once, a refresh starts behind it.
        assert_eq!(
            first(&r.resolve("svc:80", refresh).await.unwrap()),
            "10.0.0.1:80"
        );
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            first(&r.resolve("svc:80", refresh).await.unwrap()),
            "10.0.0.2:80"
        );
        assert_eq!(r.counts.lookups.get(), 2);
        assert_eq!(r.counts.failures.get(), 0);
        assert_eq!(r.counts.by_result()[0], ("resolved", 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_stale_answer_and_is_counted() {
        let (r, calls, failing) = fake(Duration::ZERO);
        let refresh = Duration::from_secs(1);
        r.resolve("svc:80", refresh).await.unwrap();
        failing.store(true, Ordering::SeqCst);
        tokio::time::advance(refresh).await;
        assert_eq!(
            first(&r.resolve("svc:80", refresh).await.unwrap()),
            "10.0.0.1:80"
        );
        settle().await;
        assert_eq!(r.counts.failures.get(), 1);
        // Tried again only a refresh after the failure.
        assert_eq!(
            first(&r.resolve("svc:80", refresh).await.unwrap()),
            "10.0.0.1:80"
        );
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        failing.store(false, Ordering::SeqCst);
        tokio::time::advance(refresh).await;
        r.resolve("svc:80", refresh).await.unwrap();
        settle().await;
        assert_eq!(
            first(&r.resolve("svc:80", refresh).await.unwrap()),
            "10.0.0.3:80"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_first_lookups_are_one() {
        let (r, calls, failing) = fake(Duration::from_millis(100));
        let r = Arc::new(r);
        let refresh = Duration::from_secs(5);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move { r.resolve("svc:80", refresh).await.map(|a| first(&a)) })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "10.0.0.1:80");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // A failing name: the waiters share the one failure.
        failing.store(true, Ordering::SeqCst);
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move { r.resolve("gone:80", refresh).await.is_err() })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(r.counts.failures.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn ip_literals_skip_the_cache() {
        let (r, calls, _) = fake(Duration::ZERO);
        let a = r.resolve("127.0.0.1:9", DEFAULT_REFRESH).await.unwrap();
        assert_eq!(first(&a), "127.0.0.1:9");
        let a = r.resolve("[::1]:9", DEFAULT_REFRESH).await.unwrap();
        assert_eq!(first(&a), "[::1]:9");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(r.counts.lookups.get() + r.counts.cache_hits.get(), 0);
    }

    #[tokio::test]
    async fn connects_through_the_system_resolver() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        let r = Resolver::default();
        let addr = format!("localhost:{port}");
        for _ in 0..3 {
            let s = r
                .connect(&addr, Duration::from_secs(5), DEFAULT_REFRESH)
                .await;
            // localhost may resolve to ::1 first, where nothing listens: the
            // next address is tried.
            assert!(s.is_ok(), "{s:?}");
        }
        assert_eq!(r.counts.lookups.get(), 1);
        assert_eq!(r.counts.cache_hits.get(), 2);
        let bad = r
            .connect(
                "does-not-exist.invalid:80",
                Duration::from_secs(5),
                DEFAULT_REFRESH,
            )
            .await;
        assert!(bad.as_ref().is_err_and(is_unresolved), "{bad:?}");
        assert_eq!(r.counts.failures.get(), 1);
        // A refused connection is not a name that did not resolve.
        drop(server);
        let refused = r
            .connect(&addr, Duration::from_secs(5), DEFAULT_REFRESH)
            .await;
        assert!(
            refused.as_ref().is_err_and(|e| !is_unresolved(e)),
            "{refused:?}"
        );
    }
}
