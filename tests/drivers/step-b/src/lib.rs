//! Pipeline test driver `step-b`: see the `step-common` crate.

use conveyor_driver::{Driver, DriverResult, Logger};

struct Step;

impl Driver for Step {
    const NAME: &'static str = "step-b";
    const RESOURCES: &'static [&'static str] = step_common::RESOURCES;

    fn reconcile(payload: &str, event: &str, _run_id: &str, logger: &Logger) -> DriverResult {
        step_common::reconcile(Self::NAME, payload, event, logger)
    }
}

conveyor_driver::export!(Step);
