//! End-to-end tests of the sandbox: budgets and failure kinds, granted and denied
//! capabilities, secret redaction, hot reload, and `check`'s capability listing. Each test
//! starts the real host binary with real drivers built for wasm32-wasip2.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Host, driver_wasm, run_cli, workdir};
use futures::StreamExt;
use serde_json::{Value, json};

const ANY: &str = r#"{"type":"object"}"#;

fn any_schema() -> Value {
    serde_json::from_str(ANY).unwrap()
}

/// An HTTP server on loopback answering every GET with a fixed body; returns its port.
async fn serve_hello() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { "hello from the test server" }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// The run's stored log messages, joined.
async fn log_text(host: &Host, run: &str) -> String {
    host.logs(run)
        .await
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every hostile behaviour ends with its own failure kind while the host stays up and a
/// well-behaved driver keeps serving.
#[tokio::test]
async fn hostile_drivers_end_with_their_own_kind_and_others_keep_serving() {
    let dir = workdir(&["test-driver", "noop-driver"]);
    let port = serve_hello().await;
    let host = Host::start(
        dir.path(),
        &format!(
            r#"
[defaults]
max_attempts = 1

[drivers.test-driver]
cpu = "500ms"
timeout = "5s"
memory = "32MiB"
log_lines = 200

[drivers.test-driver.http]
allow = ["127.0.0.1:{port}", "localhost:{port}"]
"#
        ),
    );
    host.define("test", any_schema()).await;
    host.define("noop", any_schema()).await;

    let hostile = [
        ("loop", json!({"action": "loop"}), "cpu-exceeded"),
        (
            "sleep",
            json!({"action": "sleep", "ms": 60_000}),
            "wall-timeout",
        ),
        ("memory", json!({"action": "memory"}), "memory-exceeded"),
        ("flood", json!({"action": "flood"}), "log-limit"),
        (
            "panic",
            json!({"action": "panic", "message": "boom from the guest"}),
            "trap",
        ),
        (
            "http-other-host",
            json!({"action": "http", "url": "http://example.com/"}),
            "denied",
        ),
        (
            "http-loopback",
            json!({"action": "http", "url": format!("http://127.0.0.1:{port}/")}),
            "denied",
        ),
        (
            "http-name-to-loopback",
            json!({"action": "http", "url": format!("http://localhost:{port}/")}),
            "denied",
        ),
    ];
    let mut runs = Vec::new();
    for (name, spec, kind) in &hostile {
        runs.push((*name, host.create("test", name, spec.clone()).await, *kind));
    }

    // The well-behaved driver serves while the hostile runs are going on.
    let started = Instant::now();
    let mut good = Vec::new();
    for i in 0..20 {
        good.push(host.create("noop", &format!("n{i}"), json!({})).await);
    }
    for run in &good {
        let r = host.result(run).await;
        assert_eq!(r["success"], true, "{r}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the well-behaved driver took {:?}",
        started.elapsed()
    );

    let mut results = std::collections::HashMap::new();
    for (name, run, kind) in &runs {
        let r = host.result(run).await;
        assert_eq!(r["success"], false, "{name}: {r}");
        assert_eq!(r["failure_kind"], *kind, "{name}: {r}");
        assert_eq!(r["outcome"], *kind, "{name}: {r}");
        results.insert(*name, r);
    }
    let panic = &results["panic"];
    assert!(
        panic["message"]
            .as_str()
            .unwrap()
            .contains("boom from the guest"),
        "{panic}"
    );
    let other = &results["http-other-host"];
    assert!(
        other["message"]
            .as_str()
            .unwrap()
            .contains("example.com:80")
            && other["message"].as_str().unwrap().contains("allow"),
        "{other}"
    );
    let by_name = &results["http-name-to-loopback"];
    assert!(
        by_name["message"].as_str().unwrap().contains("127.0.0.1")
            || by_name["message"].as_str().unwrap().contains("::1"),
        "judged by the resolved address: {by_name}"
    );
    let flood_run = &runs.iter().find(|(n, ..)| *n == "flood").unwrap().1;
    let flood_logs = host.logs(flood_run).await;
    let driver_lines = flood_logs.iter().filter(|l| l["source"] != "host").count();
    assert_eq!(driver_lines, 200, "the log budget caps the stored lines");
    assert!(
        flood_logs
            .iter()
            .any(|l| l["source"] == "host" && l["message"].as_str().unwrap().contains("log-limit")),
        "a host line says why"
    );

    // Files: nothing is mounted, so neither /etc/passwd nor the host's own directories exist
    // for the guest.
    let dir_path = dir.path().display().to_string();
    for path in ["/etc/passwd", &format!("{dir_path}/host.toml")] {
        let run = host
            .create(
                "test",
                &format!("read-{}", path.len()),
                json!({"action": "read", "path": path}),
            )
            .await;
        let r = host.result(&run).await;
        assert_eq!(r["success"], false, "{r}");
        assert!(
            r["message"].as_str().unwrap().contains("cannot read"),
            "{r}"
        );
        assert!(!r.to_string().contains("root:"), "{r}");
    }
    // Environment: none granted, none seen.
    let run = host.create("test", "env", json!({"action": "env"})).await;
    let r = host.result(&run).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["data"]["env"], json!({}), "{r}");

    // The host is still up and serves the test driver too.
    let (status, _) = host.get("/health").await;
    assert_eq!(status, 200);
    let run = host
        .create("test", "still-ok", json!({"action": "ok"}))
        .await;
    assert_eq!(host.result(&run).await["success"], true);
}

/// A driver uses what it is granted: a read-write directory, a read-only one, environment
/// variables, an HTTP server on loopback (allowed explicitly) and a secret that never shows
/// in logs, streams or results.
#[tokio::test]
async fn granted_capabilities_work_and_secrets_are_redacted() {
    const SECRET: &str = "s3cr3t-Token-value";
    let dir = workdir(&["test-driver"]);
    std::fs::create_dir(dir.path().join("workspace")).unwrap();
    std::fs::create_dir(dir.path().join("ro")).unwrap();
    std::fs::write(dir.path().join("ro/readme.txt"), "read me").unwrap();
    std::fs::write(dir.path().join("token"), format!("{SECRET}\n")).unwrap();
    let port = serve_hello().await;
    let host = Host::start_with_env(
        dir.path(),
        &format!(
            r#"
[defaults]
max_attempts = 1

[drivers.test-driver]
dirs = [
    {{ host = "workspace", guest = "/workspace", mode = "rw" }},
    {{ host = "ro", guest = "/ro" }},
]

[drivers.test-driver.env]
GREETING = "hello"
REGION = {{ env = "CONVEYOR_TEST_REGION" }}

[drivers.test-driver.secrets]
TOKEN = {{ file = "token" }}

[drivers.test-driver.http]
allow = ["localhost:{port}"]
allow_private = true
"#
        ),
        &[("CONVEYOR_TEST_REGION", "eu-west")],
    );
    host.define("test", any_schema()).await;

    let run = host
        .create(
            "test",
            "write",
            json!({"action": "write", "path": "/workspace/out.txt", "content": "written by the guest"}),
        )
        .await;
    let r = host.result(&run).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("workspace/out.txt")).unwrap(),
        "written by the guest"
    );

    let run = host
        .create(
            "test",
            "read-ro",
            json!({"action": "read", "path": "/ro/readme.txt"}),
        )
        .await;
    let r = host.result(&run).await;
    assert_eq!(r["data"]["text"], "read me", "{r}");
    let run = host
        .create(
            "test",
            "write-ro",
            json!({"action": "write", "path": "/ro/new.txt", "content": "x"}),
        )
        .await;
    let r = host.result(&run).await;
    assert_eq!(r["success"], false, "a read-only grant refuses writes: {r}");
    assert!(!dir.path().join("ro/new.txt").exists());

    let run = host.create("test", "env", json!({"action": "env"})).await;
    let r = host.result(&run).await;
    assert_eq!(
        r["data"]["env"],
        json!({"GREETING": "hello", "REGION": "eu-west", "TOKEN": "***"}),
        "only the granted variables, the secret masked: {r}"
    );

    let run = host
        .create(
            "test",
            "http",
            json!({"action": "http", "url": format!("http://localhost:{port}/")}),
        )
        .await;
    let r = host.result(&run).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["data"]["status"], 200, "{r}");
    assert_eq!(r["data"]["body"], "hello from the test server", "{r}");

    let run = host
        .create(
            "test",
            "secret",
            json!({"action": "secret", "name": "TOKEN"}),
        )
        .await;
    let r = host.result(&run).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["message"], "used ***", "{r}");
    assert_eq!(r["data"]["secret"], "***", "{r}");
    let logs = log_text(&host, &run).await;
    assert!(logs.contains("the secret is ***"), "{logs}");
    assert!(logs.contains("secret: ***"), "{logs}");
    let sse = reqwest::get(host.at(&format!("/logs/streams/test-driver/{run}")))
        .await
        .unwrap();
    let streamed = read_sse_text(sse, 2).await;
    assert!(streamed.contains("***"), "{streamed}");
    let (_, all_logs) = host.get("/logs").await;
    let (_, runs) = host.get(&format!("/runs/{run}")).await;
    for (what, text) in [
        ("the stored logs", all_logs.to_string()),
        ("the result", runs.to_string()),
        ("the live stream", streamed),
        ("the host's own log", host.log()),
    ] {
        assert!(
            !text.contains(SECRET),
            "the secret leaked into {what}: {text}"
        );
    }
}

/// Drivers dropped in, replaced and removed while events stream in: nothing is lost or
/// failed by a swap, a broken replacement leaves the old version serving, a new driver gets
/// served and a removed one disappears.
#[tokio::test]
async fn hot_reload_swaps_drivers_without_losing_events() {
    let dir = workdir(&["test-driver"]);
    let drivers = dir.path().join("drivers");
    let host = Host::start(dir.path(), "[defaults]\nmax_attempts = 1\n");
    host.define("test", any_schema()).await;
    host.define("noop", any_schema()).await;
    let v1 = driver_entry(&host, "test-driver").await;
    assert_eq!(v1["state"], "ready", "{v1}");

    // Events stream in while the new version is dropped in.
    let mut runs = Vec::new();
    for i in 0..10 {
        runs.push(
            host.create(
                "test",
                &format!("a{i}"),
                json!({"action": "sleep", "ms": 50}),
            )
            .await,
        );
    }
    let v2_bytes = with_custom_section(&std::fs::read(driver_wasm("test-driver")).unwrap(), b"v2");
    let v2_sha = sha256_hex(&v2_bytes);
    drop_in(&drivers, "test-driver.wasm", &v2_bytes);
    for i in 10..30 {
        runs.push(
            host.create(
                "test",
                &format!("a{i}"),
                json!({"action": "sleep", "ms": 50}),
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let v2 = wait_for(&host, "the new sha256", |list| {
        find(list, "test-driver").filter(|d| d["sha256"] == v2_sha.as_str())
    })
    .await;
    assert_ne!(v1["sha256"], v2["sha256"]);
    for run in &runs {
        let r = host.result(run).await;
        assert_eq!(r["success"], true, "no event fails across the swap: {r}");
    }

    // A broken replacement: the old version keeps serving and the reason is reported.
    drop_in(&drivers, "test-driver.wasm", b"this is not WebAssembly");
    let broken = wait_for(&host, "the reload error", |list| {
        find(list, "test-driver").filter(|d| d.get("reload_error").is_some())
    })
    .await;
    assert_eq!(broken["state"], "ready", "{broken}");
    assert_eq!(broken["sha256"], v2_sha.as_str(), "{broken}");
    let run = host
        .create("test", "after-broken", json!({"action": "ok"}))
        .await;
    assert_eq!(host.result(&run).await["success"], true);
    assert!(
        broken["runs"]["succeeded"].as_u64().unwrap() >= 30,
        "{broken}"
    );

    // A new driver dropped in gets served; removed, it is unloaded.
    drop_in(
        &drivers,
        "noop-driver.wasm",
        &std::fs::read(driver_wasm("noop-driver")).unwrap(),
    );
    wait_for(&host, "the new driver", |list| find(list, "noop-driver")).await;
    let run = host.create("noop", "n1", json!({})).await;
    assert_eq!(host.result(&run).await["success"], true);
    std::fs::remove_file(drivers.join("noop-driver.wasm")).unwrap();
    wait_for(&host, "the driver to be unloaded", |list| {
        find(list, "noop-driver").is_none().then_some(Value::Null)
    })
    .await;
}

/// `check` names the capabilities a component imports.
#[test]
fn check_lists_imported_capabilities() {
    let wasm = driver_wasm("test-driver");
    let (code, out, err) = run_cli(&["check", wasm.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("capabilities it imports"), "{out}");
    assert!(out.contains("wasi:http "), "{out}");
    let noop = driver_wasm("noop-driver");
    let (code, out, err) = run_cli(&["check", noop.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("wasi:http "), "{out}");
}

/// A config error in `[drivers.<name>]` names the key.
#[test]
fn driver_config_errors_name_the_key() {
    let dir = workdir(&[]);
    std::fs::write(
        dir.path().join("host.toml"),
        "drivers_dir = \"drivers\"\ndata_dir = \"data\"\n[drivers.x.secrets]\nT = { env = \"CONVEYOR_TEST_SURELY_UNSET\" }\n",
    )
    .unwrap();
    let config = dir.path().join("host.toml");
    let (code, _, err) = run_cli(&["run", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("drivers.x.secrets.T"), "{err}");
    assert!(err.contains("host.toml"), "{err}");
}

/// Writes a file beside the target and renames it into place, as a deploy would.
fn drop_in(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// The same component with a custom section appended: a new file, sha256 and version that
/// behaves exactly like the old one.
fn with_custom_section(component: &[u8], payload: &[u8]) -> Vec<u8> {
    let name = b"conveyor-test-version";
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0);
    out.push(body.len() as u8);
    out.extend(body);
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn find(list: &Value, name: &str) -> Option<Value> {
    list.as_array()?.iter().find(|d| d["name"] == name).cloned()
}

async fn driver_entry(host: &Host, name: &str) -> Value {
    let (_, list) = host.get("/drivers").await;
    find(&list, name).unwrap_or_else(|| panic!("{name} not in {list}"))
}

/// Polls `GET /drivers` until `f` finds something (30 s at most).
async fn wait_for(host: &Host, what: &str, f: impl Fn(&Value) -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = host.get("/drivers").await;
        if let Some(v) = f(&list) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "waited 30s for {what}; GET /drivers: {list}\nhost log:\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The raw text of the first `n` SSE data frames.
async fn read_sse_text(response: reqwest::Response, n: usize) -> String {
    let mut body = response.bytes_stream();
    let mut buf = String::new();
    while buf.matches("data: ").count() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("an SSE chunk within 30s")
            .expect("open")
            .expect("ok");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    buf
}
