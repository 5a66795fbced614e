//! A driver for the host's end-to-end tests. It listens to resources of type `test` and does
//! what the resource's `spec.action` says, so one component covers well-behaved and hostile
//! behaviour:
//!
//! | action | behaviour |
//! |---|---|
//! | `ok` (default) | logs one line per `spec.lines` (default 1) and succeeds with `data` |
//! | `panic` | panics with `spec.message` |
//! | `loop` | spins forever |
//! | `sleep` | sleeps `spec.ms` milliseconds, then succeeds with `data.attempt` |
//! | `memory` | allocates without bound |
//! | `stdout` | prints `spec.message` to stdout and stderr, then succeeds |
//! | `fail` | returns a permanent failure |
//! | `flaky` | asks for a retry until attempt `spec.succeed_on`, then succeeds |
//! | `client` | reads its own resource and the `test` definition through the API client |

use conveyor_driver::client;
use conveyor_driver::{Driver, DriverResult, Logger, Resource};
use serde_json::{Value, json};

struct TestDriver;

impl Driver for TestDriver {
    const NAME: &'static str = "test-driver";
    const RESOURCES: &'static [&'static str] = &["test"];

    fn reconcile(payload: &str, event: &str, run_id: &str, logger: &Logger) -> DriverResult {
        let resource = match Resource::<Value>::parse(payload) {
            Ok(r) => r,
            Err(e) => return DriverResult::failure(format!("bad payload: {e}")),
        };
        let spec = &resource.spec;
        let text = |key: &str| {
            spec.get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let number =
            |key: &str, default: u64| spec.get(key).and_then(Value::as_u64).unwrap_or(default);
        match spec.get("action").and_then(Value::as_str).unwrap_or("ok") {
            "ok" => {
                for i in 0..number("lines", 1) {
                    logger.log([("line", (i + 1).to_string())], format!("line {}", i + 1));
                }
                DriverResult::success("ok").with_data(json!({
                    "event": event,
                    "run_id": run_id,
                    "attempt": logger.attempt(),
                    "version": resource.version(),
                }))
            }
            "panic" => panic!("{}", text("message")),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(number("ms", 100)));
                DriverResult::success("slept").with_data(json!({"attempt": logger.attempt()}))
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "stdout" => {
                println!("{}", text("message"));
                eprintln!("to stderr: {}", text("message"));
                DriverResult::success("printed")
            }
            "fail" => DriverResult::failure(text("message")),
            "flaky" => {
                if u64::from(logger.attempt()) < number("succeed_on", 3) {
                    DriverResult::retry(format!("not yet (attempt {})", logger.attempt()))
                } else {
                    DriverResult::success(format!("succeeded on attempt {}", logger.attempt()))
                }
            }
            "client" => {
                let me = client::get_resource::<Value>(&resource.resource, &resource.name);
                let def = client::get_resource_definition(&resource.resource);
                let missing = client::get_resource::<Value>("test", "does-not-exist");
                match (me, def) {
                    (Ok(me), Ok(def)) => DriverResult::success("read through the client")
                        .with_data(json!({
                            "id": me.id,
                            "definition": def.name,
                            "missing": missing.err().map(|e| e.to_string()),
                        })),
                    (Err(e), _) | (_, Err(e)) => {
                        DriverResult::failure(format!("client failed: {e}"))
                    }
                }
            }
            other => DriverResult::failure(format!("unknown action {other:?}")),
        }
    }
}

conveyor_driver::export!(TestDriver);
