//! End-to-end tests of the embedded control plane: pipelines, runs, retries, coalescing,
//! durability across a SIGKILL, and metrics. The real host binary, real drivers built for
//! wasm32-wasip2, over HTTP, WebSocket and SSE.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Host, workdir};
use futures::StreamExt;
use serde_json::{Value, json};

/// Waits until the run is over and returns it.
async fn finished_run(host: &Host, run: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = host.get(&format!("/runs/{run}")).await;
        if status == 200 && !matches!(body["status"].as_str(), Some("queued" | "running")) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} not over after {within:?}: {body}\nhost log:\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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

/// Reads SSE frames until an `end` event: the data lines before it, and the end's data.
async fn read_sse_until_end(response: reqwest::Response) -> (Vec<Value>, Value) {
    let mut body = response.bytes_stream();
    let mut buf = String::new();
    let mut lines = Vec::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("an SSE chunk within 30s")
            .expect("the stream ends only after the end frame")
            .expect("ok");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut event = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_string());
                }
                if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(d).unwrap());
                }
            }
            match (event.as_deref(), data) {
                (Some("end"), Some(d)) => return (lines, d),
                (_, Some(d)) => lines.push(d),
                _ => {}
            }
        }
    }
}

/// Reads WebSocket messages until the close frame: the messages before it.
async fn read_ws_until_close(url: String) -> Vec<Value> {
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    let mut out = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a websocket message within 30s");
        match msg {
            Some(Ok(Message::Text(t))) => out.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(_))) | None => return out,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("websocket error: {e}"),
        }
    }
}

/// Pipelines: the CRUD routes, steps in order under one run id with `create` then
/// `process`, earlier results in later payloads, the failure path, a driver listed twice,
/// a driver that is not loaded, and the pipeline log stream with its end-of-run message.
#[tokio::test]
async fn pipelines_run_steps_in_order_and_stop_at_a_failure() {
    let dir = workdir(&["step-a", "step-b", "step-c"]);
    let host = Host::start(dir.path(), "[runs]\nmissing_driver_wait = \"300ms\"\n");

    // A pipeline needs its resource definition.
    let (status, body) = host
        .post(
            "/pipelines",
            &pipeline("build", &["step-a", "step-b", "step-c"]),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("staged"), "{body}");
    host.define("staged", json!({"type": "object"})).await;
    host.define("other", json!({"type": "object"})).await;

    let (status, body) = host
        .post(
            "/pipelines",
            &pipeline("build", &["step-a", "step-b", "step-c"]),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["steps"][1]["driver"], "step-b");
    let (status, body) = host
        .post("/pipelines", &pipeline("build", &["step-a"]))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = host.get("/pipelines/build").await;
    assert_eq!((status, body["steps"].as_array().unwrap().len()), (200, 3));
    let (status, body) = host.get("/pipelines/nope").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_string());
    let (status, body) = host
        .post(
            "/pipelines",
            &pipeline("twice", &["step-a", "step-b", "step-a"]),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = host
        .post("/pipelines", &pipeline("ghostly", &["step-a", "ghost"]))
        .await;
    assert_eq!(status, 201);
    let mut elsewhere = pipeline("elsewhere", &["step-a"]);
    elsewhere["resource"] = json!("other");
    assert_eq!(host.post("/pipelines", &elsewhere).await.0, 201);
    let (status, list) = host.get("/pipelines").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["build", "elsewhere", "ghostly", "twice"]);

    // A resource naming a missing pipeline, or one for another type, is refused.
    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "x", "resource": "staged", "pipeline": "missing", "spec": {}}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
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

    // Three steps, in order, under one run id; the log streams end with the run.
    let run = create_piped(&host, "app", "build", json!({"sleep_ms": 300})).await;
    let sse = reqwest::get(host.at(&format!("/logs/pipeline/{run}")))
        .await
        .expect("sse");
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let ws = tokio::spawn(read_ws_until_close(format!(
        "{}/logs/pipeline/{run}",
        host.url.replacen("http", "ws", 1)
    )));
    let r = finished_run(&host, &run, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["pipeline"], "build");
    let steps = r["steps"].as_array().unwrap();
    let events: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| {
            (
                s["driver"].as_str().unwrap(),
                s["result"]["data"]["event"].as_str().unwrap(),
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

    let (lines, end) = read_sse_until_end(sse).await;
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
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
    let ws_messages = ws.await.unwrap();
    assert_eq!(ws_messages.len(), 4, "{ws_messages:?}");
    assert_eq!(ws_messages[2]["driver"], "step-c");
    assert_eq!(ws_messages[3]["event"], "end");
    assert_eq!(ws_messages[3]["status"], "succeeded");
    // A stream of a run that is already over replays and ends at once; so does the
    // one-driver stream.
    let sse = reqwest::get(host.at(&format!("/logs/streams/step-b/{run}")))
        .await
        .expect("sse");
    let (lines, end) = read_sse_until_end(sse).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(end["status"], "succeeded");

    // A failing step 2 stops the run with its message; step 3 never runs.
    let run = create_piped(&host, "broken", "build", json!({"fail": "step-b"})).await;
    let r = finished_run(&host, &run, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("step-b failed on purpose"),
        "{r}"
    );
    let statuses: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "failed", "skipped"]);
    assert!(r["steps"][2]["result"].is_null(), "{r}");
    assert_eq!(r["results"].as_array().unwrap().len(), 2);
    let drivers: Vec<String> = host
        .logs(&run)
        .await
        .iter()
        .map(|l| l["driver"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(drivers, ["step-a", "step-b"]);

    // A driver listed twice runs twice and the run ends (upstream loops for ever).
    let run = create_piped(&host, "again", "twice", json!({})).await;
    let r = finished_run(&host, &run, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[2]["result"]["data"]["event"], "process");
    assert_eq!(
        steps[2]["result"]["data"]["seen"]["step-b"]["success"],
        true
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(host.logs(&run).await.len(), 3, "no step runs again");

    // A step whose driver is not loaded fails the run after the configured wait.
    let run = create_piped(&host, "haunted", "ghostly", json!({})).await;
    let r = finished_run(&host, &run, Duration::from_secs(30)).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["steps"][1]["status"], "failed");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("driver ghost is not loaded"),
        "{r}"
    );

    // Listing runs by resource, pipeline and status.
    let (status, runs) = host.get("/runs?pipeline=build&status=failed").await;
    assert_eq!(status, 200);
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["resource_name"], "broken");
    let (_, runs) = host.get("/runs?resource=app").await;
    assert_eq!(runs.as_array().unwrap().len(), 1);
    let (status, body) = host.get("/runs?status=sideways").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(host.get("/runs/no-such-run").await.0, 404);

    // PUT replaces the steps (runs already made keep theirs); DELETE removes.
    let (status, body) = host
        .put("/pipelines/build", &pipeline("other-name", &["step-c"]))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = host
        .put("/pipelines/build", &pipeline("build", &["step-c"]))
        .await;
    assert_eq!((status, body["steps"].as_array().unwrap().len()), (200, 1));
    let (status, _) = host.get("/runs?pipeline=build&status=succeeded").await;
    assert_eq!(status, 200);
    let resp = reqwest::Client::new()
        .delete(host.at("/pipelines/build"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(host.get("/pipelines/build").await.0, 404);
}

/// SIGKILL with 500 events queued or in flight: after a restart every run completes, none is
/// lost, each has exactly one result, and only the runs that were in flight ran twice.
#[tokio::test]
async fn five_hundred_events_survive_a_sigkill() {
    const EVENTS: usize = 500;
    const CONCURRENCY: usize = 4;
    let dir = workdir(&["test-driver"]);
    let config = format!("[defaults]\nconcurrency = {CONCURRENCY}\n");
    let mut host = Host::start(dir.path(), &config);
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
                let body: Value = resp.json().await.unwrap();
                body["runid"].as_str().unwrap().to_string()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<String>>()
        .await;
    let (_, before) = host.get("/runs?status=succeeded&limit=1000").await;
    let done_before = before.as_array().unwrap().len();
    host.kill();
    let killed_at = time::OffsetDateTime::now_utc();
    assert!(
        done_before < EVENTS,
        "the kill must leave work queued ({done_before} of {EVENTS} already done)"
    );

    let host = Host::start(dir.path(), &config);
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
        .map(|r| (r["runid"].as_str().unwrap(), r))
        .collect();
    let mut ran_twice = 0;
    for id in &creates {
        let r = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("run {id} lost"));
        assert_eq!(r["status"], "succeeded", "{r}");
        let results = r["results"].as_array().unwrap();
        assert_eq!(results.len(), 1, "exactly one result per run: {r}");
        let attempts = results[0]["attempts"].as_u64().unwrap();
        assert_eq!(
            results[0]["data"]["attempt"].as_u64(),
            Some(attempts),
            "{r}"
        );
        if attempts > 1 {
            assert_eq!(attempts, 2, "{r}");
            // Its first attempt started before the kill and had not finished (there is one
            // result): it was in flight.
            let first_start = time::OffsetDateTime::parse(
                r["steps"][0]["started_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert!(first_start < killed_at, "{r}");
            ran_twice += 1;
        }
    }
    assert!(
        ran_twice <= CONCURRENCY,
        "{ran_twice} runs ran twice, but at most {CONCURRENCY} were in flight"
    );
    let (_, metrics) = metrics_text(&host).await;
    for state in ["waiting", "delivering"] {
        let series = format!("conveyor_queue_depth{{driver=\"test-driver\",state=\"{state}\"}} 0");
        assert!(metrics.contains(&series), "the queue is empty:\n{metrics}");
    }
}

async fn metrics_text(host: &Host) -> (String, String) {
    let resp = reqwest::get(host.at("/metrics")).await.expect("metrics");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    (content_type, resp.text().await.unwrap())
}

/// A driver that fails transiently twice and then succeeds: retried with backoff, and its
/// run succeeds with attempts = 3; one that never succeeds fails the run with the reason.
/// `GET /metrics` then shows every series.
#[tokio::test]
async fn retries_show_in_runs_and_metrics() {
    let dir = workdir(&["test-driver"]);
    let host = Host::start(
        dir.path(),
        "[defaults]\nmax_attempts = 3\nbackoff = \"100ms\"\n",
    );
    host.define("test", json!({"type": "object"})).await;
    let run = host
        .create("test", "flaky", json!({"action": "flaky", "succeed_on": 3}))
        .await;
    let r = finished_run(&host, &run, Duration::from_secs(60)).await;
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
    let started = time::OffsetDateTime::parse(
        step["started_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let finished = time::OffsetDateTime::parse(
        step["finished_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        finished - started >= time::Duration::milliseconds(300),
        "{r}"
    );

    let run = host
        .create(
            "test",
            "hopeless",
            json!({"action": "flaky", "succeed_on": 99}),
        )
        .await;
    let r = finished_run(&host, &run, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{r}"
    );
    assert_eq!(r["steps"][0]["attempts"], 3);

    let (content_type, text) = metrics_text(&host).await;
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
    let dir = workdir(&["test-driver"]);
    let host = Host::start(dir.path(), "[defaults]\nconcurrency = 1\n");
    host.define("test", json!({"type": "object"})).await;
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
            .unwrap();
        assert_eq!(resp.status(), 200);
        updates.push(
            resp.headers()["x-conveyor-run-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    for superseded in [&first, &updates[0]] {
        let r = finished_run(&host, superseded, Duration::from_secs(30)).await;
        assert_eq!(r["status"], "superseded", "{r}");
        assert_eq!(r["steps"][0]["status"], "superseded");
    }
    let newest = finished_run(&host, &updates[1], Duration::from_secs(30)).await;
    assert_eq!(newest["status"], "succeeded", "{newest}");
    // The driver never saw the resource's create, so the newest state comes as `create`.
    assert_eq!(newest["steps"][0]["result"]["data"]["event"], "create");
    assert_eq!(newest["steps"][0]["result"]["data"]["version"], "3");
    assert_eq!(
        finished_run(&host, &slow, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
}
