//! The driver author's loop: `conveyor-host new` for each language, built with the project's
//! own `build.sh` and passing `conveyor-host test` on its generated fixture; `test` on the
//! test driver for what fixtures check (a client read, a created resource, a trap, a CPU
//! budget, a broken expectation, a bad fixture); a failed run turned into a fixture with
//! `--from-run`; and replaying and redelivering stored runs over HTTP.
//!
//! The generated Rust project is built with the workspace's target directory and the
//! workspace's Cargo.lock (which `new` writes into it), so it compiles only itself and the
//! vendored SDK; the Python and JavaScript ones use the componentize-py and jco the suite
//! installs (`.tools/`, `examples/js-driver/node_modules`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::Host;

use crate::guarantees::{drop_in, test_driver_v2};
use crate::{run_cli, workdir};

/// PATH with the tools the suite installs (`.tools/venv/bin`) first.
fn tools_path() -> String {
    let tools = support::workspace().join(".tools/venv/bin");
    format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Makes a project with `new` in a temporary directory; returns the directory and the
/// project in it.
fn new_project(name: &str, lang: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = support::tempdir();
    let project = dir.path().join(name);
    let project_arg = project.to_str().expect("a UTF-8 path");
    let (code, out, err) = run_cli(&["new", name, "--lang", lang, project_arg]);
    assert_eq!(code, 0, "new: {out}{err}");
    (dir, project)
}

/// Runs the project's `build.sh` with the given environment; panics with its output when it
/// fails.
fn build(project: &Path, env: &[(&str, String)]) -> PathBuf {
    let out = Command::new(project.join("build.sh"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run build.sh");
    assert!(
        out.status.success(),
        "build.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let name = project.file_name().expect("a name").to_string_lossy();
    project.join(format!("{name}.wasm"))
}

/// `conveyor-host test` on the project's component and its generated fixture.
fn test_generated(project: &Path, wasm: &Path) -> (i32, String, String) {
    let fixture = project.join("fixtures/create.toml");
    run_cli(&["test", path(wasm), path(&fixture)])
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[test]
fn a_new_rust_project_builds_and_passes_its_fixture() {
    let (_dir, project) = new_project("hello-rust", "rust");
    let target = support::target_dir().display().to_string();
    let wasm = build(&project, &[("CARGO_TARGET_DIR", target)]);
    let (code, out, err) = test_generated(&project, &wasm);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("PASS "), "{out}");
    assert!(out.ends_with("1 passed, 0 failed\n"), "{out}");
}

#[test]
fn a_new_python_project_builds_and_passes_its_fixture() {
    let (_dir, project) = new_project("hello-python", "python");
    let wasm = build(&project, &[("PATH", tools_path())]);
    let (code, out, err) = test_generated(&project, &wasm);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("1 passed, 0 failed\n"), "{out}");
}

#[test]
fn a_new_js_project_builds_and_passes_its_fixture() {
    let (_dir, project) = new_project("hello-js", "js");
    // jco as the suite installs it for the JavaScript example (npm ci there, once).
    let modules = support::workspace().join("examples/js-driver/node_modules");
    if !modules.join(".bin/jco").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(support::workspace().join("examples/js-driver"))
            .env("PATH", tools_path())
            .status()
            .expect("run npm ci");
        assert!(status.success(), "npm ci in examples/js-driver failed");
    }
    std::os::unix::fs::symlink(&modules, project.join("node_modules")).expect("link node_modules");
    let wasm = build(&project, &[("PATH", tools_path())]);
    let (code, out, err) = test_generated(&project, &wasm);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("1 passed, 0 failed\n"), "{out}");
}

/// A temporary directory with one fixture file; returns it and the file.
fn fixture(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = support::tempdir();
    let file = dir.path().join("case.toml");
    std::fs::write(&file, text).expect("write the fixture");
    (dir, file)
}

/// `conveyor-host test` of the test driver on a fixture, with extra arguments.
fn test_driver(text: &str, extra: &[&str]) -> (i32, String, String) {
    let (_dir, file) = fixture(text);
    let wasm = support::rust_driver("test-driver");
    let mut args = vec!["test", path(&wasm), path(&file)];
    args.extend_from_slice(extra);
    run_cli(&args)
}

#[test]
fn a_broken_expectation_exits_1_with_a_readable_diff() {
    let (code, out, err) = test_driver(
        r#"
resource = { resource = "test", name = "a", spec = { action = "ok", lines = 2 } }
[expect]
outcome = "success"
message = "not ok"
data = { build = "v9", event = "create" }
[expect.logs]
count = 3
"#,
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("FAIL "), "{out}");
    assert!(
        out.contains(r#"- message: expected "not ok", got "ok""#),
        "{out}"
    );
    assert!(
        out.contains(r#"- data.build: expected "v9", got "v1""#),
        "{out}"
    );
    assert!(out.contains("- logs: expected 3 lines, got 2"), "{out}");
    assert!(
        !out.contains("data.event"),
        "what matched is not listed: {out}"
    );
    assert!(out.ends_with("0 passed, 1 failed\n"), "{out}");
}

#[test]
fn a_client_read_is_answered_from_the_fixtures_store() {
    let (code, out, err) = test_driver(
        r#"
resource = { resource = "test", name = "reader", spec = { action = "client" } }
[[definitions]]
name = "test"
schema = { type = "object", properties = { action = { type = "string" } } }
[expect]
outcome = "success"
message = "read through the client"
data = { definition = "test" }
"#,
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("PASS "), "{out}");
}

#[test]
fn a_resource_the_driver_created_is_checked() {
    let text = r#"
resource = { resource = "test", name = "maker", spec = { action = "create", kind = "made", spec = { size = 3 } } }
[[definitions]]
name = "made"
schema = { type = "object", properties = { size = { type = "integer", maximum = 5 } } }
[expect]
outcome = "success"
[[expect.resources]]
resource = "made"
name = "maker-made"
version = "1"
spec = { size = 3 }
"#;
    let (code, out, err) = test_driver(text, &[]);
    assert_eq!(code, 0, "{out}{err}");
    // The same write past the definition's schema is refused as the host refuses it.
    let (code, out, _) = test_driver(&text.replace("size = 3 } } }", "size = 9 } } }"), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("- outcome: expected success, got failure"),
        "{out}"
    );
    assert!(out.contains("Resource validation failed"), "{out}");
    assert!(
        out.contains("- resources: made/maker-made was not created or updated"),
        "{out}"
    );
}

#[test]
fn a_panic_is_expected_as_a_trap() {
    let (code, out, err) = test_driver(
        r#"
resource = { resource = "test", name = "p", spec = { action = "panic", message = "boom" } }
[expect]
outcome = "trap"
message_matches = "^the driver panicked: .*boom"
"#,
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_spinning_driver_exceeds_the_configs_cpu_budget() {
    let (dir, file) = fixture(
        r#"
resource = { resource = "test", name = "spin", spec = { action = "loop" } }
[expect]
outcome = "cpu-exceeded"
message = "the driver used more than its 200ms CPU budget"
"#,
    );
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "drivers_dir = \".\"\ndata_dir = \".\"\n[drivers.test-driver]\ncpu = \"200ms\"\n",
    )
    .expect("write the config");
    let wasm = support::rust_driver("test-driver");
    let (code, out, err) = run_cli(&["test", path(&wasm), path(&file), "--config", path(&config)]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_bad_fixture_is_named_with_its_problem() {
    let (code, out, err) = test_driver(
        "resource = { resource = \"test\", name = \"a\" }\n[expect]\noutcome = \"fine\"\n",
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("case.toml: expect.outcome \"fine\" is not an outcome"),
        "{out}"
    );
    assert!(out.ends_with("0 passed, 1 failed\n"), "{out}");
}

/// A host with the test driver and the `test` type; returns it and its directory.
async fn host_with_test_driver() -> (Host, tempfile::TempDir) {
    let dir = workdir(&["test-driver"]);
    let host = Host::start(dir.path(), "");
    host.define("test", json!({"type": "object"})).await;
    (host, dir)
}

/// Replaces the host's test driver with its second build and waits until that one serves.
async fn deploy_v2(host: &Host, dir: &Path) {
    use sha2::Digest;
    let v2 = test_driver_v2();
    let sha = hex::encode(sha2::Sha256::digest(&v2));
    drop_in(&dir.join("drivers"), "test-driver.wasm", &v2);
    host.wait_for_driver_list("the new version", |list| {
        support::http::find_driver(list, "test-driver")
            .filter(|d| d["sha256"] == sha.as_str() && d["state"] == "ready")
    })
    .await;
}

#[tokio::test]
async fn a_failed_run_becomes_a_fixture_that_passes_once_the_driver_is_fixed() {
    let (host, dir) = host_with_test_driver().await;
    let run = host
        .create("test", "broken", json!({"action": "needs-v2"}))
        .await;
    let failed = host.finished_run(&run, Duration::from_secs(30)).await;
    assert_eq!(failed["status"], "failed", "{failed}");

    let out = dir.path().join("fixtures/broken.toml");
    let data = dir.path().join("data");
    let v1 = support::rust_driver("test-driver");
    let (code, stdout, err) = run_cli(&[
        "test",
        path(&v1),
        "--from-run",
        &run,
        "--data-dir",
        path(&data),
        "--out",
        path(&out),
    ]);
    assert_eq!(code, 1, "the unfixed driver fails it: {stdout}{err}");
    assert!(
        stdout.contains("- outcome: expected success, got failure"),
        "{stdout}"
    );

    let v2 = dir.path().join("fixed.wasm");
    std::fs::write(&v2, test_driver_v2()).expect("write the fixed driver");
    let (code, stdout, err) = run_cli(&["test", path(&v2), path(&out)]);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(stdout.ends_with("1 passed, 0 failed\n"), "{stdout}");
}

#[tokio::test]
async fn a_replay_is_a_new_run_of_the_first_event_on_the_version_loaded_now() {
    let (host, dir) = host_with_test_driver().await;
    let run = host
        .create("test", "again", json!({"action": "needs-v2"}))
        .await;
    assert_eq!(
        host.finished_run(&run, Duration::from_secs(30)).await["status"],
        "failed"
    );
    deploy_v2(&host, dir.path()).await;

    let (status, replay) = host.post(&format!("/runs/{run}/replay"), &json!({})).await;
    assert_eq!(status, 201, "{replay}");
    assert_eq!(replay["replay_of"], run.as_str(), "{replay}");
    assert_eq!(replay["event"], "create", "{replay}");
    let new = replay["runid"].as_str().expect("runid").to_string();
    assert_ne!(new, run);
    let done = host.finished_run(&new, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let lines = host.logs(&new).await;
    assert!(
        lines.iter().any(|l| l["message"] == "running build v2"),
        "the new version's log: {lines:?}"
    );
    // The original is as it was.
    let (_, original) = host.get(&format!("/runs/{run}")).await;
    assert_eq!(original["status"], "failed", "{original}");
    assert!(original["replay_of"].is_null(), "{original}");
}

#[tokio::test]
async fn a_redelivered_failed_step_runs_again_and_the_run_succeeds() {
    let (host, dir) = host_with_test_driver().await;
    let run = host
        .create("test", "dead", json!({"action": "needs-v2"}))
        .await;
    assert_eq!(
        host.finished_run(&run, Duration::from_secs(30)).await["status"],
        "failed"
    );
    let (status, failed) = host.get("/runs?status=failed").await;
    assert_eq!(status, 200);
    assert!(
        failed
            .as_array()
            .is_some_and(|runs| runs.iter().any(|r| r["runid"] == run.as_str())),
        "a failed run is listed as a dead letter: {failed}"
    );
    deploy_v2(&host, dir.path()).await;

    let (status, body) = host.post(&format!("/runs/{run}/retry"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runid"], run.as_str(), "the same run: {body}");
    let done = host.finished_run(&run, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["steps"][0]["attempts"], 2, "a new attempt: {done}");
    assert_eq!(
        done["steps"][0]["result"]["message"], "fixed in build v2",
        "{done}"
    );
}

#[tokio::test]
async fn a_run_that_did_not_fail_is_not_redelivered() {
    let (host, _dir) = host_with_test_driver().await;
    let run = host.create("test", "fine", json!({})).await;
    assert_eq!(
        host.finished_run(&run, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    let (status, body) = host.post(&format!("/runs/{run}/retry"), &json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("is succeeded")),
        "{body}"
    );
    let (status, _) = host.post("/runs/no-such-run/retry", &json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_replay_for_one_driver_is_a_run_of_that_step_only() {
    let (host, _dir) = host_with_test_driver().await;
    let run = host
        .create(
            "test",
            "one",
            json!({"action": "fail", "message": "first try"}),
        )
        .await;
    assert_eq!(
        host.finished_run(&run, Duration::from_secs(30)).await["status"],
        "failed"
    );
    let (status, replay) = host
        .post(
            &format!("/runs/{run}/replay?driver=test-driver"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 201, "{replay}");
    let steps = replay["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{replay}");
    assert_eq!(steps[0]["driver"], "test-driver", "{replay}");
    let new = replay["runid"].as_str().expect("runid");
    let done = host.finished_run(new, Duration::from_secs(30)).await;
    assert_eq!(done["results"][0]["message"], "first try", "{done}");
    let (status, _) = host.post("/runs/no-such-run/replay", &json!({})).await;
    assert_eq!(status, 404);
}

/// Replay, like retry, is for failed runs: a succeeded run is refused with 409.
#[tokio::test]
async fn a_succeeded_run_is_not_replayed() {
    let (host, _dir) = host_with_test_driver().await;
    let run = host.create("test", "fine", json!({})).await;
    assert_eq!(
        host.finished_run(&run, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    let (status, body) = host.post(&format!("/runs/{run}/replay"), &json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("succeeded"),
        "{body}"
    );
}

#[test]
fn watch_runs_again_when_a_fixture_changes() {
    use std::io::{BufRead, BufReader};
    let (_dir, file) =
        fixture("resource = { resource = \"test\", name = \"w\" }\n[expect]\nmessage = \"ok\"\n");
    let wasm = support::rust_driver("test-driver");
    let mut child = Command::new(crate::host_bin())
        .args(["test", "--watch", path(&wasm), path(&file)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn conveyor-host test --watch");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |wanted: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line == wanted => return,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no {wanted:?} line; the output: {seen:#?}");
    };
    wait_for("1 passed, 0 failed");
    wait_for_watching(&rx);
    std::fs::write(
        &file,
        "resource = { resource = \"test\", name = \"w\" }\n[expect]\nmessage = \"changed\"\n",
    )
    .expect("change the fixture");
    wait_for("0 passed, 1 failed");
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for the line saying the watch has started, so a change after it is seen.
fn wait_for_watching(rx: &std::sync::mpsc::Receiver<String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("watching ") => return,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("the watch did not start");
}
