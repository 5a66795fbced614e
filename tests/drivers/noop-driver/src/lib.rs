//! A driver that does nothing and succeeds: the baseline for the per-event benchmark.

use conveyor_driver::{Driver, DriverResult, Logger};

struct NoopDriver;

impl Driver for NoopDriver {
    const NAME: &'static str = "noop-driver";
    const RESOURCES: &'static [&'static str] = &["noop"];

    fn reconcile(_payload: &str, _event: &str, _run_id: &str, _logger: &Logger) -> DriverResult {
        DriverResult::success("ok")
    }
}

conveyor_driver::export!(NoopDriver);
