//! End-to-end tests of drivers written in Python (componentize-py) and JavaScript (jco, QuickJS)
//! against the same WIT world as the Rust drivers: built by their examples' build scripts,
//! loaded into one host beside the Rust sample driver, with logging, results, the API client
//! and a capability grant; then a restart that loads them from the compile cache.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Host, workdir};
use serde_json::{Value, json};

const DRIVERS: [&str; 4] = ["sample-driver", "rust-driver", "python-driver", "js-driver"];

/// The Python driver is granted one environment variable; the JavaScript one nothing.
const CONFIG: &str = r#"
[drivers.python-driver]
env = { GREETING = "hello from the host config" }
"#;

/// Each language: (driver, resource type, language label, definition description). The Rust
/// one is the same driver in Rust (examples/rust-driver).
const TASKS: [(&str, &str, &str, &str); 3] = [
    (
        "rust-driver",
        "rust-task",
        "rust",
        "Work for the Rust driver",
    ),
    (
        "python-driver",
        "python-task",
        "python",
        "Work for the Python driver",
    ),
    (
        "js-driver",
        "js-task",
        "javascript",
        "Work for the JavaScript driver",
    ),
];

async fn define_all(host: &Host) {
    host.define(
        "resource-1",
        json!({"type": "object", "properties": {"delay_ms": {"type": "integer"}}}),
    )
    .await;
    for (_, kind, _, description) in TASKS {
        let (status, body) = host
            .post(
                "/resource-definitions",
                &json!({
                    "name": kind,
                    "description": description,
                    "version": "1.0.0",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "steps": {"type": "integer", "minimum": 1, "maximum": 20},
                            "fail": {"type": "string"},
                            "depends_on": {"type": "string"},
                        },
                        "required": ["steps"],
                    },
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

/// Creates one resource per language plus one for the Rust sample driver, and checks each
/// driver's labelled lines, its result with `data`, and what it read back through the client.
async fn run_all(host: &Host, suffix: &str) {
    let sample_run = host
        .create(
            "resource-1",
            &format!("rust-{suffix}"),
            json!({"delay_ms": 10}),
        )
        .await;
    let mut runs = Vec::new();
    for (i, (driver, kind, language, description)) in TASKS.into_iter().enumerate() {
        let steps = 3 + i as u64;
        let name = format!("{language}-{suffix}");
        let run = host.create(kind, &name, json!({"steps": steps})).await;
        runs.push((driver, language, description, steps, run));
    }

    let sample = host.result(&sample_run).await;
    assert_eq!(sample["success"], true, "{sample}");
    assert_eq!(host.logs(&sample_run).await.len(), 5);

    for (driver, language, description, steps, run) in runs {
        let result = host.result(&run).await;
        assert_eq!(result["driver"], driver, "{result}");
        assert_eq!(
            result["success"],
            true,
            "{driver}: {result}\n{}",
            host.log()
        );
        let data = &result["data"];
        assert_eq!(data["language"], language, "{result}");
        assert_eq!(data["event"], "create", "{result}");
        assert_eq!(data["steps"], steps, "{result}");
        // Read back through the API client: the stored version, and the definition's
        // description, which the event's payload does not carry.
        assert_eq!(data["read_back"]["version"], "1", "{result}");
        assert_eq!(
            data["read_back"]["definition_description"], description,
            "{result}"
        );

        let lines = host.logs(&run).await;
        let working: Vec<&Value> = lines
            .iter()
            .filter(|l| l["step"].as_str().is_some_and(|s| s != "done"))
            .collect();
        assert_eq!(working.len() as u64, steps, "{driver}: {lines:?}");
        for (i, line) in working.iter().enumerate() {
            assert_eq!(line["step"], (i + 1).to_string(), "{line}");
            assert_eq!(line["language"], language, "{line}");
            assert_eq!(line["driver"], driver, "{line}");
            assert!(
                line["message"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with(&format!("{}/{steps}", i + 1)),
                "{line}"
            );
        }
        assert!(
            lines.iter().any(|l| l["step"] == "done"),
            "{driver}: {lines:?}"
        );
    }
}

fn drivers_by_name(list: &Value) -> std::collections::BTreeMap<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d["name"].as_str()?.to_string(), d.clone())))
        .collect()
}

/// Python and JavaScript drivers next to the Rust sample driver in one host: labelled log
/// lines, results with `data`, values read back through the API client, and a granted
/// environment variable that only the Python driver sees.
#[tokio::test]
async fn python_and_javascript_drivers_run_beside_rust() {
    let dir = workdir(&DRIVERS);
    let host = Host::start(dir.path(), CONFIG);
    let (_, list) = host.get("/drivers").await;
    let drivers = drivers_by_name(&list);
    for name in DRIVERS {
        assert_eq!(drivers[name]["state"], "ready", "{list}");
    }
    assert_eq!(
        drivers["python-driver"]["resources"],
        json!(["python-task"])
    );
    assert_eq!(drivers["js-driver"]["resources"], json!(["js-task"]));

    define_all(&host).await;
    run_all(&host, "one").await;

    // The capability grant: the Python driver sees GREETING because the config grants it.
    let run = host
        .create("python-task", "greeting", json!({"steps": 1}))
        .await;
    let result = host.result(&run).await;
    assert_eq!(
        result["data"]["greeting"], "hello from the host config",
        "{result}"
    );

    // An exception escaping reconcile becomes a failed result that names it, with the
    // traceback or stack in the run's log; the host goes on serving.
    for (kind, expected) in [
        ("python-task", "RuntimeError: asked to fail"),
        ("js-task", "Error: asked to fail"),
    ] {
        let run = host
            .create(kind, "fails", json!({"steps": 1, "fail": "asked to fail"}))
            .await;
        let result = host.result(&run).await;
        assert_eq!(result["success"], false, "{result}");
        assert!(
            result["message"].as_str().unwrap_or("").contains(expected),
            "{result}"
        );
        let lines = host.logs(&run).await;
        assert!(
            lines.iter().any(|l| l["stream"] == "stderr"
                && l["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("asked to fail")),
            "{kind}: {lines:?}"
        );
    }
    // A client call that fails reaches the driver as its language's error with the WIT
    // variant's kind: each driver reads a resource that does not exist.
    for (driver, kind, _, _) in TASKS {
        let run = host
            .create(
                kind,
                "dangling",
                json!({"steps": 1, "depends_on": "nowhere"}),
            )
            .await;
        let result = host.result(&run).await;
        assert_eq!(result["success"], false, "{driver}: {result}");
        let message = result["message"].as_str().unwrap_or("");
        // "not-found" from the Python and JS SDKs' ClientError, "not found" from Rust's.
        let not_found = message.contains("not-found") || message.contains("not found");
        assert!(
            message.contains("could not read dangling back") && not_found,
            "{driver}: {result}"
        );
        assert_eq!(
            result["attempts"], 1,
            "a missing resource is not retried: {result}"
        );
    }
    run_all(&host, "two").await;
}

/// A restart loads both from the compile cache in milliseconds, and they still work. The first
/// start compiles them without holding up the API or the Rust driver, and a resource created
/// during the Python driver's first compile still reaches it.
#[tokio::test]
async fn a_restart_loads_them_from_the_compile_cache() {
    let dir = workdir(&DRIVERS);

    // First start, empty cache: the API answers, and the small Rust driver is ready, while the
    // Python component (about 8 s to compile here) is still loading.
    let started = Instant::now();
    let mut host = Host::start_serving(dir.path(), CONFIG, &[]);
    let mut seen_rust_ready_while_python_loads = false;
    let mut early_run = None;
    loop {
        let (status, health) = host.get("/health").await;
        assert_eq!(status, 200, "{health}");
        let loading = health["drivers"]["loading"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if loading.is_empty() {
            break;
        }
        let python_loading = loading.iter().any(|f| {
            f.as_str()
                .is_some_and(|f| f.ends_with("python-driver.wasm"))
        });
        let (_, list) = host.get("/drivers").await;
        if python_loading
            && !seen_rust_ready_while_python_loads
            && drivers_by_name(&list)
                .get("sample-driver")
                .is_some_and(|d| d["state"] == "ready")
        {
            seen_rust_ready_while_python_loads = true;
            // Definitions are written at once; a resource created now waits for the drivers
            // found at start, so it reaches the Python driver that is still compiling.
            define_all(&host).await;
            early_run = Some(
                host.create("python-task", "early", json!({"steps": 1}))
                    .await,
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "drivers still loading after 3 minutes: {health}\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen_rust_ready_while_python_loads,
        "the Rust driver was not served while the Python driver compiled"
    );
    let (_, list) = host.get("/drivers").await;
    let first = drivers_by_name(&list);
    for name in DRIVERS {
        assert_eq!(first[name]["loaded_from"], "compiled", "{list}");
    }
    let early = host
        .result(&early_run.expect("created while loading"))
        .await;
    assert_eq!(early["driver"], "python-driver", "{early}");
    assert_eq!(early["success"], true, "{early}");
    run_all(&host, "before").await;
    assert!(host.stop().success(), "{}", host.log());

    // Second start, same data dir: every driver comes from the cache.
    let host = Host::start(dir.path(), CONFIG);
    let (_, list) = host.get("/drivers").await;
    let second = drivers_by_name(&list);
    for name in DRIVERS {
        let d = &second[name];
        assert_eq!(d["loaded_from"], "cache", "{list}");
        assert_eq!(d["sha256"], first[name]["sha256"], "{list}");
        // Written to the process's stderr directly, not through the test's captured output, so
        // that the figures show in every run of the suite.
        let _ = writeln!(
            std::io::stderr(),
            "{name}: compiled in {:.0} ms on the first start, loaded from the cache in {:.1} ms after the restart",
            first[name]["load_ms"].as_f64().unwrap_or(0.0),
            d["load_ms"].as_f64().unwrap_or(0.0)
        );
    }
    run_all(&host, "after").await;
}

/// `check --config` says when a component imports `wasi:http` that the config does not grant
/// (jco's default StarlingMonkey build does), and what the grant looks like when it does.
#[test]
fn check_names_an_http_import_the_config_does_not_grant() {
    let wasm = common::example_driver_variant(
        "js-driver",
        "starlingmonkey",
        &["--backend", "starlingmonkey"],
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("host.toml");
    let check_with = |extra: &str| {
        std::fs::write(
            &config,
            format!("drivers_dir = \".\"\ndata_dir = \".\"\n{extra}"),
        )
        .expect("config");
        let (code, out, err) = common::run_cli(&[
            "check",
            "--config",
            config.to_str().expect("utf-8 path"),
            wasm.to_str().expect("utf-8 path"),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        out
    };

    let out = check_with("");
    assert!(out.contains("wasi:http/outgoing-handler@"), "{out}");
    assert!(
        out.contains("wasi:http: NOT granted, every request will be refused"),
        "{out}"
    );
    assert!(out.contains("[drivers.js-driver.http]"), "{out}");

    let out = check_with("[drivers.js-driver.http]\nallow = [\"api.example.com\"]\n");
    assert!(
        out.contains("wasi:http: granted to api.example.com"),
        "{out}"
    );
}
