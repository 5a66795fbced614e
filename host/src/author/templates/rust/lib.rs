//! The {{name}} driver: logs one line per step of its resource's spec, reads the resource's
//! definition back through the host's API client, and succeeds with JSON data.

use conveyor_driver::{Driver, DriverResult, Logger, Resource, client};
use serde_json::{Value, json};

struct {{Type}};

impl Driver for {{Type}} {
    const NAME: &'static str = "{{name}}";
    const RESOURCES: &'static [&'static str] = &["{{kind}}"];

    fn reconcile(payload: &str, _event: &str, _run_id: &str, logger: &Logger) -> DriverResult {
        let task = match Resource::<Value>::parse(payload) {
            Ok(t) => t,
            Err(e) => return DriverResult::failure(format!("bad payload: {e}")),
        };
        let steps = task.spec.get("steps").and_then(Value::as_u64).unwrap_or(1);
        for i in 1..=steps {
            logger.log([("step", i.to_string())], format!("step {i} of {steps}"));
        }
        let definition = match client::get_resource_definition(&task.resource) {
            Ok(d) => d,
            Err(e) if e.is_transient() => {
                return DriverResult::retry(format!("the API is unavailable: {e}"));
            }
            Err(e) => return DriverResult::failure(format!("cannot read the definition: {e}")),
        };
        DriverResult::success(format!("reconciled {}", task.name)).with_data(json!({
            "steps": steps,
            "definition": definition.description,
        }))
    }
}

conveyor_driver::export!({{Type}});
