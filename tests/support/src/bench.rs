//! What the benches share: a log sink that only counts, and the budget they run drivers with.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use conveyor_host::{Limits, Log, LogSink};

/// The budget of a benchmarked reconcile: the host's defaults, so that it measures the path
/// a real event takes.
pub const BUDGET: Limits = Limits {
    timeout: Duration::from_secs(30),
    cpu: Duration::from_secs(10),
    memory: 64 << 20,
    result_size: 1 << 20,
    log_lines: 10_000,
    log_bytes: 1 << 20,
};

/// A log sink that only counts lines, so that no log store is measured.
#[derive(Default)]
pub struct CountingSink(AtomicU64);

impl CountingSink {
    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl LogSink for CountingSink {
    fn write(&self, line: Log) {
        black_box(line);
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}
