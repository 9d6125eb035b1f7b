//! Which worker thread we are on, so that per-worker state (connection
//! pools) is picked without touching anything another worker uses.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// This thread's index (0 off the runtime).
#[inline]
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Numbers this thread: worker `index`'s driver thread calls it first.
pub fn set_index(index: usize) {
    INDEX.with(|i| i.set(index));
}
