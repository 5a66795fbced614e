//! The sandbox: budgets and failure kinds, granted and denied capabilities, secret redaction,
//! hot reload, and `check`'s capability listing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use support::http::find_driver;
use support::{Host, Sse, rust_driver};
use tokio::sync::OnceCell;

use crate::{Fixture, run_cli, workdir};

const ANY: &str = r#"{"type":"object"}"#;

fn any_schema() -> Value {
    serde_json::from_str(ANY).expect("the schema is JSON")
}

/// An HTTP server on loopback answering every GET with a fixed body, on a thread and runtime
/// of its own so that it outlives any one test; returns its port.
fn hello_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the hello server");
        let port = listener.local_addr().expect("its address").port();
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the hello server");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a Tokio listener");
                let app = axum::Router::new().route(
                    "/",
                    axum::routing::get(|| async { "hello from the test server" }),
                );
                let _ = axum::serve(listener, app).await;
            });
        });
        port
    })
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

// ---- hostile drivers ------------------------------------------------------------------------

/// A host with the test driver under tight budgets (its HTTP allow-list names the hello
/// server on loopback) and the no-op driver.
async fn hostile_host() -> &'static Fixture {
    static HOST: OnceCell<Fixture> = OnceCell::const_new();
    HOST.get_or_init(|| async {
        let port = hello_port();
        let fixture = Fixture::start(
            &["test-driver", "noop-driver"],
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
        fixture.host.define("test", any_schema()).await;
        fixture.host.define("noop", any_schema()).await;
        fixture
    })
    .await
}

/// Every hostile behaviour at once, with twenty well-behaved events behind them, and what
/// became of each.
struct Hostile {
    /// The hostile runs' results by name.
    results: HashMap<&'static str, Value>,
    /// The flood's stored log.
    flood_logs: Vec<Value>,
    /// The well-behaved events' results.
    good: Vec<Value>,
    /// After all of that: `GET /health`'s status, and a result of the test driver.
    health_after: u16,
    still_ok: Value,
}

async fn hostile() -> &'static Hostile {
    static HOSTILE: OnceCell<Hostile> = OnceCell::const_new();
    HOSTILE
        .get_or_init(|| async {
            let host = &hostile_host().await.host;
            let port = hello_port();
            let hostile = [
                ("loop", json!({"action": "loop"})),
                ("sleep", json!({"action": "sleep", "ms": 60_000})),
                ("memory", json!({"action": "memory"})),
                ("flood", json!({"action": "flood"})),
                (
                    "panic",
                    json!({"action": "panic", "message": "boom from the guest"}),
                ),
                (
                    "http-other-host",
                    json!({"action": "http", "url": "http://example.com/"}),
                ),
                (
                    "http-loopback",
                    json!({"action": "http", "url": format!("http://127.0.0.1:{port}/")}),
                ),
                (
                    "http-name-to-loopback",
                    json!({"action": "http", "url": format!("http://localhost:{port}/")}),
                ),
            ];
            let mut runs = Vec::new();
            for (name, spec) in hostile {
                runs.push((name, host.create("test", name, spec).await));
            }

            // The well-behaved driver serves while the hostile runs are going on.
            let mut good_runs = Vec::new();
            for i in 0..20 {
                good_runs.push(host.create("noop", &format!("n{i}"), json!({})).await);
            }
            let mut good = Vec::new();
            for run in &good_runs {
                good.push(host.result(run).await);
            }

            let mut results = HashMap::new();
            for (name, run) in &runs {
                results.insert(*name, host.result(run).await);
            }
            let flood_run = &runs
                .iter()
                .find(|(n, _)| *n == "flood")
                .expect("the flood")
                .1;
            let flood_logs = host.logs(flood_run).await;

            let (health_after, _) = host.get("/health").await;
            let run = host
                .create("test", "still-ok", json!({"action": "ok"}))
                .await;
            let still_ok = host.result(&run).await;
            Hostile {
                results,
                flood_logs,
                good,
                health_after,
                still_ok,
            }
        })
        .await
}

/// The hostile run's result, checked to have failed with `kind` as failure kind and outcome.
async fn hostile_result(name: &str, kind: &str) -> &'static Value {
    let r = &hostile().await.results[name];
    assert_eq!(r["success"], false, "{name}: {r}");
    assert_eq!(r["failure_kind"], kind, "{name}: {r}");
    assert_eq!(r["outcome"], kind, "{name}: {r}");
    r
}

/// A well-behaved driver keeps serving while hostile drivers run.
#[tokio::test]
async fn a_well_behaved_driver_keeps_serving_beside_hostile_ones() {
    let h = hostile().await;
    for r in &h.good {
        assert_eq!(r["success"], true, "{r}");
    }
    // They finished while the hostile runs were still going: before the 5 s sleep, which
    // runs after the loop on the test driver's one slot, ended at its deadline.
    let sleep_ended = support::parse_time(&h.results["sleep"]["finished_at"]);
    for r in &h.good {
        assert!(
            support::parse_time(&r["finished_at"]) < sleep_ended,
            "a well-behaved run ended after the hostile sleep: {r}"
        );
    }
}

/// An endless loop ends at its CPU budget.
#[tokio::test]
async fn an_endless_loop_ends_at_its_cpu_budget() {
    hostile_result("loop", "cpu-exceeded").await;
}

/// A long sleep ends at its deadline.
#[tokio::test]
async fn a_long_sleep_ends_at_its_deadline() {
    hostile_result("sleep", "wall-timeout").await;
}

/// A memory bomb ends at its memory limit.
#[tokio::test]
async fn a_memory_bomb_ends_at_its_memory_limit() {
    hostile_result("memory", "memory-exceeded").await;
}

/// A log flood ends at its log budget, which caps the stored lines, and a host line says why.
#[tokio::test]
async fn a_log_flood_ends_at_its_log_budget() {
    hostile_result("flood", "log-limit").await;
    let flood_logs = &hostile().await.flood_logs;
    let driver_lines = flood_logs.iter().filter(|l| l["source"] != "host").count();
    assert_eq!(driver_lines, 200, "the log budget caps the stored lines");
    assert!(
        flood_logs.iter().any(|l| l["source"] == "host"
            && l["message"]
                .as_str()
                .expect("a host line has a message")
                .contains("log-limit")),
        "a host line says why"
    );
}

/// A panic ends as a trap with its message.
#[tokio::test]
async fn a_panic_ends_as_a_trap_with_its_message() {
    let panic = hostile_result("panic", "trap").await;
    assert!(
        panic["message"]
            .as_str()
            .expect("a message")
            .contains("boom from the guest"),
        "{panic}"
    );
}

/// HTTP to a host not on the allow-list is denied, naming it and the allow-list.
#[tokio::test]
async fn http_to_a_host_not_allowed_is_denied_naming_it() {
    let other = hostile_result("http-other-host", "denied").await;
    let message = other["message"].as_str().expect("a message");
    assert!(
        message.contains("example.com:80") && message.contains("allow"),
        "{other}"
    );
}

/// HTTP to loopback is denied even when the allow-list names it.
#[tokio::test]
async fn http_to_an_allowed_loopback_address_is_denied() {
    hostile_result("http-loopback", "denied").await;
}

/// HTTP to a name that resolves to loopback is denied, judged by the resolved address.
#[tokio::test]
async fn http_to_a_name_that_resolves_to_loopback_is_denied() {
    let by_name = hostile_result("http-name-to-loopback", "denied").await;
    let message = by_name["message"].as_str().expect("a message");
    assert!(
        message.contains("127.0.0.1") || message.contains("::1"),
        "judged by the resolved address: {by_name}"
    );
}

/// After the hostile runs the host is still up and serves the test driver too.
#[tokio::test]
async fn the_host_serves_on_after_hostile_runs() {
    let h = hostile().await;
    assert_eq!(h.health_after, 200);
    assert_eq!(h.still_ok["success"], true);
}

/// Files: nothing is mounted, so neither /etc/passwd nor the host's own directories exist for
/// the guest.
#[tokio::test]
async fn a_guest_reads_no_file_it_was_not_granted() {
    let Fixture { host, dir } = hostile_host().await;
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
            r["message"]
                .as_str()
                .expect("a message")
                .contains("No such file or directory"),
            "not found, as if it did not exist: {r}"
        );
        assert!(!r.to_string().contains("root:"), "{r}");
    }
}

/// Environment: none granted, none seen.
#[tokio::test]
async fn a_guest_sees_no_environment_it_was_not_granted() {
    let host = &hostile_host().await.host;
    let run = host.create("test", "env", json!({"action": "env"})).await;
    let r = host.result(&run).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["data"]["env"], json!({}), "{r}");
}

// ---- granted capabilities -------------------------------------------------------------------

const SECRET: &str = "s3cr3t-Token-value";

/// A directory for a host granting the test driver what [`granted_config`] says: a
/// read-write `workspace/`, a read-only `ro/` with a file, and a secret in `token`.
fn granted_dir() -> tempfile::TempDir {
    let dir = workdir(&["test-driver"]);
    std::fs::create_dir(dir.path().join("workspace")).expect("create workspace/");
    std::fs::create_dir(dir.path().join("ro")).expect("create ro/");
    std::fs::write(dir.path().join("ro/readme.txt"), "read me").expect("write ro/readme.txt");
    std::fs::write(dir.path().join("token"), format!("{SECRET}\n")).expect("write token");
    dir
}

/// Grants the test driver the directories, `GREETING`, the secret `TOKEN`, HTTP to the hello
/// server and, with `region`, `REGION` from the host's `CONVEYOR_TEST_REGION`.
fn granted_config(region: bool) -> String {
    let port = hello_port();
    let region = if region {
        "REGION = { env = \"CONVEYOR_TEST_REGION\" }\n"
    } else {
        ""
    };
    format!(
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
{region}
[drivers.test-driver.secrets]
TOKEN = {{ file = "token" }}

[drivers.test-driver.http]
allow = ["localhost:{port}"]
allow_private = true
"#
    )
}

/// The module's host with granted capabilities (all but `REGION`, which would come from this
/// process's environment).
async fn granted_host() -> &'static Fixture {
    static HOST: OnceCell<Fixture> = OnceCell::const_new();
    HOST.get_or_init(|| async {
        let dir = granted_dir();
        let host = Host::start(dir.path(), &granted_config(false));
        host.define("test", any_schema()).await;
        Fixture { host, dir }
    })
    .await
}

/// A read-write directory grant: the guest writes a file the host sees.
#[tokio::test]
async fn a_read_write_directory_grant_lets_the_guest_write() {
    let Fixture { host, dir } = granted_host().await;
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
        std::fs::read_to_string(dir.path().join("workspace/out.txt")).expect("the guest's file"),
        "written by the guest"
    );
}

/// A read-only directory grant: the guest reads.
#[tokio::test]
async fn a_read_only_directory_grant_lets_the_guest_read() {
    let host = &granted_host().await.host;
    let run = host
        .create(
            "test",
            "read-ro",
            json!({"action": "read", "path": "/ro/readme.txt"}),
        )
        .await;
    let r = host.result(&run).await;
    assert_eq!(r["data"]["text"], "read me", "{r}");
}

/// A read-only directory grant refuses writes.
#[tokio::test]
async fn a_read_only_directory_grant_refuses_writes() {
    let Fixture { host, dir } = granted_host().await;
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
}

/// Only the granted variables reach the guest, the secret masked. The binary, since `REGION`
/// comes from the host process's environment.
#[tokio::test]
async fn only_granted_variables_reach_the_guest_and_secrets_are_masked() {
    let dir = granted_dir();
    let host = Host::spawn(
        crate::host_bin(),
        dir.path(),
        &granted_config(true),
        &[("CONVEYOR_TEST_REGION", "eu-west")],
    );
    host.define("test", any_schema()).await;
    let run = host.create("test", "env", json!({"action": "env"})).await;
    let r = host.result(&run).await;
    assert_eq!(
        r["data"]["env"],
        json!({"GREETING": "hello", "REGION": "eu-west", "TOKEN": "***"}),
        "only the granted variables, the secret masked: {r}"
    );
}

/// HTTP to a loopback server that is allowed explicitly (`allow_private`) works.
#[tokio::test]
async fn http_to_an_explicitly_allowed_loopback_server_works() {
    let host = &granted_host().await.host;
    let run = host
        .create(
            "test",
            "http",
            json!({"action": "http", "url": format!("http://localhost:{}/", hello_port())}),
        )
        .await;
    let r = host.result(&run).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["data"]["status"], 200, "{r}");
    assert_eq!(r["data"]["body"], "hello from the test server", "{r}");
}

/// A run that prints, logs and returns the secret.
async fn secret_run(host: &Host, name: &str) -> String {
    host.create("test", name, json!({"action": "secret", "name": "TOKEN"}))
        .await
}

/// A secret the guest uses is masked in its result and in its log.
#[tokio::test]
async fn a_secret_is_masked_in_the_result_and_the_log() {
    let host = &granted_host().await.host;
    let run = secret_run(host, "secret").await;
    let r = host.result(&run).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["message"], "used ***", "{r}");
    assert_eq!(r["data"]["secret"], "***", "{r}");
    let logs = log_text(host, &run).await;
    assert!(logs.contains("the secret is ***"), "{logs}");
    assert!(logs.contains("secret: ***"), "{logs}");
}

/// A secret never shows in the stored logs, the result, the live stream or the host's log.
#[tokio::test]
async fn a_secret_never_leaks_into_logs_results_streams_or_the_host_log() {
    let host = &granted_host().await.host;
    let run = secret_run(host, "secret-leak").await;
    host.result(&run).await;
    let sse = reqwest::get(host.at(&format!("/logs/streams/test-driver/{run}")))
        .await
        .expect("GET the stream");
    let mut sse = Sse::new(sse);
    sse.data(2).await;
    let streamed = sse.text().to_string();
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

// ---- hot reload -------------------------------------------------------------------------------

/// Writes a file beside the target and renames it into place, as a deploy would.
fn drop_in(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write the new file");
    std::fs::rename(&tmp, dir.join(name)).expect("rename it into place");
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

/// Drivers dropped in, replaced and removed while events stream in, and what the host made
/// of each change.
struct HotReload {
    /// The test driver's entry at start, and once the new version serves.
    v1: Value,
    v2: Value,
    v2_sha: String,
    /// The results of 30 events sent across the swap.
    swap_results: Vec<Value>,
    /// The entry once a broken replacement was seen, and a result after it.
    broken: Value,
    after_broken: Value,
    /// A driver dropped in: its entry and a result of it.
    added: Value,
    added_result: Value,
    /// Whether it was unloaded within 30 s of its removal (the wait panics otherwise).
    removed: bool,
}

async fn hot_reload() -> &'static HotReload {
    static RELOAD: OnceCell<HotReload> = OnceCell::const_new();
    RELOAD
        .get_or_init(|| async {
            let dir = workdir(&["test-driver"]);
            let drivers = dir.path().join("drivers");
            let host = Host::start(dir.path(), "[defaults]\nmax_attempts = 1\n");
            host.define("test", any_schema()).await;
            host.define("noop", any_schema()).await;
            let v1 = host
                .driver("test-driver")
                .await
                .expect("test-driver listed");

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
            let original = std::fs::read(rust_driver("test-driver")).expect("read test-driver");
            let v2_bytes = with_custom_section(&original, b"v2");
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
            let v2 = host
                .wait_for_driver_list("the new sha256", |list| {
                    find_driver(list, "test-driver").filter(|d| d["sha256"] == v2_sha.as_str())
                })
                .await;
            let mut swap_results = Vec::new();
            for run in &runs {
                swap_results.push(host.result(run).await);
            }

            // A broken replacement.
            drop_in(&drivers, "test-driver.wasm", b"this is not WebAssembly");
            let broken = host
                .wait_for_driver_list("the reload error", |list| {
                    find_driver(list, "test-driver").filter(|d| d.get("reload_error").is_some())
                })
                .await;
            let run = host
                .create("test", "after-broken", json!({"action": "ok"}))
                .await;
            let after_broken = host.result(&run).await;

            // A new driver dropped in, then removed.
            let noop = std::fs::read(rust_driver("noop-driver")).expect("read noop-driver");
            drop_in(&drivers, "noop-driver.wasm", &noop);
            let added = host
                .wait_for_driver_list("the new driver", |list| find_driver(list, "noop-driver"))
                .await;
            let run = host.create("noop", "n1", json!({})).await;
            let added_result = host.result(&run).await;
            std::fs::remove_file(drivers.join("noop-driver.wasm")).expect("remove noop-driver");
            host.wait_for_driver_list("the driver to be unloaded", |list| {
                find_driver(list, "noop-driver")
                    .is_none()
                    .then_some(Value::Null)
            })
            .await;
            HotReload {
                v1,
                v2,
                v2_sha,
                swap_results,
                broken,
                after_broken,
                added,
                added_result,
                removed: true,
            }
        })
        .await
}

/// A new version dropped in replaces the old one.
#[tokio::test]
async fn a_new_version_dropped_in_replaces_the_old_one() {
    let h = hot_reload().await;
    assert_eq!(h.v1["state"], "ready", "{}", h.v1);
    assert_eq!(h.v2["sha256"], h.v2_sha.as_str(), "{}", h.v2);
    assert_ne!(h.v1["sha256"], h.v2["sha256"]);
}

/// No event fails across the swap.
#[tokio::test]
async fn no_event_fails_across_a_swap() {
    let h = hot_reload().await;
    assert_eq!(h.swap_results.len(), 30);
    for r in &h.swap_results {
        assert_eq!(r["success"], true, "no event fails across the swap: {r}");
    }
}

/// A broken replacement leaves the old version serving, its runs counted, and says why.
#[tokio::test]
async fn a_broken_replacement_leaves_the_old_version_serving() {
    let h = hot_reload().await;
    let broken = &h.broken;
    assert!(broken.get("reload_error").is_some(), "{broken}");
    assert_eq!(broken["state"], "ready", "{broken}");
    assert_eq!(broken["sha256"], h.v2_sha.as_str(), "{broken}");
    assert_eq!(h.after_broken["success"], true);
    // Exactly the 30 runs across the swap: counts carry over from version to version.
    assert_eq!(broken["runs"]["succeeded"], 30, "{broken}");
}

/// A new driver dropped in gets served.
#[tokio::test]
async fn a_driver_dropped_in_is_served() {
    let h = hot_reload().await;
    assert_eq!(h.added["name"], "noop-driver", "{}", h.added);
    assert_eq!(h.added_result["success"], true);
}

/// A driver whose file is removed is unloaded.
#[tokio::test]
async fn a_removed_driver_is_unloaded() {
    assert!(hot_reload().await.removed);
}

// ---- the command line -----------------------------------------------------------------------

/// `check` names the capabilities a component imports: `wasi:http` for the test driver.
#[test]
fn check_lists_the_capabilities_a_component_imports() {
    let wasm = rust_driver("test-driver");
    let (code, out, err) = run_cli(&["check", wasm.to_str().expect("a UTF-8 path")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("capabilities it imports"), "{out}");
    assert!(out.contains("wasi:http "), "{out}");
}

/// `check` does not list `wasi:http` for a component that does not import it.
#[test]
fn check_lists_no_http_for_a_component_without_it() {
    let noop = rust_driver("noop-driver");
    let (code, out, err) = run_cli(&["check", noop.to_str().expect("a UTF-8 path")]);
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
    .expect("write the config");
    let config = dir.path().join("host.toml");
    let (code, _, err) = run_cli(&["run", "--config", config.to_str().expect("a UTF-8 path")]);
    assert_ne!(code, 0);
    assert!(err.contains("drivers.x.secrets.T"), "{err}");
    assert!(err.contains("host.toml"), "{err}");
}
