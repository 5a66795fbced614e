//! The embedded control plane: pipelines and their routes, runs of steps in order, the
//! pipeline log streams, listing runs, retries, coalescing, metrics, and durability across a
//! SIGKILL.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use support::http::run_id_of;
use support::{Host, Sse, Ws, parse_time};
use tokio::sync::OnceCell;

use crate::{Fixture, spawn, workdir};

/// Creates a resource of type `staged` on a pipeline and returns its run id.
async fn create_piped(host: &Host, name: &str, pipeline: &str, spec: Value) -> String {
    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": name, "resource": "staged", "pipeline": pipeline, "spec": spec}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["runid"].as_str().expect("runid").to_string()
}

/// A pipeline for `staged` with one step per driver.
fn pipeline(name: &str, drivers: &[&str]) -> Value {
    let steps: Vec<Value> = drivers
        .iter()
        .enumerate()
        .map(
            |(i, d)| json!({"id": (i + 1).to_string(), "name": format!("s{}", i + 1), "driver": d}),
        )
        .collect();
    json!({"name": name, "resource": "staged", "description": "test", "steps": steps})
}

/// Creates a pipeline; panics unless it is created. Returns the created pipeline.
async fn create_pipeline(host: &Host, pipeline: &Value) -> Value {
    let (status, body) = host.post("/pipelines", pipeline).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// A host of its own with no drivers, and definitions `staged` and `other`: the pipeline
/// routes need no driver.
async fn plain() -> Fixture {
    let fixture = Fixture::start(&[], "");
    fixture
        .host
        .define("staged", json!({"type": "object"}))
        .await;
    fixture
        .host
        .define("other", json!({"type": "object"}))
        .await;
    fixture
}

// ---- pipeline routes ----------------------------------------------------------------------

/// A pipeline needs its resource definition.
#[tokio::test]
async fn creating_a_pipeline_needs_its_resource_definition() {
    let fixture = Fixture::start(&[], "");
    let host = &fixture.host;
    let (status, body) = host
        .post(
            "/pipelines",
            &pipeline("build", &["step-a", "step-b", "step-c"]),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().expect("an error").contains("staged"),
        "{body}"
    );
}

/// A pipeline is created with its steps and read back.
#[tokio::test]
async fn a_pipeline_is_created_and_read_back_with_its_steps() {
    let fixture = plain().await;
    let host = &fixture.host;
    let (status, body) = host
        .post(
            "/pipelines",
            &pipeline("build", &["step-a", "step-b", "step-c"]),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["steps"][1]["driver"], "step-b");
    let (status, body) = host.get("/pipelines/build").await;
    assert_eq!(
        (status, body["steps"].as_array().expect("its steps").len()),
        (200, 3)
    );
}

/// A second pipeline of the same name: 409.
#[tokio::test]
async fn a_duplicate_pipeline_is_409() {
    let fixture = plain().await;
    let host = &fixture.host;
    create_pipeline(host, &pipeline("build", &["step-a", "step-b", "step-c"])).await;
    let (status, body) = host
        .post("/pipelines", &pipeline("build", &["step-a"]))
        .await;
    assert_eq!(status, 409, "{body}");
}

/// An unknown pipeline: 404 with an error.
#[tokio::test]
async fn an_unknown_pipeline_is_404() {
    let fixture = plain().await;
    let host = &fixture.host;
    let (status, body) = host.get("/pipelines/nope").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_string());
}

/// A pipeline may list a driver twice.
#[tokio::test]
async fn a_pipeline_may_list_a_driver_twice() {
    let fixture = plain().await;
    let host = &fixture.host;
    let (status, body) = host
        .post(
            "/pipelines",
            &pipeline("twice", &["step-a", "step-b", "step-a"]),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// A pipeline may name a driver that is not loaded (it may be dropped in later).
#[tokio::test]
async fn a_pipeline_may_name_a_driver_that_is_not_loaded() {
    let fixture = plain().await;
    let host = &fixture.host;
    let (status, _) = host
        .post("/pipelines", &pipeline("ghostly", &["step-a", "ghost"]))
        .await;
    assert_eq!(status, 201);
}

/// `GET /pipelines` lists them by name.
#[tokio::test]
async fn pipelines_are_listed_by_name() {
    let fixture = plain().await;
    let host = &fixture.host;
    create_pipeline(host, &pipeline("build", &["step-a", "step-b", "step-c"])).await;
    create_pipeline(host, &pipeline("twice", &["step-a", "step-b", "step-a"])).await;
    create_pipeline(host, &pipeline("ghostly", &["step-a", "ghost"])).await;
    let mut elsewhere = pipeline("elsewhere", &["step-a"]);
    elsewhere["resource"] = json!("other");
    assert_eq!(host.post("/pipelines", &elsewhere).await.0, 201);
    let (status, list) = host.get("/pipelines").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["build", "elsewhere", "ghostly", "twice"]);
}

/// A resource naming a missing pipeline is refused.
#[tokio::test]
async fn a_resource_naming_a_missing_pipeline_is_404() {
    let fixture = plain().await;
    let host = &fixture.host;
    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "x", "resource": "staged", "pipeline": "missing", "spec": {}}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

/// A resource on a pipeline for another type is refused.
#[tokio::test]
async fn a_resource_on_a_pipeline_for_another_type_is_400() {
    let fixture = plain().await;
    let host = &fixture.host;
    let mut elsewhere = pipeline("elsewhere", &["step-a"]);
    elsewhere["resource"] = json!("other");
    assert_eq!(host.post("/pipelines", &elsewhere).await.0, 201);
    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "x", "resource": "staged", "pipeline": "elsewhere", "spec": {}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "Resource type staged does not match pipeline resource type other"
    );
}

/// PUT replaces the steps (not the name).
#[tokio::test]
async fn put_replaces_a_pipelines_steps() {
    let fixture = plain().await;
    let host = &fixture.host;
    create_pipeline(host, &pipeline("build", &["step-a", "step-b", "step-c"])).await;
    let (status, body) = host
        .put("/pipelines/build", &pipeline("other-name", &["step-c"]))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = host
        .put("/pipelines/build", &pipeline("build", &["step-c"]))
        .await;
    assert_eq!(
        (status, body["steps"].as_array().expect("its steps").len()),
        (200, 1)
    );
    let (status, _) = host.get("/runs?pipeline=build&status=succeeded").await;
    assert_eq!(status, 200);
}

/// DELETE removes a pipeline.
#[tokio::test]
async fn delete_removes_a_pipeline() {
    let fixture = plain().await;
    let host = &fixture.host;
    create_pipeline(host, &pipeline("build", &["step-a", "step-b", "step-c"])).await;
    let (status, _) = host.delete("/pipelines/build").await;
    assert_eq!(status, 204);
    assert_eq!(host.get("/pipelines/build").await.0, 404);
}

/// Listing runs by a status that does not exist: 400.
#[tokio::test]
async fn listing_runs_by_an_unknown_status_is_400() {
    let fixture = plain().await;
    let host = &fixture.host;
    let (status, body) = host.get("/runs?status=sideways").await;
    assert_eq!(status, 400, "{body}");
}

/// An unknown run: 404.
#[tokio::test]
async fn an_unknown_run_is_404() {
    let fixture = plain().await;
    let host = &fixture.host;
    assert_eq!(host.get("/runs/no-such-run").await.0, 404);
}

// ---- pipeline runs --------------------------------------------------------------------------

/// Starts a host with the three step drivers, a 300 ms wait for a missing driver, the
/// definitions `staged` and `other`, and the pipelines `build` (step-a, step-b, step-c),
/// `twice` (step-a, step-b, step-a) and `ghostly` (step-a, ghost).
async fn start_steps_host() -> Fixture {
    let fixture = Fixture::start(
        &["step-a", "step-b", "step-c"],
        "[runs]\nmissing_driver_wait = \"300ms\"\n",
    );
    let host = &fixture.host;
    host.define("staged", json!({"type": "object"})).await;
    host.define("other", json!({"type": "object"})).await;
    create_pipeline(host, &pipeline("build", &["step-a", "step-b", "step-c"])).await;
    create_pipeline(host, &pipeline("twice", &["step-a", "step-b", "step-a"])).await;
    create_pipeline(host, &pipeline("ghostly", &["step-a", "ghost"])).await;
    fixture
}

/// The module's host for pipeline runs (see [`start_steps_host`]); each test runs resources
/// of its own.
async fn steps_host() -> &'static Host {
    static HOST: OnceCell<Fixture> = OnceCell::const_new();
    &HOST.get_or_init(start_steps_host).await.host
}

/// A mid-pipeline `process` event waiting for its driver is not coalesced away by a newer
/// change to the same resource: the first run still ends with all three steps, and the newer
/// run runs too.
#[tokio::test]
async fn a_waiting_process_event_survives_coalescing() {
    let host = steps_host().await;
    let first = create_piped(host, "mid", "twice", json!({"sleep_ms": 1000})).await;
    host.wait_for_run(&first, "/steps/0/status", "running")
        .await;
    // Holds step-a for 4 s, so that the first run's step 3 (step-a again) has to wait.
    let blocker = create_piped(host, "blocker", "build", json!({"sleep_ms": 4000})).await;
    host.wait_for_run(&first, "/steps/2/status", "queued").await;
    let response = reqwest::Client::new()
        .put(host.at("/resources/staged/mid"))
        .json(&json!({"spec": {"sleep_ms": 0}}))
        .send()
        .await
        .expect("PUT the resource");
    assert_eq!(response.status(), 200);
    let newer = run_id_of(&response);
    let r = host.finished_run(&first, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["steps"][2]["result"]["data"]["event"], "process", "{r}");
    let n = host.finished_run(&newer, Duration::from_secs(60)).await;
    assert_eq!(n["status"], "succeeded", "{n}");
    host.finished_run(&blocker, Duration::from_secs(60)).await;
}

/// A run keeps the steps it started with when its pipeline is replaced meanwhile.
#[tokio::test]
async fn a_pipeline_change_keeps_the_steps_of_a_run_already_started() {
    let host = steps_host().await;
    create_pipeline(host, &pipeline("changing", &["step-a", "step-b", "step-c"])).await;
    let run = create_piped(host, "changes", "changing", json!({"sleep_ms": 500})).await;
    host.wait_for_run(&run, "/steps/0/status", "running").await;
    let (status, body) = host
        .put("/pipelines/changing", &pipeline("changing", &["step-c"]))
        .await;
    assert_eq!(status, 200, "{body}");
    let r = host.finished_run(&run, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let drivers: Vec<&str> = r["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["driver"].as_str().expect("a driver"))
        .collect();
    assert_eq!(drivers, ["step-a", "step-b", "step-c"], "{r}");
}

/// A change to a resource whose pipeline was deleted fails its run, saying so.
#[tokio::test]
async fn a_change_to_a_resource_whose_pipeline_is_gone_fails() {
    let host = steps_host().await;
    create_pipeline(host, &pipeline("doomed", &["step-a"])).await;
    let first = create_piped(host, "orphan", "doomed", json!({})).await;
    let r = host.finished_run(&first, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(host.delete("/pipelines/doomed").await.0, 204);
    let response = reqwest::Client::new()
        .put(host.at("/resources/staged/orphan"))
        .json(&json!({"spec": {}}))
        .send()
        .await
        .expect("PUT the resource");
    assert_eq!(response.status(), 200);
    let run = run_id_of(&response);
    let r = host.finished_run(&run, Duration::from_secs(30)).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["message"], "pipeline doomed not found", "{r}");
}

/// Three steps, in order, under one run id: `create` then `process`, each finished before the
/// next started.
#[tokio::test]
async fn pipeline_steps_run_in_order_under_one_run() {
    let host = steps_host().await;
    let run = create_piped(host, "app", "build", json!({"sleep_ms": 300})).await;
    let r = host.finished_run(&run, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["pipeline"], "build");
    let steps = r["steps"].as_array().expect("steps");
    let events: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| {
            (
                s["driver"].as_str().expect("a driver"),
                s["result"]["data"]["event"].as_str().expect("an event"),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("step-a", "create"),
            ("step-b", "process"),
            ("step-c", "process")
        ]
    );
    for s in steps {
        assert_eq!(s["status"], "succeeded", "{s}");
        assert_eq!(s["attempts"], 1, "{s}");
        assert_eq!(s["result"]["run_id"], run.as_str());
        assert!(s["started_at"].is_string() && s["finished_at"].is_string());
    }
    // Each step finished before the next started.
    for pair in steps.windows(2) {
        assert!(
            pair[0]["finished_at"].as_str() <= pair[1]["started_at"].as_str(),
            "{pair:?}"
        );
    }
}

/// A later step's payload carries the earlier steps' results.
#[tokio::test]
async fn later_steps_see_earlier_results() {
    let host = steps_host().await;
    let run = create_piped(host, "seeing", "build", json!({})).await;
    let r = host.finished_run(&run, Duration::from_secs(60)).await;
    let steps = r["steps"].as_array().expect("steps");
    let seen_by_b = &steps[1]["result"]["data"]["seen"];
    assert_eq!(seen_by_b["step-a"]["success"], true, "{seen_by_b}");
    assert_eq!(
        seen_by_b["step-a"]["data"]["event"], "create",
        "{seen_by_b}"
    );
    let seen_by_c = &steps[2]["result"]["data"]["seen"];
    assert!(
        seen_by_c["step-a"].is_object() && seen_by_c["step-b"].is_object(),
        "{seen_by_c}"
    );
}

/// The pipeline's SSE stream carries every step's lines and ends with the run.
#[tokio::test]
async fn pipeline_sse_stream_follows_the_run_and_ends_with_it() {
    let host = steps_host().await;
    let run = create_piped(host, "streamed", "build", json!({"sleep_ms": 300})).await;
    let sse = reqwest::get(host.at(&format!("/logs/pipeline/{run}")))
        .await
        .expect("sse");
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let (lines, end) = Sse::new(sse).until_end().await;
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().expect("a message"))
        .collect();
    assert_eq!(
        messages,
        [
            "step-a handling create",
            "step-b handling process",
            "step-c handling process"
        ]
    );
    assert_eq!(end["event"], "end");
    assert_eq!(
        (end["runid"].as_str(), end["status"].as_str()),
        (Some(run.as_str()), Some("succeeded"))
    );
}

/// The pipeline's WebSocket stream carries every step's lines, then the end of the run, then
/// closes.
#[tokio::test]
async fn pipeline_websocket_stream_follows_the_run_and_ends_with_it() {
    let host = steps_host().await;
    let run = create_piped(host, "socketed", "build", json!({"sleep_ms": 300})).await;
    let ws_messages = Ws::connect(&host.ws_at(&format!("/logs/pipeline/{run}")))
        .await
        .until_close()
        .await;
    assert_eq!(ws_messages.len(), 4, "{ws_messages:?}");
    assert_eq!(ws_messages[2]["driver"], "step-c");
    assert_eq!(ws_messages[3]["event"], "end");
    assert_eq!(ws_messages[3]["status"], "succeeded");
}

/// A stream of a run that is already over replays and ends at once (the one-driver stream).
#[tokio::test]
async fn a_stream_of_a_finished_run_replays_and_ends() {
    let host = steps_host().await;
    let run = create_piped(host, "replayed", "build", json!({})).await;
    host.finished_run(&run, Duration::from_secs(60)).await;
    let (lines, end) = Sse::get(&host.at(&format!("/logs/streams/step-b/{run}")))
        .await
        .until_end()
        .await;
    assert_eq!(lines.len(), 1);
    assert_eq!(end["status"], "succeeded");
}

/// A failing step 2 stops the run with its message; step 3 never runs.
#[tokio::test]
async fn a_failing_step_stops_the_run() {
    let host = steps_host().await;
    let run = create_piped(host, "broken", "build", json!({"fail": "step-b"})).await;
    let r = host.finished_run(&run, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["message"]
            .as_str()
            .expect("a message")
            .contains("step-b failed on purpose"),
        "{r}"
    );
    let statuses: Vec<&str> = r["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["status"].as_str().expect("a status"))
        .collect();
    assert_eq!(statuses, ["succeeded", "failed", "skipped"]);
    assert!(r["steps"][2]["result"].is_null(), "{r}");
    assert_eq!(r["results"].as_array().expect("results").len(), 2);
    let drivers: Vec<String> = host
        .logs(&run)
        .await
        .iter()
        .map(|l| l["driver"].as_str().expect("a driver").to_string())
        .collect();
    assert_eq!(drivers, ["step-a", "step-b"]);
}

/// A driver listed twice runs twice and the run ends (upstream loops for ever).
#[tokio::test]
async fn a_driver_listed_twice_runs_twice_and_the_run_ends() {
    // A host of its own, so that "quiet" below is this run's alone.
    let fixture = start_steps_host().await;
    let host = &fixture.host;
    let run = create_piped(host, "again", "twice", json!({})).await;
    let r = host.finished_run(&run, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let steps = r["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[2]["result"]["data"]["event"], "process");
    assert_eq!(
        steps[2]["result"]["data"]["seen"]["step-b"]["success"],
        true
    );
    host.quiet(Duration::from_secs(60)).await;
    assert_eq!(host.logs(&run).await.len(), 3, "no step runs again");
}

/// A step whose driver is not loaded fails the run after the configured wait.
#[tokio::test]
async fn a_step_whose_driver_is_not_loaded_fails_the_run() {
    let host = steps_host().await;
    let run = create_piped(host, "haunted", "ghostly", json!({})).await;
    let r = host.finished_run(&run, Duration::from_secs(30)).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["steps"][1]["status"], "failed");
    assert!(
        r["message"]
            .as_str()
            .expect("a message")
            .contains("driver ghost is not loaded"),
        "{r}"
    );
}

/// Runs are listed by pipeline and status, and by resource (a host of its own, so that the
/// counts are its runs' alone).
#[tokio::test]
async fn runs_are_listed_by_pipeline_status_and_resource() {
    let fixture = start_steps_host().await;
    let host = &fixture.host;
    let app = create_piped(host, "app", "build", json!({})).await;
    let broken = create_piped(host, "broken", "build", json!({"fail": "step-b"})).await;
    for run in [&app, &broken] {
        host.finished_run(run, Duration::from_secs(60)).await;
    }
    let (status, runs) = host.get("/runs?pipeline=build&status=failed").await;
    assert_eq!(status, 200);
    assert_eq!(runs.as_array().expect("a list").len(), 1, "{runs}");
    assert_eq!(runs[0]["resource_name"], "broken");
    let (_, runs) = host.get("/runs?resource=app").await;
    assert_eq!(runs.as_array().expect("a list").len(), 1);
}

// ---- retries, coalescing, metrics ---------------------------------------------------------

const RETRY_CONFIG: &str = "[defaults]\nmax_attempts = 3\nbackoff = \"100ms\"\n";

/// The module's host for the test driver: three attempts, 100 ms backoff, concurrency 1.
async fn retry_host() -> &'static Host {
    static HOST: OnceCell<Fixture> = OnceCell::const_new();
    let fixture = HOST
        .get_or_init(|| async {
            let fixture = Fixture::start(&["test-driver"], RETRY_CONFIG);
            fixture.host.define("test", json!({"type": "object"})).await;
            fixture
        })
        .await;
    &fixture.host
}

/// A driver that fails transiently twice and then succeeds, as a finished run.
async fn flaky_run(host: &Host) -> Value {
    let run = host
        .create("test", "flaky", json!({"action": "flaky", "succeed_on": 3}))
        .await;
    host.finished_run(&run, Duration::from_secs(60)).await
}

/// A driver that never succeeds, as a finished run.
async fn hopeless_run(host: &Host) -> Value {
    let run = host
        .create(
            "test",
            "hopeless",
            json!({"action": "flaky", "succeed_on": 99}),
        )
        .await;
    host.finished_run(&run, Duration::from_secs(60)).await
}

/// Retried with backoff, the run succeeds with attempts = 3.
#[tokio::test]
async fn a_retried_run_succeeds_on_its_third_attempt_after_backoff() {
    let r = flaky_run(retry_host().await).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["pipeline"], Value::Null);
    let step = &r["steps"][0];
    assert_eq!(
        (step["driver"].as_str(), step["attempts"].as_u64()),
        (Some("test-driver"), Some(3)),
        "{r}"
    );
    assert_eq!(step["result"]["attempts"], 3);
    // Backoff: 100ms then 200ms between the three attempts.
    let started = parse_time(&step["started_at"]);
    let finished = parse_time(&step["finished_at"]);
    assert!(
        finished - started >= time::Duration::milliseconds(300),
        "{r}"
    );
}

/// One that never succeeds fails the run with the reason.
#[tokio::test]
async fn a_run_that_never_succeeds_fails_after_max_attempts() {
    let r = hopeless_run(retry_host().await).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["message"]
            .as_str()
            .expect("a message")
            .contains("gave up after 3 attempts"),
        "{r}"
    );
    assert_eq!(r["steps"][0]["attempts"], 3);
}

/// After those two runs, `GET /metrics` shows every series (a host of its own, so that the
/// counts are these runs' alone).
#[tokio::test]
async fn metrics_count_reconciles_retries_runs_and_log_lines() {
    let fixture = Fixture::start(&["test-driver"], RETRY_CONFIG);
    let host = &fixture.host;
    host.define("test", json!({"type": "object"})).await;
    flaky_run(host).await;
    hopeless_run(host).await;

    let (content_type, text) = host.metrics().await;
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    for series in [
        "conveyor_reconciles_total{driver=\"test-driver\",outcome=\"success\"} 1",
        "conveyor_reconciles_total{driver=\"test-driver\",outcome=\"retry\"} 5",
        "conveyor_retries_total{driver=\"test-driver\"} 4",
        "conveyor_reconcile_duration_seconds_count{driver=\"test-driver\"} 6",
        "conveyor_instantiate_duration_seconds_count{driver=\"test-driver\"} 6",
        "conveyor_reconciles_in_flight{driver=\"test-driver\"} 0",
        "conveyor_runs_in_flight 0",
        "conveyor_runs{status=\"succeeded\"} 1",
        "conveyor_runs{status=\"failed\"} 1",
        "conveyor_log_lines_total{driver=\"test-driver\"} 5",
        "conveyor_queue_depth{driver=\"test-driver\",state=\"waiting\"} 0",
    ] {
        assert!(text.contains(series), "missing {series:?} in:\n{text}");
    }
}

/// Pending duplicates for the same driver and resource collapse into the newest; an event
/// already in flight is not touched.
#[tokio::test]
async fn pending_duplicates_coalesce() {
    let host = retry_host().await;
    let slow = host
        .create("test", "slow", json!({"action": "sleep", "ms": 1500}))
        .await;
    // Let the slow event start, so the next ones queue behind it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while host.get(&format!("/runs/{slow}")).await.1["status"] != "running" {
        assert!(Instant::now() < deadline, "the slow run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = host
        .create("test", "target", json!({"action": "ok", "lines": 1}))
        .await;
    let mut updates = Vec::new();
    for lines in [2, 3] {
        let resp = reqwest::Client::new()
            .put(host.at("/resources/test/target"))
            .json(&json!({"spec": {"action": "ok", "lines": lines}}))
            .send()
            .await
            .expect("PUT the resource");
        assert_eq!(resp.status(), 200);
        updates.push(run_id_of(&resp));
    }
    for superseded in [&first, &updates[0]] {
        let r = host.finished_run(superseded, Duration::from_secs(30)).await;
        assert_eq!(r["status"], "superseded", "{r}");
        assert_eq!(r["steps"][0]["status"], "superseded");
    }
    let newest = host
        .finished_run(&updates[1], Duration::from_secs(30))
        .await;
    assert_eq!(newest["status"], "succeeded", "{newest}");
    // The driver never saw the resource's create, so the newest state comes as `create`.
    assert_eq!(newest["steps"][0]["result"]["data"]["event"], "create");
    assert_eq!(newest["steps"][0]["result"]["data"]["version"], "3");
    assert_eq!(
        host.finished_run(&slow, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
}

// ---- a SIGKILL: the binary --------------------------------------------------------------

/// SIGKILL with 500 events queued or in flight: after a restart every run completes, none is
/// lost, each has exactly one result, and only the runs that were in flight ran twice.
#[tokio::test]
async fn five_hundred_events_survive_a_sigkill() {
    const EVENTS: usize = 500;
    const CONCURRENCY: usize = 4;
    let dir = workdir(&["test-driver"]);
    let config = format!("[defaults]\nconcurrency = {CONCURRENCY}\n");
    let mut host = spawn(dir.path(), &config);
    host.define("test", json!({"type": "object"})).await;

    let client = reqwest::Client::new();
    let creates = futures::stream::iter(0..EVENTS)
        .map(|i| {
            let client = client.clone();
            let url = host.at("/resources");
            async move {
                let resp = client
                    .post(url)
                    .json(&json!({"name": format!("r{i}"), "resource": "test",
                                  "spec": {"action": "sleep", "ms": 60}}))
                    .send()
                    .await
                    .expect("create");
                assert_eq!(resp.status(), 201);
                let body: Value = resp.json().await.expect("a JSON body");
                body["runid"].as_str().expect("runid").to_string()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<String>>()
        .await;
    let (_, before) = host.get("/runs?status=succeeded&limit=1000").await;
    let done_before = before.as_array().expect("a list").len();
    host.kill();
    let killed_at = time::OffsetDateTime::now_utc();
    assert!(
        done_before < EVENTS,
        "the kill must leave work queued ({done_before} of {EVENTS} already done)"
    );

    let host = spawn(dir.path(), &config);
    let deadline = Instant::now() + Duration::from_secs(120);
    let runs = loop {
        let (_, runs) = host.get("/runs?limit=1000").await;
        let runs = runs.as_array().cloned().unwrap_or_default();
        let over = runs
            .iter()
            .filter(|r| !matches!(r["status"].as_str(), Some("queued" | "running")))
            .count();
        if over == EVENTS {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "{over} of {EVENTS} runs over after 120s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let by_id: HashMap<&str, &Value> = runs
        .iter()
        .map(|r| (r["runid"].as_str().expect("runid"), r))
        .collect();
    let mut ran_twice = 0;
    for id in &creates {
        let r = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("run {id} lost"));
        assert_eq!(r["status"], "succeeded", "{r}");
        let results = r["results"].as_array().expect("results");
        assert_eq!(results.len(), 1, "exactly one result per run: {r}");
        let attempts = results[0]["attempts"].as_u64().expect("attempts");
        assert_eq!(
            results[0]["data"]["attempt"].as_u64(),
            Some(attempts),
            "{r}"
        );
        if attempts > 1 {
            assert_eq!(attempts, 2, "{r}");
            // Its first attempt started before the kill and had not finished (there is one
            // result): it was in flight.
            let first_start = parse_time(&r["steps"][0]["started_at"]);
            assert!(first_start < killed_at, "{r}");
            ran_twice += 1;
        }
    }
    assert!(
        ran_twice <= CONCURRENCY,
        "{ran_twice} runs ran twice, but at most {CONCURRENCY} were in flight"
    );
    let (_, metrics) = host.metrics().await;
    for state in ["waiting", "delivering"] {
        let series = format!("conveyor_queue_depth{{driver=\"test-driver\",state=\"{state}\"}} 0");
        assert!(metrics.contains(&series), "the queue is empty:\n{metrics}");
    }
}
