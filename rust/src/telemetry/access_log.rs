//! Access-log writers: one thread per destination (a file or stderr), fed
//! through a bounded queue. A request hands its record over with
//! `try_send` and never waits: when the queue is full the line is dropped
//! and counted. Lines are formatted on the writer's thread. `reopen()`
//! makes every writer reopen its file before the next line (SIGHUP, for
//! logrotate).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, Weak};

use super::exchange::Exchange;
use super::TelemetryStats;
use crate::config::{LogFormat, LogPath};

/// Lines waiting for a writer at most; more are dropped.
const QUEUE: usize = 8192;

type Line = (LogFormat, Box<Exchange>);

pub struct LogWriter {
    tx: SyncSender<Line>,
    stats: Arc<TelemetryStats>,
}

impl LogWriter {
    pub fn submit(&self, format: LogFormat, x: Box<Exchange>) {
        if self.tx.try_send((format, x)).is_err() {
            self.stats.access_log_dropped.inc();
        }
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
        let (tx, rx) = sync_channel(QUEUE);
        let writer = Arc::new(LogWriter {
            tx,
            stats: self.stats.clone(),
        });
        let generation = self.generation.clone();
        let stats = self.stats.clone();
        let target = path.clone();
        std::thread::Builder::new()
            .name("meshctl-access-log".into())
            .spawn(move || write_lines(rx, out, &target, &generation, &stats))?;
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
    rx: Receiver<Line>,
    out: Box<dyn Write + Send>,
    path: &LogPath,
    generation: &AtomicU64,
    stats: &TelemetryStats,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut seen = generation.load(Relaxed);
    // Block for one line, then take whatever else is queued, then flush.
    while let Ok(first) = rx.recv() {
        let now = generation.load(Relaxed);
        if now != seen {
            seen = now;
            let _ = out.flush();
            if let LogPath::File(p) = path {
                match open_file(p) {
                    Ok(f) => out = BufWriter::with_capacity(64 * 1024, Box::new(f)),
                    Err(e) => tracing::warn!("access log {}: cannot reopen: {e}", p.display()),
                }
            }
        }
        let mut next = Some(first);
        while let Some((format, x)) = next.take() {
            let line = match format {
                LogFormat::Json => x.json_line(),
                LogFormat::Text => x.text_line(),
            };
            if out.write_all(line.as_bytes()).is_ok() {
                stats.access_log_written.inc();
            } else {
                stats.access_log_dropped.inc();
            }
            match rx.try_recv() {
                Ok(line) => next = Some(line),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}
