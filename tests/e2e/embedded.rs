//! Embedded mode: the host's own API and SQLite store, with the sample and test drivers; bad
//! requests; broken and hostile drivers; retries; events and the compile cache across a
//! SIGKILL; and the `check` and config errors of the command line.

use std::time::Duration;

use serde_json::{Value, json};
use support::http::run_id_of;
use support::{Host, Sse, Ws, duration_between, parse_time, rust_driver};
use tokio::sync::OnceCell;

use crate::{Fixture, run_cli, spawn, workdir};

const SAMPLE_SCHEMA: &str = r#"{"type":"object","properties":{"delay_ms":{"type":"integer"}}}"#;

fn sample_schema() -> Value {
    serde_json::from_str(SAMPLE_SCHEMA).expect("the sample schema is JSON")
}

/// The module's host: the sample and test drivers, with definitions `resource-1` (the sample
/// driver's), `test` (the test driver's) and `pipe` (no driver, a schema to fail).
async fn host() -> &'static Host {
    static HOST: OnceCell<Fixture> = OnceCell::const_new();
    let fixture = HOST
        .get_or_init(|| async {
            let fixture = Fixture::start(
                &["sample-driver", "test-driver"],
                "[defaults]\nmax_attempts = 3\nbackoff = \"200ms\"\n",
            );
            let host = &fixture.host;
            host.define("resource-1", sample_schema()).await;
            host.define("test", json!({"type": "object"})).await;
            host.define(
                "pipe",
                json!({"type": "object", "properties": {"image": {"type": "string"}}, "required": ["steps"]}),
            )
            .await;
            fixture
        })
        .await;
    &fixture.host
}

// ---- the sample driver over HTTP, WebSocket and SSE --------------------------------------

/// One sample-driver run, watched every way: its create response, the WebSocket and SSE
/// streams attached while the driver is mid-run, its result, its stored lines and its
/// resource afterwards.
struct SampleRun {
    created: (u16, Value),
    run: String,
    sse_content_type: String,
    ws_lines: Vec<Value>,
    sse_lines: Vec<Value>,
    /// How many lines were stored once both streams were attached: fewer than five means
    /// the rest reached them live, after the replay.
    stored_after_attach: usize,
    result: Value,
    stored: Vec<Value>,
    resource: Value,
}

async fn sample_run() -> &'static SampleRun {
    static RUN: OnceCell<SampleRun> = OnceCell::const_new();
    RUN.get_or_init(|| async {
        let host = host().await;
        let created = host
            .post(
                "/resources",
                &json!({"name": "app", "resource": "resource-1", "spec": {"delay_ms": 300}}),
            )
            .await;
        let run = created.1["runid"]
            .as_str()
            .unwrap_or_else(|| panic!("no run id: {created:?}"))
            .to_string();
        // Both streams attach while the driver is mid-run (its first line stored): they
        // must replay what is stored and then follow live, with no gap and no duplicate.
        support::wait_until(
            Duration::from_secs(30),
            "the sample driver's first line",
            || async { !host.logs(&run).await.is_empty() },
        )
        .await;
        let mut ws = Ws::connect(&host.ws_at(&format!("/logs/streams/sample-driver/{run}"))).await;
        let sse = reqwest::get(host.at(&format!("/logs/streams/sample-driver/{run}")))
            .await
            .expect("sse");
        let stored_after_attach = host.logs(&run).await.len();
        let sse_content_type = sse.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_string();
        let ws_lines = ws.take(5).await;
        let sse_lines = Sse::new(sse).data(5).await;
        let result = host.result(&run).await;
        let stored = host.logs(&run).await;
        let (_, resource) = host.get("/resources/resource-1/app").await;
        SampleRun {
            created,
            run,
            sse_content_type,
            ws_lines,
            sse_lines,
            stored_after_attach,
            result,
            stored,
            resource,
        }
    })
    .await
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

/// The sample driver's five lines, as stored or streamed.
fn assert_sample_lines(lines: &[Value], run: &str) {
    let steps: Vec<&str> = lines
        .iter()
        .map(|l| l["step"].as_str().expect("a step label"))
        .collect();
    assert_eq!(steps, ["1", "2", "3", "4", "5"], "{lines:?}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            l["message"],
            format!("Sample Driver Working... {}/5", i + 1)
        );
        assert_eq!(l["runid"], run);
        assert_eq!(l["driver"], "sample-driver");
        assert!(
            l["timestamp"].as_str().expect("a timestamp").contains('.'),
            "sub-second: {l}"
        );
    }
}

/// `POST /resources` answers as Conveyor does, with a UUID run id.
#[tokio::test]
async fn create_answers_with_the_resource_and_a_run_id() {
    let SampleRun { created, run, .. } = sample_run().await;
    let (status, body) = created;
    assert_eq!(*status, 201, "{body}");
    assert_eq!(body["message"], "Resource created successfully");
    assert_eq!(body["name"], "app");
    assert_eq!(body["version"], "1");
    assert!(uuid_like(run), "{run}");
}

/// The sample driver's result is stored with the run.
#[tokio::test]
async fn sample_driver_result_is_stored() {
    let result = &sample_run().await.result;
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["message"], "Sample Driver Reconciled Successfully");
    assert_eq!(result["driver"], "sample-driver");
    assert_eq!(result["attempts"], 1);
}

/// `GET /logs` has the sample driver's five lines.
#[tokio::test]
async fn stored_log_has_the_sample_drivers_five_lines() {
    let r = sample_run().await;
    assert_sample_lines(&r.stored, &r.run);
}

/// A WebSocket attached mid-run replays the stored lines, then follows live, with no gap and
/// no duplicate.
#[tokio::test]
async fn websocket_replays_then_follows_a_running_driver() {
    let r = sample_run().await;
    assert_sample_lines(&r.ws_lines, &r.run);
}

/// The streams were attached mid-run: some lines were stored before (the wait saw one), and
/// some came after, so both the replay and the live part of each stream were exercised.
#[tokio::test]
async fn the_streams_were_attached_mid_run() {
    let r = sample_run().await;
    assert!(
        (1..5).contains(&r.stored_after_attach),
        "{} lines stored when the streams attached",
        r.stored_after_attach
    );
}

/// An SSE stream attached mid-run replays the stored lines, then follows live, with no gap
/// and no duplicate.
#[tokio::test]
async fn sse_replays_then_follows_a_running_driver() {
    let r = sample_run().await;
    assert_eq!(r.sse_content_type, "text/event-stream");
    assert_sample_lines(&r.sse_lines, &r.run);
}

/// The result is also on the resource, where Conveyor's engine keeps it.
#[tokio::test]
async fn result_is_kept_in_the_resources_metadata() {
    let res = &sample_run().await.resource;
    let stored: Value = serde_json::from_str(
        res["metadata"]["driverresults.sample-driver"]
            .as_str()
            .expect("driverresults.sample-driver"),
    )
    .expect("the stored result is JSON");
    assert_eq!(stored["success"], true);
    assert_eq!(res["metadata"]["version"], "1");
}

// ---- bad requests: 4xx with {"error": ...}, never a panic or a plain-text body -------------

/// A spec that fails the schema: 400 naming the failure.
#[tokio::test]
async fn spec_missing_a_required_field_is_refused_naming_it() {
    let host = host().await;
    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "x", "resource": "pipe", "spec": {"image": "a"}}),
        )
        .await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().expect("an error");
    assert!(error.starts_with("Resource validation failed:"), "{error}");
    assert!(error.contains("steps"), "{error}");
}

/// A spec field of the wrong type: 400 naming its path.
#[tokio::test]
async fn spec_field_of_the_wrong_type_is_refused_naming_its_path() {
    let host = host().await;
    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "y", "resource": "pipe", "spec": {"image": 5, "steps": []}}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().expect("an error").contains("/image"),
        "{body}"
    );
}

/// A missing definition: 404 (upstream answers 500).
#[tokio::test]
async fn resource_of_a_missing_definition_is_404() {
    let host = host().await;
    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "x", "resource": "nope", "spec": {}}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        body["error"],
        "Failed to find resource definition: resource definition with name nope not found"
    );
}

/// Malformed JSON, and JSON without its content type: 400.
#[tokio::test]
async fn malformed_json_and_json_without_its_content_type_are_400() {
    let host = host().await;
    let client = reqwest::Client::new();
    for request in [
        client
            .post(host.at("/resources"))
            .header("content-type", "application/json")
            .body("{\"name\": "),
        client
            .post(host.at("/resources"))
            .body(r#"{"name":"x","resource":"pipe"}"#),
    ] {
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.expect("a JSON body");
        assert!(
            body["error"]
                .as_str()
                .expect("an error")
                .starts_with("Invalid request payload"),
            "{body}"
        );
    }
}

/// A resource without a type: 400.
#[tokio::test]
async fn resource_without_a_type_is_400() {
    let host = host().await;
    let (status, body) = host
        .post("/resources", &json!({"name": "x", "spec": {}}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("Resource type is required"))
    );
}

/// A resource created twice: 409.
#[tokio::test]
async fn duplicate_resource_is_409() {
    let host = host().await;
    host.create("pipe", "one", json!({"steps": []})).await;
    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "one", "resource": "pipe", "spec": {"steps": []}}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("an error")
            .contains("already exists")
    );
}

/// An unknown resource: 404 naming it.
#[tokio::test]
async fn unknown_resource_is_404_naming_it() {
    let host = host().await;
    let (status, body) = host.get("/resources/pipe/ghost").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().expect("an error").contains("ghost"));
}

/// An unknown route: 404 with a JSON error, as upstream's Fiber says it.
#[tokio::test]
async fn unknown_route_is_404_in_json() {
    let host = host().await;
    let (status, body) = host.get("/no/such/route").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("Cannot GET /no/such/route"))
    );
}

/// `GET /health` says the host is healthy.
#[tokio::test]
async fn health_says_healthy() {
    let host = host().await;
    let (status, body) = host.get("/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("healthy")));
}

// ---- resource versions, update and delete events, definitions ----------------------------

/// Creates `test/<name>`, waits for its create's result, then updates it to version 2 (with
/// `lines: 2`); returns the update's response status, run id and body.
async fn create_then_update(host: &Host, name: &str) -> (u16, String, Value) {
    let run = host.create("test", name, json!({"action": "ok"})).await;
    host.result(&run).await;
    let response = reqwest::Client::new()
        .put(host.at(&format!("/resources/test/{name}")))
        .json(&json!({"name": name, "resource": "test", "spec": {"action": "ok", "lines": 2}}))
        .send()
        .await
        .expect("PUT the resource");
    let status = response.status().as_u16();
    let run = run_id_of(&response);
    let body = response.json().await.expect("the updated resource");
    (status, run, body)
}

/// A new resource's driver gets a `create` event.
#[tokio::test]
async fn create_sends_a_create_event() {
    let host = host().await;
    let run = host
        .create("test", "created", json!({"action": "ok"}))
        .await;
    assert_eq!(host.result(&run).await["data"]["event"], "create");
}

/// `PUT` stores version 2 and sends an `update` event with it.
#[tokio::test]
async fn update_stores_a_new_version_and_sends_an_update_event() {
    let host = host().await;
    let (status, update_run, updated) = create_then_update(host, "updated").await;
    assert_eq!(status, 200);
    assert_eq!(updated["metadata"]["version"], "2");
    let result = host.result(&update_run).await;
    assert_eq!(result["data"]["event"], "update");
    assert_eq!(result["data"]["version"], "2");
    assert_eq!(host.logs(&update_run).await.len(), 2);
}

/// Every version stays readable; one never made is 404.
#[tokio::test]
async fn earlier_versions_stay_readable() {
    let host = host().await;
    let (_, update_run, _) = create_then_update(host, "versioned").await;
    host.result(&update_run).await;
    let (status, v1) = host.get("/resources/test/versioned/1").await;
    assert_eq!((status, v1["spec"]["lines"].clone()), (200, Value::Null));
    let (status, _) = host.get("/resources/test/versioned/9").await;
    assert_eq!(status, 404);
}

/// `DELETE` sends a `delete` event; the resource is gone but its snapshots stay.
#[tokio::test]
async fn delete_sends_a_delete_event_and_keeps_the_snapshots() {
    let host = host().await;
    let (_, update_run, _) = create_then_update(host, "deleted").await;
    host.result(&update_run).await;
    let response = reqwest::Client::new()
        .delete(host.at("/resources/test/deleted"))
        .send()
        .await
        .expect("DELETE the resource");
    assert_eq!(response.status(), 204);
    let delete_run = run_id_of(&response);
    assert_eq!(host.result(&delete_run).await["data"]["event"], "delete");
    assert_eq!(host.get("/resources/test/deleted").await.0, 404);
    assert_eq!(
        host.get("/resources/test/deleted/2").await.0,
        200,
        "snapshots survive a delete"
    );
}

/// Definitions: apply keeps the id; PUT replaces; DELETE removes.
#[tokio::test]
async fn definition_apply_keeps_its_id_put_replaces_and_delete_removes() {
    let host = host().await;
    host.define("lifecycle", json!({"type": "object"})).await;
    let (_, def) = host.get("/resource-definitions/lifecycle").await;
    let (status, applied) = host
        .post(
            "/resource-definitions/apply",
            &json!({"name": "lifecycle", "version": "2", "schema": {"type": "object"}}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(applied["id"], def["id"]);
    let (status, _) = host
        .put(
            "/resource-definitions/lifecycle",
            &json!({"schema": {"type": "object"}, "version": "3"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        host.get("/resource-definitions/lifecycle").await.1["version"],
        "3"
    );
    let (status, _) = host.delete("/resource-definitions/lifecycle").await;
    assert_eq!(status, 204);
    assert_eq!(host.get("/resource-definitions/lifecycle").await.0, 404);
}

/// Follows a list route's pages of `limit` by `X-Conveyor-Next-After`: the names of each page.
async fn pages(host: &Host, path: &str, limit: u32) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let response = reqwest::get(host.at(&format!("{path}?limit={limit}&after={after}")))
            .await
            .expect("GET a page");
        assert_eq!(response.status(), 200, "{path}");
        let next = response
            .headers()
            .get("x-conveyor-next-after")
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let page: Vec<Value> = response.json().await.expect("a JSON list");
        out.push(
            page.iter()
                .map(|i| i["name"].as_str().unwrap_or_default().to_string())
                .collect(),
        );
        match next {
            Some(n) => after = n,
            None => return out,
        }
        assert!(out.len() < 100, "no end to the pages of {path}");
    }
}

/// `GET /resources/{type}` lists the type's resources by name, a page at a time, to the end.
#[tokio::test]
async fn a_types_resources_are_listed_page_by_page() {
    let host = host().await;
    host.define("listed", json!({"type": "object"})).await;
    for name in ["c", "a", "e", "b", "d"] {
        host.create("listed", name, json!({})).await;
    }
    assert_eq!(
        pages(host, "/resources/listed", 2).await,
        [vec!["a", "b"], vec!["c", "d"], vec!["e"]]
    );
    assert_eq!(host.get("/resources/listed?limit=0").await.0, 400);
}

/// `GET /resource-definitions` lists every definition by name across its pages.
#[tokio::test]
async fn definitions_are_listed_page_by_page() {
    let host = host().await;
    let all: Vec<String> = pages(host, "/resource-definitions", 1)
        .await
        .into_iter()
        .flatten()
        .collect();
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all, sorted, "in order, each once");
    for name in ["resource-1", "test", "pipe"] {
        assert!(all.iter().any(|n| n == name), "{name} in {all:?}");
    }
}

// ---- the client import, guest output, retries --------------------------------------------

/// The `client` import reads the host's store.
#[tokio::test]
async fn drivers_read_the_store_through_the_api_client() {
    let host = host().await;
    let run = host
        .create("test", "reader", json!({"action": "client"}))
        .await;
    let r = host.result(&run).await;
    assert_eq!(r["success"], true, "{r}");
    let (_, me) = host.get("/resources/test/reader").await;
    assert_eq!(r["data"]["id"], me["id"]);
    assert_eq!(r["data"]["definition"], "test");
    assert!(
        r["data"]["missing"]
            .as_str()
            .expect("the missing resource's error")
            .starts_with("not found"),
        "{r}"
    );
}

/// Guest stdout and stderr land in the run's log.
#[tokio::test]
async fn guest_stdout_and_stderr_land_in_the_runs_log() {
    let host = host().await;
    let run = host
        .create(
            "test",
            "printer",
            json!({"action": "stdout", "message": "hello from wasm"}),
        )
        .await;
    host.result(&run).await;
    let lines = host.logs(&run).await;
    assert!(
        lines
            .iter()
            .any(|l| l["stream"] == "stdout" && l["message"] == "hello from wasm")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["stream"] == "stderr" && l["message"] == "to stderr: hello from wasm")
    );
}

/// A driver that asks to be retried twice and then succeeds: the run succeeds on attempt 3,
/// with backoff between attempts (200 ms, then 400 ms).
#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let host = host().await;
    let run = host
        .create("test", "flaky", json!({"action": "flaky", "succeed_on": 3}))
        .await;
    let r = host.result(&run).await;
    assert_eq!(
        (r["success"].as_bool(), r["attempts"].as_u64()),
        (Some(true), Some(3)),
        "{r}"
    );
    let notes: Vec<Value> = host
        .logs(&run)
        .await
        .into_iter()
        .filter(|l| l["source"] == "host")
        .collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[1]["message"]
            .as_str()
            .expect("a message")
            .contains("retrying in 400ms"),
        "{notes:?}"
    );
}

/// A driver that never succeeds gives up after max_attempts, saying so.
#[tokio::test]
async fn retries_give_up_after_max_attempts() {
    let host = host().await;
    let run = host
        .create(
            "test",
            "hopeless",
            json!({"action": "flaky", "succeed_on": 99}),
        )
        .await;
    let r = host.result(&run).await;
    assert_eq!(
        (r["success"].as_bool(), r["attempts"].as_u64()),
        (Some(false), Some(3))
    );
    assert!(
        r["message"]
            .as_str()
            .expect("a message")
            .contains("gave up after 3 attempts"),
        "{r}"
    );
}

// ---- broken and hostile drivers ------------------------------------------------------------

/// A host with two files that are no drivers beside the test and sample drivers, a 3 s
/// deadline, a 32 MiB memory limit and no retries.
async fn hostile_host() -> &'static Host {
    static HOST: OnceCell<Fixture> = OnceCell::const_new();
    let fixture = HOST
        .get_or_init(|| async {
            let dir = workdir(&["test-driver", "sample-driver"]);
            std::fs::write(dir.path().join("drivers/broken.wasm"), b"this is not wasm")
                .expect("write broken.wasm");
            std::fs::write(dir.path().join("drivers/core.wasm"), b"\0asm\x01\0\0\0")
                .expect("write core.wasm");
            let host = Host::start(
                dir.path(),
                "[defaults]\ntimeout = \"3s\"\nmemory = \"32MiB\"\nmax_attempts = 1\n",
            );
            host.define("test", json!({"type": "object"})).await;
            host.define("resource-1", sample_schema()).await;
            Fixture { host, dir }
        })
        .await;
    &fixture.host
}

/// A file that is not WebAssembly, and a core module, are reported in the log.
#[tokio::test]
async fn broken_files_are_reported_in_the_log() {
    let log = hostile_host().await.log();
    assert!(
        log.contains("broken.wasm") && log.contains("not a WebAssembly file"),
        "{log}"
    );
    assert!(
        log.contains("core.wasm") && log.contains("not a component"),
        "{log}"
    );
}

/// `GET /drivers` lists the broken files as failed, beside the ready drivers.
#[tokio::test]
async fn broken_files_are_listed_as_failed_beside_the_ready_drivers() {
    let (_, drivers) = hostile_host().await.get("/drivers").await;
    let states: Vec<(String, String)> = drivers
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| {
            let id = d["name"]
                .as_str()
                .or(d["file"].as_str())
                .expect("a name or a file");
            (
                id.rsplit('/').next().unwrap_or(id).to_string(),
                d["state"].as_str().expect("a state").to_string(),
            )
        })
        .collect();
    for expected in [
        ("test-driver", "ready"),
        ("sample-driver", "ready"),
        ("broken.wasm", "failed"),
        ("core.wasm", "failed"),
    ] {
        assert!(
            states
                .iter()
                .any(|(n, s)| (n.as_str(), s.as_str()) == expected),
            "{expected:?} in {states:?}"
        );
    }
}

/// A panic ends as a trap whose message and log carry the panic's text; the host stays up.
#[tokio::test]
async fn a_panic_fails_the_run_as_a_trap_with_its_message() {
    let host = hostile_host().await;
    let panic = host
        .create(
            "test",
            "panic",
            json!({"action": "panic", "message": "the spec is wrong"}),
        )
        .await;
    let r = host.result(&panic).await;
    assert_eq!(
        (r["success"].as_bool(), r["failure_kind"].as_str()),
        (Some(false), Some("trap"))
    );
    let message = r["message"].as_str().expect("a message");
    assert!(
        message.contains("panicked") && message.contains("the spec is wrong"),
        "{message}"
    );
    let stderr: Vec<Value> = host.logs(&panic).await;
    assert!(
        stderr
            .iter()
            .any(|l| l["stream"] == "stderr" && l["message"] == "the spec is wrong"),
        "the panic text is in the run's log: {stderr:?}"
    );
    assert_eq!(host.get("/health").await.0, 200);
}

/// An endless loop ends at the 3 s deadline; the host stays up.
#[tokio::test]
async fn an_endless_loop_ends_at_the_wall_clock_deadline() {
    let host = hostile_host().await;
    let looping = host.create("test", "loop", json!({"action": "loop"})).await;
    let r = host.result(&looping).await;
    assert_eq!(r["failure_kind"], "wall-timeout", "{r}");
    // Not before the deadline; that the deadline ended it is the failure kind.
    let took = duration_between(&r["started_at"], &r["finished_at"]);
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert_eq!(host.get("/health").await.0, 200);
}

/// A memory hog ends at the memory limit; the host stays up.
#[tokio::test]
async fn a_memory_hog_ends_at_the_memory_limit() {
    let host = hostile_host().await;
    let hog = host
        .create("test", "hog", json!({"action": "memory"}))
        .await;
    let r = host.result(&hog).await;
    assert_eq!(r["failure_kind"], "memory-exceeded", "{r}");
    assert_eq!(host.get("/health").await.0, 200);
}

/// While a loop spins, the host answers and another driver completes.
#[tokio::test]
async fn a_well_behaved_driver_is_served_while_a_loop_spins() {
    let host = hostile_host().await;
    let looping = host
        .create("test", "spinning", json!({"action": "loop"}))
        .await;
    host.wait_for_run(&looping, "/status", "running").await;
    assert_eq!(host.get("/health").await.0, 200);
    let sample = host
        .create("resource-1", "ok", json!({"delay_ms": 0}))
        .await;
    let done = host.result(&sample).await;
    assert_eq!(done["success"], true);
    let spun = host.result(&looping).await;
    assert!(
        parse_time(&done["finished_at"]) < parse_time(&spun["finished_at"]),
        "the well-behaved driver waited for the loop: {done} / {spun}"
    );
}

// ---- a SIGKILL: the binary --------------------------------------------------------------

/// The first start compiles the drivers; after a SIGKILL, the second loads them from the
/// compile cache.
#[tokio::test]
async fn drivers_load_from_the_compile_cache_after_a_crash() {
    let dir = crate::workdir_cold(&["test-driver"]);
    let config = "[defaults]\nconcurrency = 1\n";
    let mut host = spawn(dir.path(), config);
    let (_, drivers) = host.get("/drivers").await;
    assert_eq!(drivers[0]["loaded_from"], "compiled");
    host.kill();

    let host = spawn(dir.path(), config);
    let (_, drivers) = host.get("/drivers").await;
    assert_eq!(drivers[0]["loaded_from"], "cache", "{drivers}");
}

/// A completed run, one slow event in flight and nine queued behind it (concurrency 1) when
/// the host is SIGKILLed, and what became of each after a restart, read once the restarted
/// host is quiet (no run in flight, nothing waiting), so that no later result can come.
struct Crash {
    /// The runs: the slow one first.
    runs: Vec<String>,
    /// Each run's results after the restart.
    results: Vec<Vec<Value>>,
    /// The slow run's first result.
    slow: Value,
    /// The run that completed before the kill: its result then, its results after the
    /// restart, and its log lines after the restart.
    done_before: Value,
    done_after: Vec<Value>,
    done_logs: Vec<Value>,
}

async fn crash() -> &'static Crash {
    static CRASH: OnceCell<Crash> = OnceCell::const_new();
    CRASH
        .get_or_init(|| async {
            let dir = workdir(&["test-driver"]);
            let config = "[defaults]\nconcurrency = 1\n";
            let mut host = spawn(dir.path(), config);
            host.define("test", json!({"type": "object"})).await;
            let done = host
                .create("test", "done", json!({"action": "ok", "lines": 1}))
                .await;
            let done_before = host.result(&done).await;
            let mut runs = vec![
                host.create("test", "slow", json!({"action": "sleep", "ms": 5000}))
                    .await,
            ];
            host.wait_for_run(&runs[0], "/status", "running").await;
            for i in 0..9 {
                runs.push(
                    host.create("test", &format!("r{i}"), json!({"action": "ok"}))
                        .await,
                );
            }
            host.kill();

            let host = spawn(dir.path(), config);
            for run in &runs {
                host.finished_run(run, Duration::from_secs(60)).await;
            }
            host.quiet(Duration::from_secs(30)).await;
            let mut results = Vec::new();
            for run in &runs {
                let (_, over) = host.get(&format!("/runs/{run}")).await;
                results.push(over["results"].as_array().cloned().unwrap_or_default());
            }
            let slow = results[0][0].clone();
            let (_, over) = host.get(&format!("/runs/{done}")).await;
            let done_after = over["results"].as_array().cloned().unwrap_or_default();
            let done_logs = host.logs(&done).await;
            Crash {
                runs,
                results,
                slow,
                done_before,
                done_after,
                done_logs,
            }
        })
        .await
}

/// Events accepted before a SIGKILL are each processed once after the restart.
#[tokio::test]
async fn events_accepted_before_a_crash_complete_once_after_it() {
    let crash = crash().await;
    assert_eq!(crash.results.len(), crash.runs.len());
    for results in &crash.results {
        assert_eq!(
            results.len(),
            1,
            "each event has exactly one result: {results:?}"
        );
        assert_eq!(results[0]["success"], true, "{results:?}");
    }
}

/// Every create the API answered 201 before a SIGKILL in the middle of a burst (32 clients,
/// writes sharing commits) has its run finish after the restart, with one result: a 201 is
/// sent only after the commit that stored the resource, its run and its event. Three bursts,
/// each ended by a SIGKILL, on the same data directory: a kill between an answer and its
/// commit is a matter of timing, so one burst alone could miss it.
#[tokio::test]
async fn every_create_answered_before_a_crash_in_a_burst_finishes() {
    let dir = workdir(&["test-driver"]);
    let config = "[defaults]\nconcurrency = 4\n";
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    for burst in 0..3 {
        let mut host = spawn(dir.path(), config);
        if burst == 0 {
            host.define("test", json!({"type": "object"})).await;
        }
        let before = answered.lock().expect("answered").len();
        let mut clients = Vec::new();
        for c in 0..32 {
            let (url, answered) = (host.at("/resources"), answered.clone());
            clients.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                for i in 0.. {
                    let body = json!({"name": format!("burst-{burst}-{c}-{i}"),
                                      "resource": "test", "spec": {"action": "ok"}});
                    let Ok(response) = client.post(&url).json(&body).send().await else {
                        return;
                    };
                    if response.status() != 201 {
                        return;
                    }
                    let Ok(created) = response.json::<Value>().await else {
                        return;
                    };
                    if let Some(run) = created["runid"].as_str() {
                        answered.lock().expect("answered").push(run.to_string());
                    }
                }
            }));
        }
        support::wait_until(Duration::from_secs(60), "200 creates answered", || async {
            answered.lock().expect("answered").len() >= before + 200
        })
        .await;
        host.kill();
        for c in clients {
            let _ = c.await;
        }
    }
    let runs = answered.lock().expect("answered").clone();
    let host = spawn(dir.path(), config);
    for run in &runs {
        let over = host.finished_run(run, Duration::from_secs(120)).await;
        assert_eq!(over["status"], "succeeded", "{over}");
        assert_eq!(over["results"].as_array().map(Vec::len), Some(1), "{over}");
    }
}

/// A step completed before the SIGKILL is not run again after the restart: the same one
/// result, and its one log line.
#[tokio::test]
async fn a_crash_never_repeats_a_completed_step() {
    let crash = crash().await;
    assert_eq!(crash.done_after, vec![crash.done_before.clone()]);
    assert_eq!(crash.done_logs.len(), 1, "{:?}", crash.done_logs);
}

/// The run in flight at the SIGKILL counts the attempt it lost.
#[tokio::test]
async fn a_run_interrupted_by_a_crash_counts_its_first_attempt() {
    let slow = &crash().await.slow;
    assert_eq!(
        slow["attempts"], 2,
        "the interrupted run counts its first attempt: {slow}"
    );
}

// ---- the command line ---------------------------------------------------------------------

/// `conveyor-host check` describes a component: its name, resources and imports.
#[test]
fn check_describes_a_component() {
    let wasm = rust_driver("sample-driver");
    let (code, out, err) = run_cli(&["check", wasm.to_str().expect("a UTF-8 path")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("name:      sample-driver"), "{out}");
    assert!(out.contains("resources: resource-1"), "{out}");
    assert!(out.contains("conveyor:driver/log@0.1.0"), "{out}");
}

/// `check` on a file that is refused: exit code 1, and stderr names the file and the reason.
fn assert_check_refuses(name: &str, bytes: &[u8], expected: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write the file");
    let (code, _, err) = run_cli(&["check", path.to_str().expect("a UTF-8 path")]);
    assert_eq!(code, 1);
    assert!(err.contains(name) && err.contains(expected), "{err}");
}

/// `check` refuses a file that is not WebAssembly.
#[test]
fn check_refuses_a_file_that_is_not_webassembly() {
    assert_check_refuses("text.wasm", b"hello", "not a WebAssembly file");
}

/// `check` refuses a core module.
#[test]
fn check_refuses_a_core_module() {
    assert_check_refuses("core.wasm", b"\0asm\x01\0\0\0", "core WebAssembly module");
}

/// `check` names a file that does not exist.
#[test]
fn check_names_a_missing_file() {
    let (code, _, err) = run_cli(&["check", "/no/such/file.wasm"]);
    assert_eq!(code, 1);
    assert!(err.contains("/no/such/file.wasm"), "{err}");
}

/// A config mistake stops the host with a message naming the file and the key.
fn assert_config_error_names(text: &str, key: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("host.toml");
    std::fs::write(&path, text).expect("write the config");
    let (code, _, err) = run_cli(&["run", "--config", path.to_str().expect("a UTF-8 path")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("host.toml") && err.contains(key), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A bad duration names its key.
#[test]
fn config_error_names_a_bad_duration() {
    assert_config_error_names(
        "drivers_dir = \".\"\ndata_dir = \"d\"\n[defaults]\ntimeout = \"forever\"\n",
        "timeout",
    );
}

/// A bad listen address names its key.
#[test]
fn config_error_names_a_bad_listen_address() {
    assert_config_error_names(
        "drivers_dir = \".\"\ndata_dir = \"d\"\n[api]\nlisten = \"nowhere\"\n",
        "listen",
    );
}

/// An unknown key is named.
#[test]
fn config_error_names_an_unknown_key() {
    assert_config_error_names(
        "drivers_dir = \".\"\ndata_dir = \"d\"\nworkers = 4\n",
        "workers",
    );
}
