//! End-to-end tests of NATS mode: the real host binary attached to a real nats-server with
//! Conveyor's three streams, driven by messages shaped exactly as the Go server sends them.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::nats::{Conveyor, NatsServer, resource};
use common::{Host, workdir};
use serde_json::{Value, json};

fn nats_config(server: &NatsServer, extra: &str) -> String {
    format!(
        "[events]\nsource = \"nats\"\nurl = \"{}\"\nack_wait = \"2s\"\n\n{extra}",
        server.url
    )
}

/// Conformance N2 and N4: a DriverMessage on `resources.<type>` is reconciled; its lines go to
/// `logs.<runid>` (types.Log with `runid`) and `live.logs.<runid>.<driver>`; a PipelineEvent
/// goes to `pipelines.driver.result`; and the message is acked only after that.
#[tokio::test]
async fn resource_event_logs_result_and_late_ack() {
    let dir = workdir(&["sample-driver"]);
    let server = NatsServer::start(dir.path());
    let conveyor = Conveyor::connect(&server.url).await;
    let mut live = conveyor.client.subscribe("live.logs.>").await.unwrap();
    let host = Host::start(dir.path(), &nats_config(&server, ""));

    let res = resource("resource-1", "app", json!({"delay_ms": 300}));
    // The consumer is created when the host attaches; wait for it so the message is retained.
    wait_for(|| async { conveyor.ack_pending("sample-driver").await == 0 }).await;
    let run = conveyor
        .publish("resources.resource-1", "create", &res)
        .await;

    // While the driver works, its message is delivered but not acknowledged.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        conveyor.ack_pending("sample-driver").await,
        1,
        "acked before the work was done"
    );

    let results = conveyor.results(1, Duration::from_secs(30)).await;
    assert_eq!(results.len(), 1, "host log:\n{}", host.log());
    let r = &results[0];
    assert_eq!(r["event"], "driver.result");
    assert_eq!(r["run_id"], run.as_str());
    assert_eq!(r["resource"]["name"], "app");
    assert_eq!(r["resource"]["resource"], "resource-1");
    assert_eq!(r["resource"]["id"], res["id"]);
    assert_eq!(
        r["driverresult"],
        json!({"success": true, "message": "Sample Driver Reconciled Successfully", "data": null, "driver": "sample-driver"})
    );

    // The ack follows the result: nothing stays pending, and Interest retention drops the message.
    wait_for(|| async { conveyor.ack_pending("sample-driver").await == 0 }).await;
    wait_for(|| async { conveyor.retained_messages().await == 0 }).await;

    let logs = conveyor.logs(5, Duration::from_secs(10)).await;
    assert_eq!(logs.len(), 5);
    for (i, line) in logs.iter().enumerate() {
        assert_eq!(line["runid"], run.as_str());
        assert_eq!(line["driver"], "sample-driver");
        assert_eq!(line["pipeline"], "");
        assert_eq!(line["step"], (i + 1).to_string());
        assert_eq!(
            line["message"],
            format!("Sample Driver Working... {}/5", i + 1)
        );
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    for i in 0..5 {
        let m = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut live))
            .await
            .expect("a live line")
            .expect("subscription open");
        assert_eq!(m.subject.as_str(), format!("live.logs.{run}.sample-driver"));
        let line: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(line["step"], (i + 1).to_string());
    }
}

/// A pipeline step on `drivers.<name>.resources.<type>` with event `process` is handled the
/// same way, and an object payload (the design document's shape) is accepted too.
#[tokio::test]
async fn pipeline_step_with_process_event() {
    let dir = workdir(&["test-driver"]);
    let server = NatsServer::start(dir.path());
    let conveyor = Conveyor::connect(&server.url).await;
    let host = Host::start(dir.path(), &nats_config(&server, ""));
    wait_for(|| async { conveyor.ack_pending("test-driver").await == 0 }).await;

    let mut res = resource("test", "step2", json!({"action": "ok"}));
    res["pipeline"] = json!("build");
    let run = conveyor
        .publish("drivers.test-driver.resources.test", "process", &res)
        .await;
    let object_payload = json!({
        "event": "process",
        "payload": resource("test", "obj", json!({"action": "ok"})),
        "id": "0123456789abcdef01234567",
        "run_id": "run-with-object-payload",
    });
    conveyor
        .publish_raw(
            "drivers.test-driver.resources.test",
            object_payload.to_string().into_bytes(),
        )
        .await;

    let results = conveyor.results(2, Duration::from_secs(30)).await;
    assert_eq!(results.len(), 2, "host log:\n{}", host.log());
    let step = results
        .iter()
        .find(|r| r["run_id"] == run.as_str())
        .expect("the step's result");
    assert_eq!(step["driverresult"]["success"], true);
    assert_eq!(step["driverresult"]["data"]["event"], "process");
    assert_eq!(step["resource"]["pipeline"], "build");
    assert!(
        results
            .iter()
            .any(|r| r["run_id"] == "run-with-object-payload")
    );
}

/// Messages that cannot be used are terminated with a logged reason; the consumer goes on.
#[tokio::test]
async fn malformed_messages_are_terminated_and_the_consumer_continues() {
    let dir = workdir(&["test-driver"]);
    let server = NatsServer::start(dir.path());
    let conveyor = Conveyor::connect(&server.url).await;
    let host = Host::start(dir.path(), &nats_config(&server, ""));
    wait_for(|| async { conveyor.ack_pending("test-driver").await == 0 }).await;

    for body in [
        b"this is not json".to_vec(),
        br#"{"event":"create","payload":"{not a resource","id":"x","run_id":"r1"}"#.to_vec(),
        br#"{"event":"create","payload":42,"id":"x","run_id":"r2"}"#.to_vec(),
    ] {
        conveyor.publish_raw("resources.test", body).await;
    }
    let good = conveyor
        .publish(
            "resources.test",
            "create",
            &resource("test", "fine", json!({"action": "ok"})),
        )
        .await;

    let results = conveyor.results(1, Duration::from_secs(30)).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["run_id"], good.as_str());
    assert!(
        conveyor.results(1, Duration::from_secs(2)).await.is_empty(),
        "no result for bad messages"
    );
    wait_for(|| async { conveyor.retained_messages().await == 0 }).await;
    let log = host.log();
    assert_eq!(
        log.matches("terminating an unusable message").count(),
        3,
        "{log}"
    );
    assert!(log.contains("not a DriverMessage"), "{log}");
}

/// Two hosts serve one driver: 1,000 events are each reconciled exactly once while both are
/// up; after one is SIGKILLed mid-run, none is lost and only events in flight on it run twice.
#[tokio::test]
async fn two_hosts_share_the_work_and_survive_a_kill() {
    let dir_a = workdir(&["test-driver"]);
    let dir_b = workdir(&["test-driver"]);
    let server = NatsServer::start(dir_a.path());
    let conveyor = Conveyor::connect(&server.url).await;
    let config = nats_config(&server, "[defaults]\nconcurrency = 4\n");
    let mut host_a = Host::start(dir_a.path(), &config);
    let host_b = Host::start(dir_b.path(), &config);
    wait_for(|| async { conveyor.ack_pending("test-driver").await == 0 }).await;

    // Phase 1: both up.
    let mut runs = Vec::new();
    for i in 0..1000 {
        let res = resource(
            "test",
            &format!("r{i}"),
            json!({"action": "ok", "lines": 0}),
        );
        runs.push(conveyor.publish("resources.test", "create", &res).await);
    }
    let results = conveyor.results(1000, Duration::from_secs(120)).await;
    let counts = count_by_run(&results);
    assert_eq!(counts.len(), 1000, "every event has a result");
    assert!(counts.values().all(|c| *c == 1), "each exactly once");
    assert!(runs.iter().all(|r| counts.contains_key(r)));
    assert!(conveyor.results(1, Duration::from_secs(1)).await.is_empty());

    // Phase 2: SIGKILL host A mid-run.
    let mut runs = Vec::new();
    for i in 0..400 {
        let res = resource(
            "test",
            &format!("s{i}"),
            json!({"action": "sleep", "ms": 20}),
        );
        runs.push(conveyor.publish("resources.test", "create", &res).await);
    }
    let mut results = conveyor.results(100, Duration::from_secs(60)).await;
    host_a.kill();
    results.extend(
        conveyor
            .results(400 - results.len(), Duration::from_secs(120))
            .await,
    );
    // Redeliveries of A's in-flight events arrive after ack_wait; give them time.
    results.extend(conveyor.results(8, Duration::from_secs(6)).await);
    let counts = count_by_run(&results);
    assert!(
        runs.iter().all(|r| counts.contains_key(r)),
        "none lost; host B log:\n{}",
        host_b.log()
    );
    let twice = counts.values().filter(|c| **c > 1).count();
    assert!(
        twice <= 4,
        "only events in flight on the killed host (concurrency 4) ran twice, not {twice}"
    );
    assert!(counts.values().all(|c| *c <= 2));
}

/// nats-server restarted mid-burst: every event completes after the host reconnects by itself.
#[tokio::test]
async fn host_reconnects_after_a_nats_restart() {
    let dir = workdir(&["test-driver"]);
    let mut server = NatsServer::start(dir.path());
    let conveyor = Conveyor::connect(&server.url).await;
    let host = Host::start(
        dir.path(),
        &nats_config(&server, "[defaults]\nconcurrency = 4\n"),
    );
    wait_for(|| async { conveyor.ack_pending("test-driver").await == 0 }).await;

    let mut runs = Vec::new();
    for i in 0..200 {
        let res = resource(
            "test",
            &format!("r{i}"),
            json!({"action": "sleep", "ms": 10}),
        );
        runs.push(conveyor.publish("resources.test", "create", &res).await);
    }
    let mut results = conveyor.results(40, Duration::from_secs(60)).await;
    server.restart(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_by_run(&results).len() < 200 && Instant::now() < deadline {
        results.extend(conveyor.results(200, Duration::from_secs(5)).await);
    }
    let counts = count_by_run(&results);
    let missing: Vec<_> = runs.iter().filter(|r| !counts.contains_key(*r)).collect();
    assert!(
        missing.is_empty(),
        "{} events never completed; host log:\n{}",
        missing.len(),
        host.log()
    );
}

fn count_by_run(results: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in results {
        *counts
            .entry(r["run_id"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    counts
}

async fn wait_for<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "condition not met within 30s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
