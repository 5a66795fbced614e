//! Drivers written in Python (componentize-py) and JavaScript (jco, QuickJS) against the same
//! WIT world as the Rust drivers: built by their examples' build scripts, loaded into one host
//! beside the Rust sample driver, with logging, results, the API client and a capability
//! grant; a first start that serves while they compile; and a restart that loads them from
//! the compile cache.

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::{Value, json};
use support::Host;
use tokio::sync::OnceCell;

use crate::{Fixture, run_cli};

const DRIVERS: [&str; 4] = ["sample-driver", "rust-driver", "python-driver", "js-driver"];

/// The Python driver is granted one environment variable; the JavaScript one nothing.
const CONFIG: &str = r#"
[drivers.python-driver]
env = { GREETING = "hello from the host config" }
"#;

/// One language's driver, its resource type, its language label and its definition's
/// description. The Rust one is the same driver in Rust (examples/rust-driver).
type Task = (&'static str, &'static str, &'static str, &'static str);

const RUST: Task = (
    "rust-driver",
    "rust-task",
    "rust",
    "Work for the Rust driver",
);
const PYTHON: Task = (
    "python-driver",
    "python-task",
    "python",
    "Work for the Python driver",
);
const JS: Task = (
    "js-driver",
    "js-task",
    "javascript",
    "Work for the JavaScript driver",
);
const TASKS: [Task; 3] = [RUST, PYTHON, JS];

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

/// A resource for the sample driver; returns its run.
async fn start_sample(host: &Host, suffix: &str) -> String {
    host.create(
        "resource-1",
        &format!("rust-{suffix}"),
        json!({"delay_ms": 10}),
    )
    .await
}

/// The sample driver's run succeeded with its five lines.
async fn check_sample(host: &Host, run: &str) {
    let sample = host.result(run).await;
    assert_eq!(sample["success"], true, "{sample}");
    assert_eq!(host.logs(run).await.len(), 5);
}

/// A task for a language's driver, with `steps` steps: (task, steps, run).
async fn start_task(host: &Host, task: Task, steps: u64, suffix: &str) -> (Task, u64, String) {
    let (_, kind, language, _) = task;
    let name = format!("{language}-{suffix}");
    let run = host.create(kind, &name, json!({"steps": steps})).await;
    (task, steps, run)
}

/// A language's driver's labelled lines, its result with `data`, and what it read back through
/// the client.
async fn check_task(host: &Host, (task, steps, run): (Task, u64, String)) {
    let (driver, _, language, description) = task;
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

/// Creates one resource per language plus one for the Rust sample driver, all at once, and
/// checks each driver's lines, result and read-back.
async fn run_all(host: &Host, suffix: &str) {
    let sample_run = start_sample(host, suffix).await;
    let mut runs = Vec::new();
    for (i, task) in TASKS.into_iter().enumerate() {
        runs.push(start_task(host, task, 3 + i as u64, suffix).await);
    }
    check_sample(host, &sample_run).await;
    for run in runs {
        check_task(host, run).await;
    }
}

fn drivers_by_name(list: &Value) -> BTreeMap<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d["name"].as_str()?.to_string(), d.clone())))
        .collect()
}

// ---- two starts of the binary on one data directory --------------------------------------

/// The binary started twice on one data directory: the first start with an empty compile
/// cache, watched while the drivers compile, used and stopped; the second from the cache.
struct Restart {
    /// Its directory, whose `data/cache/` holds every driver compiled.
    dir: tempfile::TempDir,
    /// Whether the Rust sample driver was ready while the Python driver still compiled.
    rust_ready_while_python_loads: bool,
    /// The result of a resource for the Python driver created while it still compiled.
    early: Option<Value>,
    /// `GET /drivers` by name, after the first start and after the second.
    first: BTreeMap<String, Value>,
    first_list: Value,
    second: BTreeMap<String, Value>,
    second_list: Value,
    /// Whether the first start stopped cleanly on SIGTERM, and its log.
    stopped_cleanly: bool,
    first_log: String,
}

/// Runs the scenario once per process (`crate::warm_up` starts it early). Both starts also
/// check that every language works ([`run_all`]), and a failure there fails the test that
/// waits for the scenario.
async fn restart() -> &'static Restart {
    static RESTART: OnceCell<Restart> = OnceCell::const_new();
    RESTART
        .get_or_init(|| async {
            let dir = crate::workdir_cold(&DRIVERS);
            // First start, empty cache: the API answers, and the small Rust driver is ready,
            // while the Python component (seconds to compile) is still loading.
            let started = Instant::now();
            let mut host = Host::spawn_serving(crate::host_bin(), dir.path(), CONFIG, &[]);
            let mut rust_ready_while_python_loads = false;
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
                    && !rust_ready_while_python_loads
                    && drivers_by_name(&list)
                        .get("sample-driver")
                        .is_some_and(|d| d["state"] == "ready")
                {
                    rust_ready_while_python_loads = true;
                    // Definitions are written at once; a resource created now waits for the
                    // drivers found at start, so it reaches the Python driver that is still
                    // compiling.
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
            if !rust_ready_while_python_loads {
                define_all(&host).await;
            }
            let (_, first_list) = host.get("/drivers").await;
            let first = drivers_by_name(&first_list);
            let early = match &early_run {
                Some(run) => Some(host.result(run).await),
                None => None,
            };
            run_all(&host, "before").await;
            let stopped_cleanly = host.stop();
            let first_log = host.log();

            // Second start, same data dir.
            let host = crate::spawn(dir.path(), CONFIG);
            let (_, second_list) = host.get("/drivers").await;
            let second = drivers_by_name(&second_list);
            for name in DRIVERS {
                // Written to the process's stderr directly, not through the test's captured
                // output, so that the figures show in every run of the suite.
                let _ = writeln!(
                    std::io::stderr(),
                    "{name}: compiled in {:.0} ms on the first start, loaded from the cache in {:.1} ms after the restart",
                    first[name]["load_ms"].as_f64().unwrap_or(0.0),
                    second[name]["load_ms"].as_f64().unwrap_or(0.0)
                );
            }
            run_all(&host, "after").await;
            drop(host);
            Restart {
                dir,
                rust_ready_while_python_loads,
                early,
                first,
                first_list,
                second,
                second_list,
                stopped_cleanly,
                first_log,
            }
        })
        .await
}

/// The first start serves the API and the Rust driver while the Python driver compiles.
#[tokio::test]
async fn the_rust_driver_serves_while_the_python_driver_compiles() {
    assert!(
        restart().await.rust_ready_while_python_loads,
        "the Rust driver was not served while the Python driver compiled"
    );
}

/// A resource created while the Python driver compiles reaches it.
#[tokio::test]
async fn a_resource_created_while_the_python_driver_compiles_reaches_it() {
    let early = restart()
        .await
        .early
        .as_ref()
        .expect("created while loading");
    assert_eq!(early["driver"], "python-driver", "{early}");
    assert_eq!(early["success"], true, "{early}");
}

/// The first start, with an empty cache, compiles every driver.
#[tokio::test]
async fn the_first_start_compiles_every_driver() {
    let r = restart().await;
    for name in DRIVERS {
        assert_eq!(r.first[name]["loaded_from"], "compiled", "{}", r.first_list);
    }
}

/// A host with every language loaded and used stops cleanly on SIGTERM.
#[tokio::test]
async fn a_host_with_every_language_stops_cleanly() {
    let r = restart().await;
    assert!(r.stopped_cleanly, "{}", r.first_log);
}

/// A restart loads every driver from the compile cache in milliseconds, the same files as
/// before, and they still work ([`run_all`] in the scenario).
#[tokio::test]
async fn a_restart_loads_every_driver_from_the_compile_cache() {
    let r = restart().await;
    for name in DRIVERS {
        let d = &r.second[name];
        assert_eq!(d["loaded_from"], "cache", "{}", r.second_list);
        assert_eq!(d["sha256"], r.first[name]["sha256"], "{}", r.second_list);
    }
}

// ---- one host with every language -------------------------------------------------------

/// The module's host, in process. It starts with the compile cache the [`restart`] scenario
/// filled (a copy), so that the Python driver is compiled once per process; should that
/// scenario fail, it compiles everything itself.
async fn host() -> &'static Host {
    static HOST: OnceCell<Fixture> = OnceCell::const_new();
    let fixture = HOST
        .get_or_init(|| async {
            let compiled = AssertUnwindSafe(restart()).catch_unwind().await.ok();
            let dir = crate::workdir_cold(&DRIVERS);
            if let Some(r) = compiled {
                copy_dir(
                    &r.dir.path().join("data/cache"),
                    &dir.path().join("data/cache"),
                );
            }
            let host = Host::start(dir.path(), CONFIG);
            define_all(&host).await;
            Fixture { host, dir }
        })
        .await;
    &fixture.host
}

/// Copies the files of one directory into another, which is created.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("cannot create {}: {e}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() {
            std::fs::copy(&path, to.join(entry.file_name()))
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", path.display()));
        }
    }
}

/// Runs the [`restart`] scenario and starts the module's host, if no test has yet (see
/// `crate::warm_up`).
pub async fn warm_up() {
    host().await;
}

/// Drivers in every language are ready, with the resource types their components declare.
#[tokio::test]
async fn drivers_in_every_language_are_ready_with_their_resources() {
    let (_, list) = host().await.get("/drivers").await;
    let drivers = drivers_by_name(&list);
    for name in DRIVERS {
        assert_eq!(drivers[name]["state"], "ready", "{list}");
    }
    assert_eq!(
        drivers["python-driver"]["resources"],
        json!(["python-task"])
    );
    assert_eq!(drivers["js-driver"]["resources"], json!(["js-task"]));
}

/// The Rust sample driver runs beside them.
#[tokio::test]
async fn the_sample_driver_runs_beside_them() {
    let host = host().await;
    let run = start_sample(host, "beside").await;
    check_sample(host, &run).await;
}

/// The Rust driver logs labelled lines, returns data and reads back through the client.
#[tokio::test]
async fn the_rust_driver_logs_returns_data_and_reads_back() {
    let host = host().await;
    check_task(host, start_task(host, RUST, 3, "one").await).await;
}

/// The Python driver logs labelled lines, returns data and reads back through the client.
#[tokio::test]
async fn the_python_driver_logs_returns_data_and_reads_back() {
    let host = host().await;
    check_task(host, start_task(host, PYTHON, 4, "one").await).await;
}

/// The JavaScript driver logs labelled lines, returns data and reads back through the client.
#[tokio::test]
async fn the_javascript_driver_logs_returns_data_and_reads_back() {
    let host = host().await;
    check_task(host, start_task(host, JS, 5, "one").await).await;
}

/// The capability grant: the Python driver sees GREETING because the config grants it.
#[tokio::test]
async fn the_python_driver_sees_the_variable_its_config_grants() {
    let host = host().await;
    let run = host
        .create("python-task", "greeting", json!({"steps": 1}))
        .await;
    let result = host.result(&run).await;
    assert_eq!(
        result["data"]["greeting"], "hello from the host config",
        "{result}"
    );
}

/// A grant is the named driver's alone: the Rust driver, the same code as the Python one,
/// is not given the Python driver's GREETING.
#[tokio::test]
async fn another_driver_does_not_see_the_python_drivers_grant() {
    let host = host().await;
    let run = host
        .create("rust-task", "no-greeting", json!({"steps": 1}))
        .await;
    let result = host.result(&run).await;
    assert_eq!(
        result["data"]["greeting"], "(no GREETING granted)",
        "{result}"
    );
}

/// An exception escaping reconcile becomes a failed result that names it, with the traceback
/// or stack in the run's log.
async fn assert_exception_fails_the_run(host: &Host, kind: &str, name: &str, expected: &str) {
    let run = host
        .create(kind, name, json!({"steps": 1, "fail": "asked to fail"}))
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

/// A Python exception becomes a failed result naming it, its traceback in the log.
#[tokio::test]
async fn a_python_exception_becomes_a_failed_result() {
    let host = host().await;
    assert_exception_fails_the_run(host, "python-task", "fails", "RuntimeError: asked to fail")
        .await;
}

/// A JavaScript error becomes a failed result naming it, its stack in the log.
#[tokio::test]
async fn a_javascript_error_becomes_a_failed_result() {
    let host = host().await;
    assert_exception_fails_the_run(host, "js-task", "fails", "Error: asked to fail").await;
}

/// A client call that fails reaches the driver as its language's error with the WIT variant's
/// kind: the driver reads a resource that does not exist, and is not retried.
async fn assert_client_error_reaches(host: &Host, (driver, kind, _, _): Task) {
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

/// The Rust driver sees a failed client call as Rust's not-found error.
#[tokio::test]
async fn a_failed_client_call_reaches_the_rust_driver_as_not_found() {
    assert_client_error_reaches(host().await, RUST).await;
}

/// The Python driver sees a failed client call as the SDK's not-found ClientError.
#[tokio::test]
async fn a_failed_client_call_reaches_the_python_driver_as_not_found() {
    assert_client_error_reaches(host().await, PYTHON).await;
}

/// The JavaScript driver sees a failed client call as the SDK's not-found ClientError.
#[tokio::test]
async fn a_failed_client_call_reaches_the_javascript_driver_as_not_found() {
    assert_client_error_reaches(host().await, JS).await;
}

/// After exceptions in Python and JavaScript, every language goes on serving.
#[tokio::test]
async fn every_language_serves_on_after_exceptions() {
    let host = host().await;
    assert_exception_fails_the_run(
        host,
        "python-task",
        "fails-first",
        "RuntimeError: asked to fail",
    )
    .await;
    assert_exception_fails_the_run(host, "js-task", "fails-first", "Error: asked to fail").await;
    run_all(host, "two").await;
}

// ---- the command line -----------------------------------------------------------------------

/// jco's default StarlingMonkey build of the JavaScript driver, which imports `wasi:http`.
pub fn starlingmonkey_driver() -> std::path::PathBuf {
    support::example_driver_variant(
        "js-driver",
        "starlingmonkey",
        &["--backend", "starlingmonkey"],
    )
}

/// `check --config` on [`starlingmonkey_driver`] with `extra` config: its stdout.
fn check_starlingmonkey_with(extra: &str) -> String {
    let wasm = starlingmonkey_driver();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!("drivers_dir = \".\"\ndata_dir = \".\"\n{extra}"),
    )
    .expect("config");
    let (code, out, err) = run_cli(&[
        "check",
        "--config",
        config.to_str().expect("utf-8 path"),
        wasm.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// `check --config` says when a component imports `wasi:http` that the config does not
/// grant, and what the grant looks like.
#[test]
fn check_names_an_http_import_the_config_does_not_grant() {
    let out = check_starlingmonkey_with("");
    assert!(out.contains("wasi:http/outgoing-handler@"), "{out}");
    assert!(
        out.contains("wasi:http: NOT granted, every request will be refused"),
        "{out}"
    );
    assert!(out.contains("[drivers.js-driver.http]"), "{out}");
}

/// `check --config` names the hosts an HTTP grant allows.
#[test]
fn check_names_the_hosts_an_http_grant_allows() {
    let out =
        check_starlingmonkey_with("[drivers.js-driver.http]\nallow = [\"api.example.com\"]\n");
    assert!(
        out.contains("wasi:http: granted to api.example.com"),
        "{out}"
    );
}
