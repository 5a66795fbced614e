//! The Conveyor CI sample driver (the Go runtime's `sample-driver`), ported to a WebAssembly
//! component. It logs five labelled steps and succeeds. The pause between steps is 2 s in the
//! Go original; here it defaults to 200 ms so the demo is quick, and a resource can set it with
//! `spec.delay_ms`.

use std::time::Duration;

use conveyor_driver::{Driver, DriverResult, Logger, Resource};

struct SampleDriver;

impl Driver for SampleDriver {
    const NAME: &'static str = "sample-driver";
    const RESOURCES: &'static [&'static str] = &["resource-1"];

    fn reconcile(payload: &str, _event: &str, _run_id: &str, logger: &Logger) -> DriverResult {
        let delay = Resource::<serde_json::Value>::parse(payload)
            .ok()
            .and_then(|r| r.spec.get("delay_ms").and_then(|v| v.as_u64()))
            .unwrap_or(200);
        for i in 0..5 {
            logger.log(
                [("step", format!("{}", i + 1))],
                format!("Sample Driver Working... {}/5", i + 1),
            );
            std::thread::sleep(Duration::from_millis(delay));
        }
        DriverResult::success("Sample Driver Reconciled Successfully")
    }
}

conveyor_driver::export!(SampleDriver);
