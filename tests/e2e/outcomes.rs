//! What happens to a run, row by row of the table in docs/drivers.md, with `max_attempts = 3`:
//! each outcome is produced by the real host, and is either retried (three attempts, each
//! noted in the run's log with its backoff) or final (one attempt, no retry noted).

use std::time::Duration;

use serde_json::{Value, json};
use support::Host;
use tokio::sync::OnceCell;

use crate::{Fixture, workdir};

const BUDGETS: &str = r#"
[defaults]
max_attempts = 3
backoff = "10ms"

[drivers.test-driver]
concurrency = 4
cpu = "200ms"
timeout = "3s"
memory = "32MiB"
log_lines = 20
result_size = "4KiB"
"#;

/// A host with the test driver under tight budgets and three attempts per event.
async fn host() -> &'static Host {
    static HOST: OnceCell<Fixture> = OnceCell::const_new();
    &HOST
        .get_or_init(|| async {
            let fixture = Fixture::start(&["test-driver"], BUDGETS);
            fixture.host.define("test", json!({"type": "object"})).await;
            fixture
        })
        .await
        .host
}

/// How a run went: its one result, and its `source=host` log lines.
struct Ended {
    result: Value,
    host_lines: Vec<String>,
}

/// Creates a resource with `spec` on `host` and waits for its run to end.
async fn run_on(host: &Host, name: &str, spec: Value) -> Ended {
    let run = host.create("test", name, spec).await;
    let over = host.finished_run(&run, Duration::from_secs(120)).await;
    let results = over["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 1, "one result per step: {over}");
    let host_lines = host
        .logs(&run)
        .await
        .iter()
        .filter(|l| l["source"] == "host")
        .filter_map(|l| l["message"].as_str().map(str::to_string))
        .collect();
    Ended {
        result: results[0].clone(),
        host_lines,
    }
}

async fn run(name: &str, spec: Value) -> Ended {
    run_on(host().await, name, spec).await
}

/// A transient outcome: three attempts, the first two noted with their doubling backoff, the
/// result's message saying it gave up.
fn assert_retried(e: &Ended, kind: &str) {
    let r = &e.result;
    assert_eq!(r["attempts"], 3, "{r}");
    assert_eq!(r["success"], false, "{r}");
    assert_eq!(r["outcome"], kind, "{r}");
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("(gave up after 3 attempts)")),
        "{r}"
    );
    let retries: Vec<&String> = e
        .host_lines
        .iter()
        .filter(|l| l.contains("; retrying in "))
        .collect();
    assert_eq!(retries.len(), 2, "{:?}", e.host_lines);
    assert!(retries[0].starts_with("attempt 1 of 3 failed") && retries[0].ends_with("10ms"));
    assert!(retries[1].starts_with("attempt 2 of 3 failed") && retries[1].ends_with("20ms"));
}

/// A final outcome: one attempt, no retry noted.
fn assert_final(e: &Ended, kind: &str) {
    let r = &e.result;
    assert_eq!(r["attempts"], 1, "{r}");
    assert_eq!(r["outcome"], kind, "{r}");
    assert!(
        e.host_lines.iter().all(|l| !l.contains("retrying")),
        "{:?}",
        e.host_lines
    );
}

#[tokio::test]
async fn success_is_done() {
    let e = run("ok", json!({"action": "ok"})).await;
    assert_final(&e, "success");
    assert_eq!(e.result["success"], true);
}

#[tokio::test]
async fn failure_is_final() {
    let e = run("fail", json!({"action": "fail", "message": "no"})).await;
    assert_final(&e, "failure");
    assert_eq!(e.result["failure_kind"], Value::Null);
}

#[tokio::test]
async fn retry_is_retried_until_max_attempts() {
    let e = run("retry", json!({"action": "flaky", "succeed_on": 99})).await;
    assert_retried(&e, "retry");
}

#[tokio::test]
async fn a_trap_is_retried() {
    let e = run("trap", json!({"action": "panic", "message": "boom"})).await;
    assert_retried(&e, "trap");
    assert_eq!(e.result["failure_kind"], "trap");
}

#[tokio::test]
async fn cpu_exceeded_is_retried() {
    let e = run("cpu", json!({"action": "loop"})).await;
    assert_retried(&e, "cpu-exceeded");
}

#[tokio::test]
async fn wall_timeout_is_retried() {
    let e = run("wall", json!({"action": "sleep", "ms": 10_000})).await;
    assert_retried(&e, "wall-timeout");
}

#[tokio::test]
async fn memory_exceeded_is_retried() {
    let e = run("memory", json!({"action": "memory"})).await;
    assert_retried(&e, "memory-exceeded");
}

#[tokio::test]
async fn log_limit_is_final() {
    let e = run("flood", json!({"action": "flood"})).await;
    assert_final(&e, "log-limit");
}

#[tokio::test]
async fn denied_is_final() {
    let e = run(
        "denied",
        json!({"action": "http", "url": "http://example.com/"}),
    )
    .await;
    assert_final(&e, "denied");
    // The guest saw wasi:http's error code HTTP-request-denied (its Debug form in the
    // driver's message), and the host says what it refused.
    assert!(
        e.result["message"]
            .as_str()
            .is_some_and(|m| m.contains("; the host denied: ") && m.contains("HttpRequestDenied")),
        "{}",
        e.result
    );
    assert!(
        e.host_lines
            .iter()
            .any(|l| l.starts_with("denied: HTTP request to example.com")),
        "{:?}",
        e.host_lines
    );
}

#[tokio::test]
async fn result_too_large_is_final() {
    let message = "x".repeat(5_000);
    let e = run("large", json!({"action": "fail", "message": message})).await;
    assert_final(&e, "result-too-large");
}

/// `data` the host cannot read as JSON (here nested past its JSON reader's depth limit; the
/// Rust SDK cannot return text that is not JSON at all).
#[tokio::test]
async fn invalid_result_is_final() {
    let e = run("invalid", json!({"action": "deep-data"})).await;
    assert_final(&e, "invalid-result");
    assert!(
        e.result["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("the driver returned `data` that is not JSON")),
        "{}",
        e.result
    );
}

/// A granted directory that is gone when the event comes: the instance cannot be set up, and
/// that is retried.
#[tokio::test]
async fn instantiate_is_retried() {
    let dir = workdir(&["test-driver"]);
    let vanishing = dir.path().join("vanishing");
    std::fs::create_dir(&vanishing).expect("create the granted directory");
    let host = Host::start(
        dir.path(),
        &format!("{BUDGETS}dirs = [{{ host = \"vanishing\", guest = \"/vanishing\" }}]\n"),
    );
    host.define("test", json!({"type": "object"})).await;
    std::fs::remove_dir(&vanishing).expect("remove the granted directory");
    let e = run_on(&host, "instantiate", json!({"action": "ok"})).await;
    assert_retried(&e, "instantiate");
    assert_eq!(e.result["failure_kind"], "instantiate");
}
