//! What the pipeline test drivers (`step-a`, `step-b`, `step-c`) do. A driver's name comes
//! from its component, so each step is its own small crate that calls [`reconcile`] with its
//! name. They listen to resources of type `staged`, and each:
//!
//! - logs `<name> handling <event>`;
//! - sleeps `spec.sleep_ms` milliseconds (default 0);
//! - fails for good when `spec.fail` is its name, with the message `<name> failed on purpose`;
//! - asks for a retry until attempt `spec.flaky_until` when `spec.flaky` is its name;
//! - otherwise succeeds with data `{"driver","event","attempt","seen"}`, where `seen` maps
//!   each `driverresults.<driver>` key in the payload's metadata to the result stored there,
//!   so a test can check what an earlier step left for a later one.

use conveyor_driver::{DriverResult, Logger, Resource};
use serde_json::{Map, Value, json};

/// The resource type the step drivers listen to.
pub const RESOURCES: &[&str] = &["staged"];

/// Reconciles as the step driver called `name`.
pub fn reconcile(name: &str, payload: &str, event: &str, logger: &Logger) -> DriverResult {
    let resource = match Resource::<Value>::parse(payload) {
        Ok(r) => r,
        Err(e) => return DriverResult::failure(format!("bad payload: {e}")),
    };
    logger.log([("step", name)], format!("{name} handling {event}"));
    let spec = &resource.spec;
    let sleep = spec.get("sleep_ms").and_then(Value::as_u64).unwrap_or(0);
    if sleep > 0 {
        std::thread::sleep(std::time::Duration::from_millis(sleep));
    }
    if spec.get("fail").and_then(Value::as_str) == Some(name) {
        return DriverResult::failure(format!("{name} failed on purpose"));
    }
    if spec.get("flaky").and_then(Value::as_str) == Some(name) {
        let until = spec.get("flaky_until").and_then(Value::as_u64).unwrap_or(3);
        if u64::from(logger.attempt()) < until {
            return DriverResult::retry(format!("{name} not ready (attempt {})", logger.attempt()));
        }
    }
    let seen: Map<String, Value> = resource
        .metadata
        .iter()
        .filter_map(|(k, v)| {
            let driver = k.strip_prefix("driverresults.")?;
            Some((
                driver.to_string(),
                serde_json::from_str(v).unwrap_or(Value::Null),
            ))
        })
        .collect();
    DriverResult::success(format!("{name} done")).with_data(json!({
        "driver": name,
        "event": event,
        "attempt": logger.attempt(),
        "seen": seen,
    }))
}
