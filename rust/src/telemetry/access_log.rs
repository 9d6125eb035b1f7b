//! Access-log writers: one thread per destination (a file or stderr). A
//! finished request formats its line into the writer's buffer (no
//! allocation, a lock nobody else holds but for a swap every `FLUSH`) and
//! goes on; the writer thread swaps the buffer out and writes it in one go.
//! The buffer is bounded: past `CAP` bytes a line is dropped and counted,
//! so a slow disk never blocks a request. `reopen()` makes every writer
//! reopen its file before its next write (SIGHUP, for logrotate).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::exchange::Exchange;
use super::TelemetryStats;
use crate::config::{LogFormat, LogPath};

/// Bytes waiting for a writer at most; lines past it are dropped.
const CAP: usize = 4 << 20;

/// How long a busy writer sleeps between writes: the longest a line waits.
const FLUSH: Duration = Duration::from_millis(50);

/// What a writer and the requests feeding it share.
struct Inner {
    buf: Mutex<Vec<u8>>,
    ready: Condvar,
    closed: AtomicBool,
}

pub struct LogWriter {
    inner: Arc<Inner>,
    stats: Arc<TelemetryStats>,
}

impl LogWriter {
    pub fn submit(&self, format: LogFormat, x: Box<Exchange>) {
        let mut buf = self.inner.buf.lock().unwrap_or_else(|e| e.into_inner());
        if buf.len() >= CAP {
            drop(buf);
            self.stats.access_log_dropped.inc();
            return;
        }
        let was_empty = buf.is_empty();
        let written = match format {
            LogFormat::Json => x.write_json(&mut *buf),
            LogFormat::Text => buf.write_all(x.text_line().as_bytes()),
        };
        drop(buf);
        if written.is_ok() {
            self.stats.access_log_written.inc();
        } else {
            self.stats.access_log_dropped.inc();
        }
        if was_empty {
            // Only the first line of a batch wakes the writer.
            self.inner.ready.notify_one();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.inner.closed.store(true, Relaxed);
        self.inner.ready.notify_one();
    }
}

/// The writers in use, by destination; a writer ends when no listener
/// holds it any more.
pub struct LogWriters {
    writers: Mutex<HashMap<LogPath, Weak<LogWriter>>>,
    generation: Arc<AtomicU64>,
    stats: Arc<TelemetryStats>,
}

impl LogWriters {
    pub fn new(stats: Arc<TelemetryStats>) -> Self {
        LogWriters {
            writers: Mutex::default(),
            generation: Arc::default(),
            stats,
        }
    }

    /// The writer for `path`, started when there is none; Err when the file
    /// cannot be opened.
    pub fn get(&self, path: &LogPath) -> io::Result<Arc<LogWriter>> {
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = writers.get(path).and_then(Weak::upgrade) {
            return Ok(w);
        }
        let out = open(path)?;
        let inner = Arc::new(Inner {
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            ready: Condvar::new(),
            closed: AtomicBool::new(false),
        });
        let writer = Arc::new(LogWriter {
            inner: inner.clone(),
            stats: self.stats.clone(),
        });
        let generation = self.generation.clone();
        let target = path.clone();
        std::thread::Builder::new()
            .name("meshctl-access-log".into())
            .spawn(move || write_lines(&inner, out, &target, &generation))?;
        writers.retain(|_, w| w.strong_count() > 0);
        writers.insert(path.clone(), Arc::downgrade(&writer));
        Ok(writer)
    }

    pub fn reopen(&self) {
        self.generation.fetch_add(1, Relaxed);
    }
}

fn open(path: &LogPath) -> io::Result<Box<dyn Write + Send>> {
    Ok(match path {
        LogPath::Stderr => Box::new(io::stderr()),
        LogPath::File(p) => Box::new(open_file(p)?),
    })
}

fn open_file(p: &Path) -> io::Result<File> {
    // Request lines name paths and identities: readable by the owner only.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(p)
}

fn write_lines(
    inner: &Inner,
    mut out: Box<dyn Write + Send>,
    path: &LogPath,
    generation: &AtomicU64,
) {
    let mut seen = generation.load(Relaxed);
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        {
            let mut buf = inner.buf.lock().unwrap_or_else(|e| e.into_inner());
            while buf.is_empty() && !inner.closed.load(Relaxed) {
                buf = inner.ready.wait(buf).unwrap_or_else(|e| e.into_inner());
            }
            std::mem::swap(&mut *buf, &mut spare);
        }
        let now = generation.load(Relaxed);
        if now != seen {
            seen = now;
            if let LogPath::File(p) = path {
                match open_file(p) {
                    Ok(f) => out = Box::new(f),
                    Err(e) => tracing::warn!("access log {}: cannot reopen: {e}", p.display()),
                }
            }
        }
        if !spare.is_empty() {
            if let Err(e) = out.write_all(&spare).and_then(|()| out.flush()) {
                tracing::warn!("access log: lines lost: {e}");
            }
            spare.clear();
        } else if inner.closed.load(Relaxed) {
            return;
        }
        // Let a batch gather rather than wake up for every line.
        std::thread::sleep(FLUSH);
    }
}
