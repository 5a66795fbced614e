//! The driver of examples/python-driver and examples/js-driver, in Rust: labelled log lines, a
//! read-back through the API client, and a result with JSON data. It exists so that the three
//! languages can be compared doing the same work (`cargo bench --bench languages`).

use conveyor_driver::client::{self, ClientError};
use conveyor_driver::{Driver, DriverResult, Logger, Resource};
use serde_json::{Value, json};

struct RustDriver;

impl Driver for RustDriver {
    const NAME: &'static str = "rust-driver";
    const RESOURCES: &'static [&'static str] = &["rust-task"];

    fn reconcile(payload: &str, event: &str, _run_id: &str, logger: &Logger) -> DriverResult {
        let task = match Resource::<Value>::parse(payload) {
            Ok(t) => t,
            Err(e) => return DriverResult::failure(format!("the payload is not a resource: {e}")),
        };
        if let Some(message) = task.spec.get("fail").and_then(Value::as_str) {
            panic!("{message}");
        }
        let steps = task.spec.get("steps").and_then(Value::as_u64).unwrap_or(3);
        for i in 1..=steps {
            logger.log(
                [("step", i.to_string()), ("language", "rust".to_string())],
                format!("Rust Driver Working... {i}/{steps}"),
            );
        }

        // Read back through the API client what the payload does not carry: the definition,
        // and the resource this one depends on, if any (a missing one is a permanent failure).
        let read = client::get_resource::<Value>(&task.resource, &task.name).and_then(|stored| {
            let definition = client::get_resource_definition(&task.resource)?;
            if let Some(dep) = task.spec.get("depends_on").and_then(Value::as_str) {
                client::get_resource::<Value>(&task.resource, dep)?;
            }
            Ok((stored, definition))
        });
        let (stored, definition) = match read {
            Ok(r) => r,
            Err(e @ ClientError::Unavailable(_)) => {
                return DriverResult::retry(format!("the API is unavailable: {e}"));
            }
            Err(e) => {
                return DriverResult::failure(format!("could not read {} back: {e}", task.name));
            }
        };

        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "(no GREETING granted)".into());
        logger.log(
            [("step", "done"), ("language", "rust")],
            format!("{greeting} from {}", stored.name),
        );
        DriverResult::success("Rust Driver Reconciled Successfully").with_data(json!({
            "language": "rust",
            "event": event,
            "steps": steps,
            "greeting": greeting,
            "read_back": {
                "version": stored.version(),
                "definition_description": definition.description,
            },
        }))
    }
}

conveyor_driver::export!(RustDriver);
