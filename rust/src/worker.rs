//! Which runtime thread we are on, so that per-worker state (connection
//! pools) is picked without touching anything another worker uses.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// This thread's index (0 off the runtime).
#[inline]
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// A hook for `on_thread_start` that numbers the runtime's threads.
pub fn numbering() -> impl Fn() + Send + Sync + 'static {
    let next = Arc::new(AtomicUsize::new(0));
    move || INDEX.with(|i| i.set(next.fetch_add(1, Ordering::Relaxed)))
}
