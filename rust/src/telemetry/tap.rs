//! Tap: a live stream of request metadata for whoever asks (the sidecar,
//! relaying to `meshctl tap`). Off until a tap is open: the request path
//! checks one atomic. Each tap has its own filter and a bounded queue; a
//! slow reader loses events (counted), a request never waits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use http::Method;
use serde_json::Value;

use super::exchange::Exchange;
use crate::stats::Counter;

#[derive(Debug, Clone, Default)]
pub struct TapFilter {
    pub method: Option<Method>,
    pub path_prefix: Option<String>,
    pub status: Option<u16>,
    pub authority: Option<String>,
}

impl TapFilter {
    fn matches(&self, x: &Exchange) -> bool {
        self.method
            .as_ref()
            .is_none_or(|m| x.method.as_ref() == Some(m))
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|p| x.path().starts_with(p.as_str()))
            && self.status.is_none_or(|s| x.status == s)
            && self
                .authority
                .as_ref()
                .is_none_or(|a| x.authority().eq_ignore_ascii_case(a))
    }
}

pub struct Tap {
    filter: TapFilter,
    capacity: usize,
    queue: Mutex<VecDeque<Value>>,
    ready: Condvar,
    pub dropped: Counter,
    closed: AtomicBool,
}

impl Tap {
    /// Up to `max` events; waits up to `timeout` for the first one.
    pub fn poll(&self, timeout: Duration, max: usize) -> Vec<Value> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.is_empty() && !self.closed.load(Ordering::Acquire) {
            q = self
                .ready
                .wait_timeout_while(q, timeout, |q| {
                    q.is_empty() && !self.closed.load(Ordering::Acquire)
                })
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let n = q.len().min(max);
        q.drain(..n).collect()
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The open taps of one data plane.
#[derive(Default)]
pub struct TapHub {
    open: AtomicUsize,
    taps: Mutex<Vec<Weak<Tap>>>,
}

impl TapHub {
    /// Whether any tap is open: the request path's only cost when none is.
    #[inline]
    pub fn active(&self) -> bool {
        self.open.load(Ordering::Relaxed) > 0
    }

    pub fn open(&self, filter: TapFilter, capacity: usize) -> Arc<Tap> {
        let tap = Arc::new(Tap {
            filter,
            capacity: capacity.max(1),
            queue: Mutex::default(),
            ready: Condvar::new(),
            dropped: Counter::default(),
            closed: AtomicBool::new(false),
        });
        let mut taps = self.taps.lock().unwrap_or_else(|e| e.into_inner());
        taps.push(Arc::downgrade(&tap));
        self.open.store(taps.len(), Ordering::Relaxed);
        tap
    }

    pub fn publish(&self, x: &Exchange) {
        let mut taps = self.taps.lock().unwrap_or_else(|e| e.into_inner());
        taps.retain(|t| t.upgrade().is_some_and(|t| !t.is_closed()));
        self.open.store(taps.len(), Ordering::Relaxed);
        let mut event = None;
        for tap in taps.iter().filter_map(Weak::upgrade) {
            if !tap.filter.matches(x) {
                continue;
            }
            let event = event.get_or_insert_with(|| x.tap_event());
            let mut q = tap.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= tap.capacity {
                tap.dropped.inc();
                continue;
            }
            q.push_back(event.clone());
            drop(q);
            tap.ready.notify_one();
        }
    }
}
