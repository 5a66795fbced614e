//! Events per second through NATS mode, next to floors measured against the same nats-server
//! in the same run.
//!
//! Every side drains the same number of pre-published DriverMessages from stream `messages`,
//! each for a resource of its own (events of one resource run one at a time, by design, so
//! one resource would measure that rule and not the path):
//! - `bare pull-and-ack`: one durable pull consumer read with `messages()` (batched pulls)
//!   and acked one by one: what JetStream and the client cost, with no work at all;
//! - `pull, publish result, ack`: the same plus a result published to
//!   `pipelines.driver.result` per message and the ack sent once JetStream has stored it
//!   (256 in flight): the least NATS mode must do per event;
//! - `... with the lease taken and released`: the same with the resource's lease (the host's
//!   own `Leases`) taken before the result and released after the ack: the least NATS mode
//!   must do per event with one reconcile per resource across hosts;
//! - `sandbox alone`: the driver's reconciles with no broker at all, on two workers;
//! - `conveyor-host`: the host (in process) at `concurrency` 1, 4 and 16, with the no-op
//!   driver and with the sample driver logging five lines: per message a pull for the free
//!   slots, the resource's lease taken, a fresh sandboxed instance, `reconcile`, the logs
//!   stored, the result published and confirmed, the ack, the lease released. Timed from the
//!   first result to the last. At 16 also with `leases = false` (one host, no lease).
//!
//! Then the time from publish to result, p50 and p99, with events published at a steady half
//! of the measured rate (concurrency 16), after [`WARM_UP`] events that meet the host as it
//! starts.
//!
//! Needs nats-server >= 2.10: `$NATS_SERVER`, `.tools/venv/bin/nats-server` (installed by
//! `tests/run.sh`) or `nats-server` on PATH. Run: `cargo bench -p conveyor-host --bench nats`
//! (`NATS_BENCH_EVENTS` to change the count, default 10,000).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use conveyor_host::Leases;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::{Value, json};

/// The NATS-mode tests' nats-server and Conveyor's streams.
use support::nats as upstream;

fn events() -> usize {
    std::env::var("NATS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// One benchmarked driver: its package, its file, the resource type it listens to and the
/// spec its events carry.
struct Case {
    label: &'static str,
    file: PathBuf,
    kind: &'static str,
    spec: Value,
}

fn payload(kind: &str, name: &str, spec: &Value) -> String {
    json!({
        "id": "7b0c", "name": name, "resource": kind,
        "metadata": {"version": "1"}, "spec": spec
    })
    .to_string()
}

/// Publishes `n` DriverMessages for resources of type `kind`, each of its own; returns the
/// run ids in order.
async fn publish(js: &jetstream::Context, kind: &str, spec: &Value, n: usize) -> Vec<String> {
    // Fresh ids for every batch: the host's result carries a Nats-Msg-Id made of them, and
    // JetStream would drop a second batch's results as duplicates of the first's.
    let batch = uuid::Uuid::new_v4();
    let mut acks = FuturesUnordered::new();
    let mut runs = Vec::with_capacity(n);
    for i in 0..n {
        let run = format!("{batch}-{i}");
        let message = json!({
            "event": "create", "payload": payload(kind, &format!("r{i}"), spec),
            "id": format!("{i:024x}"), "run_id": run,
        });
        acks.push(
            js.publish(format!("resources.{kind}"), message.to_string().into())
                .await
                .expect("publish")
                .into_future(),
        );
        runs.push(run);
        while acks.len() > 1024 {
            acks.next().await.expect("ack").expect("stored");
        }
    }
    while let Some(ack) = acks.next().await {
        ack.expect("stored");
    }
    runs
}

async fn durable(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
    filters: Vec<String>,
) -> consumer::PullConsumer {
    js.get_stream(stream)
        .await
        .expect("stream")
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.into()),
            filter_subjects: filters,
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
        .expect("consumer")
}

/// Messages per second from the first to the last of `n` messages read and acked.
async fn drain_rate(consumer: &consumer::PullConsumer, n: usize) -> f64 {
    let mut messages = consumer.messages().await.expect("messages");
    let mut first = None;
    for _ in 0..n {
        let m = messages.next().await.expect("open").expect("message");
        m.ack().await.expect("ack");
        first.get_or_insert_with(Instant::now);
    }
    let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
    (n - 1) as f64 / elapsed.as_secs_f64()
}

/// The least NATS mode does per event: read, publish a result, ack once it is stored, 256 in
/// flight. With `leases`, also the resource's lease taken before the result and released after
/// the ack (the host's own [`Leases`], a key-value create and a revision-checked delete, each
/// stored by JetStream): the least with one reconcile per resource across hosts.
async fn result_floor(
    js: &jetstream::Context,
    consumer: &consumer::PullConsumer,
    leases: Option<std::sync::Arc<Leases>>,
    n: usize,
) -> f64 {
    let mut messages = consumer.messages().await.expect("messages");
    let mut in_flight = FuturesUnordered::new();
    let mut first = None;
    let mut done = 0;
    let mut read = 0;
    while done < n {
        tokio::select! {
            m = messages.next(), if read < n && in_flight.len() < 256 => {
                let m = m.expect("open").expect("message");
                read += 1;
                first.get_or_insert_with(Instant::now);
                let (js, leases, run) = (js.clone(), leases.clone(), read.to_string());
                in_flight.push(async move {
                    let lease = match &leases {
                        Some(l) => Some(
                            l.take("floor-driver", "noop", &format!("r{run}"), &run)
                                .await
                                .expect("take")
                                .expect("free"),
                        ),
                        None => None,
                    };
                    let body = json!({"event": "driver.result", "run_id": run, "driverresult": {"success": true}});
                    js.publish("pipelines.driver.result", body.to_string().into())
                        .await
                        .expect("publish")
                        .await
                        .expect("stored");
                    m.ack().await.expect("ack");
                    if let (Some(l), Some(lease)) = (leases, lease) {
                        l.release(lease).await;
                    }
                });
            }
            Some(()) = in_flight.next() => done += 1,
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
    (n - 1) as f64 / elapsed.as_secs_f64()
}

/// A host in NATS mode serving `drivers`, at `concurrency`, with or without leases.
async fn start_host(
    url: &str,
    drivers: &Path,
    data: &Path,
    concurrency: u32,
    leases: bool,
) -> conveyor_host::Running {
    let config = conveyor_host::Config::parse(
        &format!(
            "drivers_dir = {:?}\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[events]\nsource = \"nats\"\nurl = \"{url}\"\nleases = {leases}\n[defaults]\nconcurrency = {concurrency}\n",
            drivers, data
        ),
        data,
    )
    .expect("config");
    conveyor_host::start(config).await.expect("host starts")
}

/// The host's consumer, created ahead so the pre-published messages are retained for it; the
/// host's own attach updates it to its exact settings.
async fn host_consumer(js: &jetstream::Context, driver: &str, kind: &str) {
    // Deliver policy `all`, as the host's own (JetStream does not let an update change it).
    js.get_stream("messages")
        .await
        .expect("stream")
        .create_consumer(consumer::pull::Config {
            durable_name: Some(driver.into()),
            filter_subjects: vec![
                format!("resources.{kind}"),
                format!("drivers.{driver}.resources.{kind}"),
            ],
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("consumer");
}

/// The reader of the host's results. `pipeline-engine` is a work queue: what an earlier case
/// (the result floor's) left in it is purged first, so only this case's results are counted.
async fn results_reader(js: &jetstream::Context) -> consumer::PullConsumer {
    js.get_stream("pipeline-engine")
        .await
        .expect("stream")
        .purge()
        .await
        .expect("purge");
    durable(
        js,
        "pipeline-engine",
        "bench-results",
        vec!["pipelines.driver.result".into()],
    )
    .await
}

async fn cleanup(js: &jetstream::Context, driver: &str) {
    js.delete_consumer_from_stream(driver, "messages")
        .await
        .expect("delete consumer");
    js.delete_consumer_from_stream("bench-results", "pipeline-engine")
        .await
        .expect("delete consumer");
}

async fn host_rate(
    url: &str,
    js: &jetstream::Context,
    case: &Case,
    driver: &str,
    concurrency: u32,
    leases: bool,
    n: usize,
) -> f64 {
    let (drivers, data) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    std::fs::copy(&case.file, drivers.path().join(format!("{driver}.wasm"))).expect("copy");
    host_consumer(js, driver, case.kind).await;
    publish(js, case.kind, &case.spec, n).await;
    let results = results_reader(js).await;
    let host = start_host(url, drivers.path(), data.path(), concurrency, leases).await;
    let rate = drain_rate(&results, n).await;
    host.stop().await;
    cleanup(js, driver).await;
    rate
}

/// Events published first and left out of the publish-to-result figures (see [`latencies`]).
const WARM_UP: usize = 1_000;

/// Publish-to-result times, p50 and p99, of `n` events published at `rate` a second after
/// [`WARM_UP`] more.
async fn latencies(
    url: &str,
    js: &jetstream::Context,
    case: &Case,
    driver: &str,
    rate: f64,
    n: usize,
) -> (Duration, Duration) {
    let (drivers, data) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    std::fs::copy(&case.file, drivers.path().join(format!("{driver}.wasm"))).expect("copy");
    host_consumer(js, driver, case.kind).await;
    let results = results_reader(js).await;
    let host = start_host(url, drivers.path(), data.path(), 16, true).await;
    // The first events meet a host that has just started (its first pulls and leases, the
    // instance pool's first slots): a queue of a tenth of a second forms and drains, which is
    // the host's start, not its steady pace. They are published and waited for like the rest,
    // and left out of the figures.
    let warm = WARM_UP.min(n);
    let total = warm + n;
    let sent: std::sync::Arc<std::sync::Mutex<HashMap<String, (usize, Instant)>>> =
        Default::default();
    let publisher = {
        let (js, sent, spec, kind) = (js.clone(), sent.clone(), case.spec.clone(), case.kind);
        tokio::spawn(async move {
            let batch = uuid::Uuid::new_v4();
            let every = Duration::from_secs_f64(1.0 / rate);
            let start = Instant::now();
            for i in 0..total {
                tokio::time::sleep_until((start + every.mul_f64(i as f64)).into()).await;
                let run = format!("{batch}-{i}");
                let message = json!({
                    "event": "create", "payload": payload(kind, &format!("l{i}"), &spec),
                    "id": format!("{i:024x}"), "run_id": run,
                });
                sent.lock().expect("lock").insert(run, (i, Instant::now()));
                // Not waiting for the stream's ack keeps the pace.
                let _ = js
                    .publish(format!("resources.{kind}"), message.to_string().into())
                    .await
                    .expect("publish");
            }
        })
    };
    let mut messages = results.messages().await.expect("messages");
    let mut took = Vec::with_capacity(n);
    let mut received = 0;
    while received < total {
        let m = messages.next().await.expect("open").expect("message");
        let at = Instant::now();
        let result: Value = serde_json::from_slice(&m.payload).expect("a result is JSON");
        if let Some(run) = result["run_id"].as_str()
            && let Some((i, sent)) = sent.lock().expect("lock").remove(run)
        {
            received += 1;
            if i >= warm {
                took.push(at - sent);
            }
        }
        m.ack().await.expect("ack");
    }
    publisher.await.expect("publisher");
    host.stop().await;
    cleanup(js, driver).await;
    took.sort();
    let at = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    (at(0.50), at(0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench targets without --bench: nothing to check here.
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let n = events();
    let built =
        support::build_rust_drivers(&["noop-driver", "sample-driver"]).expect("build the drivers");
    let cases = [
        Case {
            label: "noop",
            file: built.join("noop_driver.wasm"),
            kind: "noop",
            spec: json!({}),
        },
        Case {
            label: "sample, 5 lines",
            file: built.join("sample_driver.wasm"),
            kind: "resource-1",
            spec: json!({"delay_ms": 0}),
        },
    ];
    let sandbox: Vec<f64> = cases
        .iter()
        .map(|c| {
            support::bench::sandbox_floor(&c.file, &payload(c.kind, "r", &c.spec), n)
                .expect("sandbox floor")
        })
        .collect();

    let dir = tempfile::tempdir().expect("temp dir");
    let server = upstream::NatsServer::start(dir.path());
    let url = server.url.clone();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(&url).await.expect("connect");
        let js = jetstream::new(client);
        upstream::create_upstream_streams(&js).await;

        eprintln!("floors: {n} events each");
        let bare = durable(&js, "messages", "bare", vec!["resources.noop".into()]).await;
        publish(&js, "noop", &json!({}), n).await;
        let bare_rate = drain_rate(&bare, n).await;
        js.delete_consumer_from_stream("bare", "messages")
            .await
            .expect("delete consumer");
        let floor = durable(&js, "messages", "floor", vec!["resources.noop".into()]).await;
        publish(&js, "noop", &json!({}), n).await;
        let result_rate = result_floor(&js, &floor, None, n).await;
        js.delete_consumer_from_stream("floor", "messages")
            .await
            .expect("delete consumer");
        let leases = std::sync::Arc::new(
            Leases::open(&js, Duration::from_secs(30))
                .await
                .expect("the lease bucket"),
        );
        let floor = durable(&js, "messages", "lease-floor", vec!["resources.noop".into()]).await;
        publish(&js, "noop", &json!({}), n).await;
        let lease_rate = result_floor(&js, &floor, Some(leases), n).await;
        js.delete_consumer_from_stream("lease-floor", "messages")
            .await
            .expect("delete consumer");

        println!("\nevents per second through NATS ({n} events each, same nats-server, same run)");
        println!("  {:<52} {bare_rate:>9.0} /s", "bare pull-and-ack loop");
        println!(
            "  {:<52} {result_rate:>9.0} /s   ({:.1}% of bare)",
            "pull, publish result, ack (256 in flight)",
            result_rate / bare_rate * 100.0
        );
        println!(
            "  {:<52} {lease_rate:>9.0} /s   ({:.1}% of bare)",
            "the same with the lease taken and released",
            lease_rate / bare_rate * 100.0
        );
        for (case, s) in cases.iter().zip(&sandbox) {
            println!(
                "  {:<52} {s:>9.0} /s",
                format!("sandbox alone, {} (2 workers)", case.label)
            );
        }
        let mut rate16 = Vec::new();
        for (case, s) in cases.iter().zip(&sandbox) {
            let driver = if case.kind == "noop" { "noop-driver" } else { "sample-driver" };
            for (concurrency, leases) in [(1, true), (4, true), (16, true), (16, false)] {
                let rate = host_rate(&url, &js, case, driver, concurrency, leases, n).await;
                let label = format!(
                    "conveyor-host, {}, concurrency {concurrency}{}",
                    case.label,
                    if leases { "" } else { ", leases off" }
                );
                println!(
                    "  {label:<52} {rate:>9.0} /s   ({:.1}% of bare, {:.1}% of the result floor, {:.1}% of the sandbox)",
                    rate / bare_rate * 100.0,
                    rate / result_rate * 100.0,
                    rate / s * 100.0,
                );
                if concurrency == 16 && leases {
                    rate16.push(rate);
                }
            }
        }
        println!(
            "\npublish to result, concurrency 16, published at half the rate above, after {WARM_UP} events to warm up"
        );
        for (case, rate) in cases.iter().zip(rate16) {
            let driver = if case.kind == "noop" { "noop-driver" } else { "sample-driver" };
            let count = n.min(5_000);
            let (p50, p99) = latencies(&url, &js, case, driver, rate / 2.0, count).await;
            println!(
                "  {:<52} p50 {:>9}   p99 {:>9}   ({count} events at {:.0}/s)",
                case.label,
                ms(p50),
                ms(p99),
                rate / 2.0
            );
        }
    });
}
