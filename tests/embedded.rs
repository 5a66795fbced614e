//! End-to-end tests of embedded mode: the real host binary, real drivers built for
//! wasm32-wasip2, a real SQLite file, over HTTP, WebSocket and SSE.

mod common;

use std::time::Duration;

use common::{Host, driver_wasm, run_cli, workdir};
use futures::StreamExt;
use serde_json::{Value, json};

const SAMPLE_SCHEMA: &str = r#"{"type":"object","properties":{"delay_ms":{"type":"integer"}}}"#;

fn sample_schema() -> Value {
    serde_json::from_str(SAMPLE_SCHEMA).unwrap()
}

/// The sample driver's five lines, read through `GET /logs`, the WebSocket stream and SSE,
/// and its stored result.
#[tokio::test]
async fn sample_driver_reconciles_with_logs_over_http_websocket_and_sse() {
    let dir = workdir(&["sample-driver"]);
    let host = Host::start(dir.path(), "");
    host.define("resource-1", sample_schema()).await;

    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "app", "resource": "resource-1", "spec": {"delay_ms": 300}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"], "Resource created successfully");
    assert_eq!(body["name"], "app");
    assert_eq!(body["version"], "1");
    let run = body["runid"].as_str().unwrap().to_string();
    assert!(uuid_like(&run), "{run}");

    // Both streams attach while the driver is mid-run: they must replay what is stored and
    // then follow live, with no gap and no duplicate.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ws_url = format!(
        "{}/logs/streams/sample-driver/{run}",
        host.url.replacen("http", "ws", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("websocket");
    let sse = reqwest::get(host.at(&format!("/logs/streams/sample-driver/{run}")))
        .await
        .expect("sse");
    assert_eq!(sse.headers()["content-type"], "text/event-stream");

    let mut ws_lines = Vec::new();
    while ws_lines.len() < 5 {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a websocket line within 30s")
            .expect("open")
            .expect("ok");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            ws_lines.push(serde_json::from_str::<Value>(&t).unwrap());
        }
    }
    let sse_lines = read_sse(sse, 5).await;

    let result = host.result(&run).await;
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["message"], "Sample Driver Reconciled Successfully");
    assert_eq!(result["driver"], "sample-driver");
    assert_eq!(result["attempts"], 1);

    let stored = host.logs(&run).await;
    for lines in [&stored, &ws_lines, &sse_lines] {
        let steps: Vec<&str> = lines.iter().map(|l| l["step"].as_str().unwrap()).collect();
        assert_eq!(steps, ["1", "2", "3", "4", "5"], "{lines:?}");
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(
                l["message"],
                format!("Sample Driver Working... {}/5", i + 1)
            );
            assert_eq!(l["runid"], run.as_str());
            assert_eq!(l["driver"], "sample-driver");
            assert!(
                l["timestamp"].as_str().unwrap().contains('.'),
                "sub-second: {l}"
            );
        }
    }

    // The result is also on the resource, where Conveyor's engine keeps it.
    let (_, res) = host.get("/resources/resource-1/app").await;
    let stored: Value = serde_json::from_str(
        res["metadata"]["driverresults.sample-driver"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored["success"], true);
    assert_eq!(res["metadata"]["version"], "1");
}

async fn read_sse(response: reqwest::Response, n: usize) -> Vec<Value> {
    let mut body = response.bytes_stream();
    let mut buf = String::new();
    let mut lines = Vec::new();
    while lines.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("an SSE chunk within 30s")
            .expect("open")
            .expect("ok");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    lines.push(serde_json::from_str(data).unwrap());
                }
            }
        }
    }
    lines
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

/// Bad requests get 4xx with `{"error": ...}`, never a panic or a plain-text body.
#[tokio::test]
async fn bad_requests_get_clear_json_errors() {
    let dir = workdir(&["test-driver"]);
    let host = Host::start(dir.path(), "");
    host.define(
        "pipe",
        json!({"type": "object", "properties": {"image": {"type": "string"}}, "required": ["steps"]}),
    )
    .await;

    // A spec that fails the schema: 400 naming the failure.
    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "x", "resource": "pipe", "spec": {"image": "a"}}),
        )
        .await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("Resource validation failed:"), "{error}");
    assert!(error.contains("steps"), "{error}");

    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "y", "resource": "pipe", "spec": {"image": 5, "steps": []}}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("/image"), "{body}");

    // A missing definition: 404 (upstream answers 500).
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

    // Malformed JSON, and JSON without its content type: 400.
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
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("Invalid request payload"),
            "{body}"
        );
    }

    // No type; duplicate; unknown resource; unknown route.
    let (status, body) = host
        .post("/resources", &json!({"name": "x", "spec": {}}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("Resource type is required"))
    );
    host.create("pipe", "one", json!({"steps": []})).await;
    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "one", "resource": "pipe", "spec": {"steps": []}}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("already exists"));
    let (status, body) = host.get("/resources/pipe/ghost").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("ghost"));
    let (status, body) = host.get("/no/such/route").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("Cannot GET /no/such/route"))
    );
    let (status, body) = host.get("/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("healthy")));
}

/// Resource versions, update and delete events, and the definition routes.
#[tokio::test]
async fn updates_and_deletes_send_events_and_keep_versions() {
    let dir = workdir(&["test-driver"]);
    let host = Host::start(dir.path(), "");
    host.define("test", json!({"type": "object"})).await;
    let run = host.create("test", "r", json!({"action": "ok"})).await;
    assert_eq!(host.result(&run).await["data"]["event"], "create");

    let response = reqwest::Client::new()
        .put(host.at("/resources/test/r"))
        .json(&json!({"name": "r", "resource": "test", "spec": {"action": "ok", "lines": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let update_run = response.headers()["x-conveyor-run-id"]
        .to_str()
        .unwrap()
        .to_string();
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["metadata"]["version"], "2");
    let result = host.result(&update_run).await;
    assert_eq!(result["data"]["event"], "update");
    assert_eq!(result["data"]["version"], "2");
    assert_eq!(host.logs(&update_run).await.len(), 2);

    let (status, v1) = host.get("/resources/test/r/1").await;
    assert_eq!((status, v1["spec"]["lines"].clone()), (200, Value::Null));
    let (status, _) = host.get("/resources/test/r/9").await;
    assert_eq!(status, 404);

    let response = reqwest::Client::new()
        .delete(host.at("/resources/test/r"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let delete_run = response.headers()["x-conveyor-run-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(host.result(&delete_run).await["data"]["event"], "delete");
    assert_eq!(host.get("/resources/test/r").await.0, 404);
    assert_eq!(
        host.get("/resources/test/r/2").await.0,
        200,
        "snapshots survive a delete"
    );

    // Definitions: apply keeps the id; PUT replaces; DELETE removes.
    let (_, def) = host.get("/resource-definitions/test").await;
    let (status, applied) = host
        .post(
            "/resource-definitions/apply",
            &json!({"name": "test", "version": "2", "schema": {"type": "object"}}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(applied["id"], def["id"]);
    let (status, _) = host
        .put(
            "/resource-definitions/test",
            &json!({"schema": {"type": "object"}, "version": "3"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        host.get("/resource-definitions/test").await.1["version"],
        "3"
    );
    let status = reqwest::Client::new()
        .delete(host.at("/resource-definitions/test"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    assert_eq!(host.get("/resource-definitions/test").await.0, 404);
}

/// A broken file is reported and skipped; a panic, an endless loop and a memory hog each end
/// with a failed result saying what happened, while the host and a well-behaved driver run on.
#[tokio::test]
async fn broken_and_hostile_drivers_do_not_hurt_the_host() {
    let dir = workdir(&["test-driver", "sample-driver"]);
    std::fs::write(dir.path().join("drivers/broken.wasm"), b"this is not wasm").unwrap();
    std::fs::write(dir.path().join("drivers/core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let host = Host::start(
        dir.path(),
        "[defaults]\ntimeout = \"3s\"\nmemory = \"32MiB\"\nmax_attempts = 1\n",
    );
    let log = host.log();
    assert!(
        log.contains("broken.wasm") && log.contains("not a WebAssembly file"),
        "{log}"
    );
    assert!(
        log.contains("core.wasm") && log.contains("not a component"),
        "{log}"
    );
    let (_, drivers) = host.get("/drivers").await;
    let states: Vec<(String, String)> = drivers
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let id = d["name"].as_str().or(d["file"].as_str()).unwrap();
            (
                id.rsplit('/').next().unwrap().to_string(),
                d["state"].as_str().unwrap().to_string(),
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

    host.define("test", json!({"type": "object"})).await;
    host.define("resource-1", sample_schema()).await;
    let panic = host
        .create(
            "test",
            "panic",
            json!({"action": "panic", "message": "the spec is wrong"}),
        )
        .await;
    let looping = host.create("test", "loop", json!({"action": "loop"})).await;
    let hog = host
        .create("test", "hog", json!({"action": "memory"}))
        .await;

    // While the loop spins, the host answers and another driver completes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    assert_eq!(host.get("/health").await.0, 200);
    let sample = host
        .create("resource-1", "ok", json!({"delay_ms": 0}))
        .await;
    assert_eq!(host.result(&sample).await["success"], true);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the well-behaved driver waited for the loop: {:?}",
        started.elapsed()
    );

    let r = host.result(&panic).await;
    assert_eq!(
        (r["success"].as_bool(), r["failure_kind"].as_str()),
        (Some(false), Some("trap"))
    );
    let message = r["message"].as_str().unwrap();
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

    let r = host.result(&looping).await;
    assert_eq!(r["failure_kind"], "wall-timeout", "{r}");
    let took = duration_between(&r["started_at"], &r["finished_at"]);
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "{took:?}"
    );

    let r = host.result(&hog).await;
    assert_eq!(r["failure_kind"], "memory-exceeded", "{r}");

    assert_eq!(host.get("/health").await.0, 200);
}

fn duration_between(a: &Value, b: &Value) -> Duration {
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    (parse(b) - parse(a)).try_into().unwrap()
}

/// The `client` import reads the host's store; guest stdout and stderr land in the run's log.
#[tokio::test]
async fn drivers_use_the_api_client_and_their_output_is_logged() {
    let dir = workdir(&["test-driver"]);
    let host = Host::start(dir.path(), "");
    host.define("test", json!({"type": "object"})).await;

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
            .unwrap()
            .starts_with("not found"),
        "{r}"
    );

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
/// with backoff between attempts.
#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let dir = workdir(&["test-driver"]);
    let host = Host::start(
        dir.path(),
        "[defaults]\nmax_attempts = 3\nbackoff = \"200ms\"\n",
    );
    host.define("test", json!({"type": "object"})).await;
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
            .unwrap()
            .contains("retrying in 400ms"),
        "{notes:?}"
    );

    // A driver that never succeeds gives up after max_attempts, saying so.
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
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{r}"
    );
}

/// Events accepted before the host was killed are processed after it starts again, and the
/// drivers come from the compile cache the second time.
#[tokio::test]
async fn events_survive_a_crash_and_drivers_load_from_the_cache() {
    let dir = workdir(&["test-driver"]);
    let config = "[defaults]\nconcurrency = 1\n";
    let mut host = Host::start(dir.path(), config);
    let (_, drivers) = host.get("/drivers").await;
    assert_eq!(drivers[0]["loaded_from"], "compiled");
    host.define("test", json!({"type": "object"})).await;

    // One slow event in flight, nine queued behind it (concurrency 1), then SIGKILL.
    let mut runs = vec![
        host.create("test", "slow", json!({"action": "sleep", "ms": 5000}))
            .await,
    ];
    for i in 0..9 {
        runs.push(
            host.create("test", &format!("r{i}"), json!({"action": "ok"}))
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    host.kill();

    let host = Host::start(dir.path(), config);
    let (_, drivers) = host.get("/drivers").await;
    assert_eq!(drivers[0]["loaded_from"], "cache", "{drivers}");
    for run in &runs {
        let results = host.results(run, 1, Duration::from_secs(60)).await;
        assert_eq!(
            results.len(),
            1,
            "each event has exactly one result: {results:?}"
        );
        assert_eq!(results[0]["success"], true, "{results:?}");
    }
    let slow = host.result(&runs[0]).await;
    assert_eq!(
        slow["attempts"], 2,
        "the interrupted run counts its first attempt: {slow}"
    );
}

/// `conveyor-host check` explains what a file is, or why it would not load.
#[test]
fn check_describes_components_and_refuses_the_rest() {
    let (code, out, err) = run_cli(&["check", driver_wasm("sample-driver").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("name:      sample-driver"), "{out}");
    assert!(out.contains("resources: resource-1"), "{out}");
    assert!(out.contains("conveyor:driver/log@0.1.0"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("text.wasm", b"hello".as_slice(), "not a WebAssembly file"),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0".as_slice(),
            "core WebAssembly module",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (code, _, err) = run_cli(&["check", path.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert!(err.contains(name) && err.contains(expected), "{err}");
    }
    let (code, _, err) = run_cli(&["check", "/no/such/file.wasm"]);
    assert_eq!(code, 1);
    assert!(err.contains("/no/such/file.wasm"), "{err}");
}

/// A config mistake stops the host with a message naming the file and the key.
#[test]
fn config_errors_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.toml");
    for (text, key) in [
        (
            "drivers_dir = \".\"\ndata_dir = \"d\"\n[defaults]\ntimeout = \"forever\"\n",
            "timeout",
        ),
        (
            "drivers_dir = \".\"\ndata_dir = \"d\"\n[api]\nlisten = \"nowhere\"\n",
            "listen",
        ),
        (
            "drivers_dir = \".\"\ndata_dir = \"d\"\nworkers = 4\n",
            "workers",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = run_cli(&["run", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("host.toml") && err.contains(key), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
