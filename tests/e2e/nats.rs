//! NATS mode: the host attached to a real nats-server with Conveyor's three streams, driven by
//! messages shaped exactly as the Go server sends them. Each scenario has its own
//! nats-server, since the test's reader of results and logs takes every message on them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::nats::{Conveyor, NatsServer, resource};
use support::{Host, poll};
use tokio::sync::OnceCell;

use crate::workdir;

fn nats_config(server: &NatsServer, extra: &str) -> String {
    format!(
        "[events]\nsource = \"nats\"\nurl = \"{}\"\nack_wait = \"2s\"\n\n{extra}",
        server.url
    )
}

/// Whether `check` holds within 30 s.
async fn within_30s<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll(Duration::from_secs(30), Duration::from_millis(100), || {
        let done = check();
        async move { if done.await { Ok(()) } else { Err(()) } }
    })
    .await
    .is_ok()
}

// ---- conformance N2 and N4: a resource event --------------------------------------------

/// A DriverMessage on `resources.<type>` for the sample driver, and what came of it.
struct ResourceEvent {
    run: String,
    resource: Value,
    /// The driver's consumer's pending acks while the driver works.
    pending_while_working: usize,
    /// What `pipelines.driver.result` carried.
    results: Vec<Value>,
    host_log: String,
    /// Whether the message was acked (no ack pending) within 30 s of the result.
    acked: bool,
    /// Whether Interest retention dropped it within 30 s.
    dropped: bool,
    /// What `logs.>` carried.
    logs: Vec<Value>,
    /// What `live.logs.>` carried: (subject, line), five at most.
    live: Vec<(String, Value)>,
    /// `GET /metrics` after the result: its content type and text.
    metrics: (String, String),
}

async fn resource_event() -> &'static ResourceEvent {
    static EVENT: OnceCell<ResourceEvent> = OnceCell::const_new();
    EVENT
        .get_or_init(|| async {
            let dir = workdir(&["sample-driver"]);
            let server = NatsServer::start(dir.path());
            let conveyor = Conveyor::connect(&server.url).await;
            let mut live = conveyor
                .client
                .subscribe("live.logs.>")
                .await
                .expect("subscribe to live.logs.>");
            let host = Host::start(dir.path(), &nats_config(&server, ""));

            let res = resource("resource-1", "app", json!({"delay_ms": 300}));
            // The consumer is created when the host attaches; wait for it so the message is
            // retained.
            conveyor.wait_for_consumer("sample-driver").await;
            let run = conveyor
                .publish("resources.resource-1", "create", &res)
                .await;

            // While the driver works (five lines, 300 ms apart), its message is delivered but
            // not acknowledged: seen once the driver's first line is out.
            let first_line =
                tokio::time::timeout(Duration::from_secs(30), futures::StreamExt::next(&mut live))
                    .await
                    .ok()
                    .flatten()
                    .expect("the driver's first live line");
            let pending_while_working = conveyor.ack_pending("sample-driver").await;

            let results = conveyor.results(1, Duration::from_secs(30)).await;
            let metrics = host.metrics().await;
            let host_log = host.log();
            let acked =
                within_30s(|| async { conveyor.ack_pending("sample-driver").await == 0 }).await;
            let dropped = within_30s(|| async { conveyor.retained_messages().await == 0 }).await;
            let logs = conveyor.logs(5, Duration::from_secs(10)).await;
            let mut lines = vec![(
                first_line.subject.to_string(),
                serde_json::from_slice::<Value>(&first_line.payload).expect("a live line is JSON"),
            )];
            for _ in 1..5 {
                let next = tokio::time::timeout(
                    Duration::from_secs(5),
                    futures::StreamExt::next(&mut live),
                )
                .await;
                let Ok(Some(m)) = next else { break };
                let line: Value = serde_json::from_slice(&m.payload).expect("a live line is JSON");
                lines.push((m.subject.to_string(), line));
            }
            ResourceEvent {
                run,
                resource: res,
                pending_while_working,
                results,
                host_log,
                acked,
                dropped,
                logs,
                live: lines,
                metrics,
            }
        })
        .await
}

/// The message is acknowledged only after the work is done and its result published: then
/// nothing stays pending, and Interest retention drops it.
#[tokio::test]
async fn a_resource_event_is_acked_only_after_its_result() {
    let e = resource_event().await;
    assert_eq!(e.pending_while_working, 1, "acked before the work was done");
    assert_eq!(e.results.len(), 1, "host log:\n{}", e.host_log);
    assert!(e.acked, "condition not met within 30s");
    assert!(e.dropped, "condition not met within 30s");
}

/// NATS mode serves `/metrics` too: the reconcile is counted, and the embedded store's gauges
/// (queue depth, runs) are left out, since the Conveyor server keeps the queue and the runs.
#[tokio::test]
async fn nats_mode_serves_metrics_after_a_reconcile() {
    let e = resource_event().await;
    let (content_type, text) = &e.metrics;
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(
        text.contains(r#"conveyor_reconciles_total{driver="sample-driver",outcome="success"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"conveyor_reconcile_duration_seconds_count{driver="sample-driver"} 1"#),
        "{text}"
    );
    assert!(!text.contains("conveyor_queue_depth"), "{text}");
}

/// The result goes to `pipelines.driver.result` as a PipelineEvent.
#[tokio::test]
async fn a_resource_events_result_is_a_pipeline_event() {
    let e = resource_event().await;
    assert_eq!(e.results.len(), 1, "host log:\n{}", e.host_log);
    let r = &e.results[0];
    assert_eq!(r["event"], "driver.result");
    assert_eq!(r["run_id"], e.run.as_str());
    assert_eq!(r["resource"]["name"], "app");
    assert_eq!(r["resource"]["resource"], "resource-1");
    assert_eq!(r["resource"]["id"], e.resource["id"]);
    assert_eq!(
        r["driverresult"],
        json!({"success": true, "message": "Sample Driver Reconciled Successfully", "data": null, "driver": "sample-driver"})
    );
}

/// The driver's lines go to `logs.<runid>` as types.Log with `runid`.
#[tokio::test]
async fn driver_lines_are_stored_on_the_logs_stream() {
    let e = resource_event().await;
    assert_eq!(e.logs.len(), 5);
    for (i, line) in e.logs.iter().enumerate() {
        assert_eq!(line["runid"], e.run.as_str());
        assert_eq!(line["driver"], "sample-driver");
        assert_eq!(line["pipeline"], "");
        assert_eq!(line["step"], (i + 1).to_string());
        assert_eq!(
            line["message"],
            format!("Sample Driver Working... {}/5", i + 1)
        );
        assert!(
            line["timestamp"]
                .as_str()
                .expect("a timestamp")
                .ends_with('Z')
        );
    }
}

/// More lines than JetStream's client lets wait for their acknowledgement at once (5,000),
/// sent while the server is frozen: once it goes on, every line is stored and the result
/// follows. (A log task that waited for a permit without reaping the acknowledgements that
/// free them stopped for good, and with it every later result.)
#[tokio::test]
async fn lines_sent_while_the_server_is_frozen_are_all_stored() {
    let dir = workdir(&["test-driver"]);
    let server = NatsServer::start(dir.path());
    let conveyor = Conveyor::connect(&server.url).await;
    let host = Host::start(dir.path(), &nats_config(&server, ""));
    conveyor.wait_for_consumer("test-driver").await;
    let spec = json!({"action": "ok", "lines": 6000, "wait_ms": 1500});
    conveyor
        .publish(
            "resources.test",
            "create",
            &resource("test", "frozen", spec),
        )
        .await;
    assert!(within_30s(|| async { conveyor.ack_pending("test-driver").await == 1 }).await);
    // The driver logs its lines while the server is frozen.
    let paused = tokio::task::spawn_blocking(move || {
        server.pause(Duration::from_secs(4));
        server
    });
    let results = conveyor.results(1, Duration::from_secs(60)).await;
    let _server = paused.await.expect("the pause");
    assert_eq!(results.len(), 1, "host log:\n{}", host.log());
    assert_eq!(
        conveyor.logs(6000, Duration::from_secs(30)).await.len(),
        6000
    );
}

/// The driver's lines go live to `live.logs.<runid>.<driver>`.
#[tokio::test]
async fn driver_lines_go_live_on_core_nats() {
    let e = resource_event().await;
    for i in 0..5 {
        let (subject, line) = e.live.get(i).expect("a live line");
        assert_eq!(
            subject.as_str(),
            format!("live.logs.{}.sample-driver", e.run)
        );
        assert_eq!(line["step"], (i + 1).to_string());
    }
}

// ---- a pipeline step ------------------------------------------------------------------------

/// A pipeline step on `drivers.<name>.resources.<type>` with event `process`, and a step whose
/// payload is an object (the design document's shape), and their results.
struct PipelineStep {
    run: String,
    results: Vec<Value>,
    host_log: String,
}

async fn pipeline_step() -> &'static PipelineStep {
    static STEP: OnceCell<PipelineStep> = OnceCell::const_new();
    STEP.get_or_init(|| async {
        let dir = workdir(&["test-driver"]);
        let server = NatsServer::start(dir.path());
        let conveyor = Conveyor::connect(&server.url).await;
        let host = Host::start(dir.path(), &nats_config(&server, ""));
        conveyor.wait_for_consumer("test-driver").await;

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
        PipelineStep {
            run,
            results,
            host_log: host.log(),
        }
    })
    .await
}

/// A step is handled like a resource event, with its `process` event.
#[tokio::test]
async fn a_pipeline_step_is_handled_with_its_process_event() {
    let s = pipeline_step().await;
    assert_eq!(s.results.len(), 2, "host log:\n{}", s.host_log);
    let step = s
        .results
        .iter()
        .find(|r| r["run_id"] == s.run.as_str())
        .expect("the step's result");
    assert_eq!(step["driverresult"]["success"], true);
    assert_eq!(step["driverresult"]["data"]["event"], "process");
    assert_eq!(step["resource"]["pipeline"], "build");
}

/// An object payload is accepted as well as a JSON string.
#[tokio::test]
async fn an_object_payload_is_accepted() {
    let s = pipeline_step().await;
    assert_eq!(s.results.len(), 2, "host log:\n{}", s.host_log);
    assert!(
        s.results
            .iter()
            .any(|r| r["run_id"] == "run-with-object-payload")
    );
}

// ---- unusable messages ----------------------------------------------------------------------

/// Three unusable messages, then a good one, and what came of them.
struct Malformed {
    good: String,
    results: Vec<Value>,
    later_results: Vec<Value>,
    dropped: bool,
    host_log: String,
}

async fn malformed() -> &'static Malformed {
    static MALFORMED: OnceCell<Malformed> = OnceCell::const_new();
    MALFORMED
        .get_or_init(|| async {
            let dir = workdir(&["test-driver"]);
            let server = NatsServer::start(dir.path());
            let conveyor = Conveyor::connect(&server.url).await;
            let host = Host::start(dir.path(), &nats_config(&server, ""));
            conveyor.wait_for_consumer("test-driver").await;

            for body in [
                b"this is not json".to_vec(),
                br#"{"event":"create","payload":"{not a resource","id":"x","run_id":"r1"}"#
                    .to_vec(),
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
            let dropped = within_30s(|| async { conveyor.retained_messages().await == 0 }).await;
            // Every message is gone, so every result is published: none later.
            let later_results = conveyor.remaining_results().await;
            Malformed {
                good,
                results,
                later_results,
                dropped,
                host_log: host.log(),
            }
        })
        .await
}

/// The consumer goes on after unusable messages: the good one gets its result.
#[tokio::test]
async fn a_good_message_after_unusable_ones_gets_its_result() {
    let m = malformed().await;
    assert_eq!(m.results.len(), 1);
    assert_eq!(m.results[0]["run_id"], m.good.as_str());
}

/// Messages that cannot be used are terminated with a logged reason, and get no result.
#[tokio::test]
async fn unusable_messages_are_terminated_with_a_logged_reason() {
    let m = malformed().await;
    assert!(m.later_results.is_empty(), "no result for bad messages");
    assert!(m.dropped, "condition not met within 30s");
    let log = &m.host_log;
    assert_eq!(
        log.matches("terminating an unusable message").count(),
        3,
        "{log}"
    );
    assert!(log.contains("not a DriverMessage"), "{log}");
}

// ---- several hosts, a SIGKILL, a nats-server restart ----------------------------------

fn count_by_run(results: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in results {
        *counts
            .entry(r["run_id"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    counts
}

/// Two hosts serve one driver: 1,000 events are each reconciled exactly once.
#[tokio::test]
async fn two_hosts_reconcile_each_event_exactly_once() {
    let dir_a = workdir(&["test-driver"]);
    let dir_b = workdir(&["test-driver"]);
    let server = NatsServer::start(dir_a.path());
    let conveyor = Conveyor::connect(&server.url).await;
    let config = nats_config(&server, "[defaults]\nconcurrency = 4\n");
    let _host_a = Host::start(dir_a.path(), &config);
    let _host_b = Host::start(dir_b.path(), &config);
    conveyor.wait_for_consumer("test-driver").await;

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
    conveyor.quiet(Duration::from_secs(30)).await;
    assert!(conveyor.remaining_results().await.is_empty());
}

/// Two hosts serve one driver; after one is SIGKILLed mid-run (the binary), none of 400
/// events is lost and only events in flight on it run twice.
#[tokio::test]
async fn killing_one_of_two_hosts_loses_no_event() {
    let dir_a = workdir(&["test-driver"]);
    let dir_b = workdir(&["test-driver"]);
    let server = NatsServer::start(dir_a.path());
    let conveyor = Conveyor::connect(&server.url).await;
    // A short lease: the killed host's leases on its in-flight resources hold them from the other
    // host until they expire.
    let config = nats_config(&server, "lease_ttl = \"3s\"\n[defaults]\nconcurrency = 4\n");
    let mut host_a = crate::spawn(dir_a.path(), &config);
    let host_b = Host::start(dir_b.path(), &config);
    conveyor.wait_for_consumer("test-driver").await;

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
    // A's in-flight events are redelivered to B after ack_wait; once every message is acked,
    // every result, duplicates included, is in the stream.
    conveyor.quiet(Duration::from_secs(60)).await;
    results.extend(conveyor.remaining_results().await);
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
    conveyor.wait_for_consumer("test-driver").await;

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

/// Waits until `n` pull requests wait on the test driver's consumer: that many hosts are
/// attached and idle.
async fn wait_for_pullers(conveyor: &Conveyor, n: usize) {
    let ready = test_driver_consumer_within_30s(conveyor, |i| i.num_waiting >= n).await;
    assert!(ready, "{n} hosts pulling");
}

/// Whether the test driver's consumer's info satisfies `check` within 30 s.
async fn test_driver_consumer_within_30s(
    conveyor: &Conveyor,
    check: impl Fn(&async_nats::jetstream::consumer::Info) -> bool,
) -> bool {
    within_30s(|| async {
        let Ok(stream) = conveyor.js.get_stream("messages").await else {
            return false;
        };
        stream
            .consumer_info("test-driver")
            .await
            .is_ok_and(|i| check(&i))
    })
    .await
}

/// The value of `name{driver="test-driver"}` in a host's metrics; zero when absent.
async fn test_driver_counter(host: &Host, name: &str) -> u64 {
    let (_, text) = host.metrics().await;
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{driver=\"test-driver\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Each run's (start, end) from its `phase` lines on the logs stream, by run id.
fn hold_intervals(logs: &[Value]) -> HashMap<String, (String, String)> {
    let mut spans: HashMap<String, (String, String)> = HashMap::new();
    for line in logs {
        let (Some(run), Some(at)) = (line["runid"].as_str(), line["timestamp"].as_str()) else {
            continue;
        };
        let span = spans.entry(run.to_string()).or_default();
        match line["phase"].as_str() {
            Some("start") => span.0 = at.to_string(),
            Some("end") => span.1 = at.to_string(),
            _ => {}
        }
    }
    spans
}

/// Two hosts, four slots each, and 50 updates to one resource: no two reconciles of it ever
/// overlap (the driver's `start` and `end` lines never interleave), every update is
/// reconciled, and the hosts did meet each other's lease.
#[tokio::test]
async fn two_hosts_never_reconcile_one_resource_at_once() {
    let dir_a = workdir(&["test-driver"]);
    let dir_b = workdir(&["test-driver"]);
    let server = NatsServer::start(dir_a.path());
    let conveyor = Conveyor::connect(&server.url).await;
    let config = nats_config(&server, "[defaults]\nconcurrency = 4\n");
    let host_a = Host::start(dir_a.path(), &config);
    let host_b = Host::start(dir_b.path(), &config);
    conveyor.wait_for_consumer("test-driver").await;
    wait_for_pullers(&conveyor, 2).await;

    let res = resource("test", "shared", json!({"action": "hold", "ms": 40}));
    let mut runs = Vec::new();
    for _ in 0..50 {
        runs.push(conveyor.publish("resources.test", "update", &res).await);
    }
    let results = conveyor.results(50, Duration::from_secs(120)).await;
    let counts = count_by_run(&results);
    let missing = runs.iter().filter(|r| !counts.contains_key(*r)).count();
    assert_eq!(
        missing,
        0,
        "every update reconciled; host A log:\n{}",
        host_a.log()
    );
    conveyor.quiet(Duration::from_secs(30)).await;

    let logs = conveyor.logs(100, Duration::from_secs(30)).await;
    let spans = hold_intervals(&logs);
    let mut spans: Vec<(String, String)> = runs
        .iter()
        .map(|r| {
            spans
                .get(r)
                .cloned()
                .expect("each run logged start and end")
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        let ((_, end), (next_start, _)) = (&pair[0], &pair[1]);
        assert!(
            end <= next_start,
            "a reconcile ending at {end} overlaps one starting at {next_start}"
        );
    }
    let waited = test_driver_counter(&host_a, "conveyor_held_elsewhere_total").await
        + test_driver_counter(&host_b, "conveyor_held_elsewhere_total").await;
    assert!(waited > 0, "the hosts never met each other's lease");
}

/// The host holding a resource's lease is SIGKILLed mid-reconcile: the other host, refused
/// while the lease lived, goes on once it has expired, and reconciles both the update that
/// waited and the killed host's event (redelivered), neither given up.
#[tokio::test]
async fn a_dead_hosts_lease_expires_and_the_other_host_continues() {
    let dir_a = workdir(&["test-driver"]);
    let dir_b = workdir(&["test-driver"]);
    let server = NatsServer::start(dir_a.path());
    let conveyor = Conveyor::connect(&server.url).await;
    // One slot each: A, busy with the first event, pulls nothing more.
    let config = nats_config(&server, "lease_ttl = \"3s\"\n[defaults]\nconcurrency = 1\n");
    let mut host_a = crate::spawn(dir_a.path(), &config);
    conveyor.wait_for_consumer("test-driver").await;
    let first = conveyor
        .publish(
            "resources.test",
            "update",
            &resource("test", "held", json!({"action": "hold", "ms": 3_000})),
        )
        .await;
    let started = conveyor.logs(1, Duration::from_secs(30)).await;
    assert_eq!(started.first().map(|l| &l["runid"]), Some(&json!(first)));

    let host_b = Host::start(dir_b.path(), &config);
    wait_for_pullers(&conveyor, 1).await;
    let second = conveyor
        .publish(
            "resources.test",
            "update",
            &resource("test", "held", json!({"action": "hold", "ms": 10})),
        )
        .await;
    assert!(
        within_30s(|| async {
            test_driver_counter(&host_b, "conveyor_held_elsewhere_total").await > 0
        })
        .await,
        "host B was refused while A held the lease; its log:\n{}",
        host_b.log()
    );
    host_a.kill();

    let results = conveyor.results(2, Duration::from_secs(60)).await;
    let counts = count_by_run(&results);
    assert!(
        counts.contains_key(&first) && counts.contains_key(&second),
        "both ran on B once A's lease expired: {results:?}\nB log:\n{}",
        host_b.log()
    );
    for result in &results {
        assert_eq!(
            result["driverresult"]["success"],
            json!(true),
            "not given up: {result}"
        );
    }
}

/// The test driver reloaded as a version that listens to another resource type: the
/// consumer's filter subjects follow without a restart, and an event of the new type gets
/// its result.
#[tokio::test]
async fn a_driver_reloaded_with_other_resources_gets_their_events() {
    let dir = workdir(&["test-driver"]);
    let server = NatsServer::start(dir.path());
    let conveyor = Conveyor::connect(&server.url).await;
    let _host = Host::start(dir.path(), &nats_config(&server, ""));
    conveyor.wait_for_consumer("test-driver").await;

    let v2 = crate::guarantees::patched_test_driver(b"test-reload-v1", b"test-reload-v2");
    crate::guarantees::drop_in(&dir.path().join("drivers"), "test-driver.wasm", &v2);
    let wanted = "resources.test-reload-v2".to_string();
    assert!(
        test_driver_consumer_within_30s(&conveyor, |i| i.config.filter_subjects.contains(&wanted))
            .await,
        "the consumer's filter subjects follow the reload"
    );
    let res = resource(
        "test-reload-v2",
        "new-kind",
        json!({"action": "ok", "lines": 0}),
    );
    let run = conveyor
        .publish("resources.test-reload-v2", "create", &res)
        .await;
    let results = conveyor.results(1, Duration::from_secs(30)).await;
    assert_eq!(
        results.first().map(|r| &r["run_id"]),
        Some(&json!(run)),
        "{results:?}"
    );
}
