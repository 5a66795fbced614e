//! Events per second through NATS mode, next to a bare async-nats pull-and-ack loop against
//! the same nats-server in the same run.
//!
//! Both sides drain the same number of pre-published DriverMessages from stream `messages`:
//! - `bare`: one durable pull consumer read with `messages()` (batched pulls) and acked one by
//!   one: what JetStream and the client cost, with no work at all;
//! - `host`: conveyor-host (in process) with the no-op driver: per message a pull, a fresh
//!   sandboxed instance, `reconcile`, the result published to `pipelines.driver.result` and
//!   confirmed, then the ack. Timed from the first result to the last.
//!
//! Needs nats-server >= 2.10: `$NATS_SERVER`, `.tools/venv/bin/nats-server` (installed by
//! `tests/run.sh`) or `nats-server` on PATH. Run: `cargo bench -p conveyor-host --bench nats`.

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;

/// The NATS-mode tests' nats-server and Conveyor's streams.
use support::nats as upstream;

const EVENTS: usize = 5_000;

fn noop_driver() -> PathBuf {
    let dir = support::build_rust_drivers(&["noop-driver"]).expect("build the noop driver");
    dir.join("noop_driver.wasm")
}

async fn publish(js: &jetstream::Context, n: usize) {
    let payload = serde_json::json!({
        "id": "7b0c", "name": "bench", "resource": "noop",
        "metadata": {"version": "1"}, "spec": {}
    })
    .to_string();
    // Fresh ids for every batch: the host's result carries a Nats-Msg-Id made of them, and
    // JetStream would drop a second batch's results as duplicates of the first's.
    let batch = uuid::Uuid::new_v4();
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let message = serde_json::json!({
            "event": "create", "payload": payload,
            "id": format!("{i:024x}"), "run_id": format!("{batch}-{i}"),
        });
        acks.push(
            js.publish("resources.noop", message.to_string().into())
                .await
                .expect("publish"),
        );
    }
    for ack in acks {
        ack.await.expect("stored");
    }
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

async fn host_rate(url: &str, js: &jetstream::Context, concurrency: u32, drivers: &Path) -> f64 {
    let data = tempfile::tempdir().expect("temp dir");
    // The host's consumer, created ahead so the pre-published messages are retained for it;
    // the host's own attach updates it to its exact settings.
    durable(
        js,
        "messages",
        "noop-driver",
        vec![
            "resources.noop".into(),
            "drivers.noop-driver.resources.noop".into(),
        ],
    )
    .await;
    publish(js, EVENTS).await;
    let results = durable(
        js,
        "pipeline-engine",
        "bench-results",
        vec!["pipelines.driver.result".into()],
    )
    .await;
    let config = conveyor_host::Config::parse(
        &format!(
            "drivers_dir = {:?}\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[events]\nsource = \"nats\"\nurl = \"{url}\"\n[defaults]\nconcurrency = {concurrency}\n",
            drivers,
            data.path()
        ),
        data.path(),
    )
    .expect("config");
    let host = conveyor_host::start(config).await.expect("host starts");
    let rate = drain_rate(&results, EVENTS).await;
    host.stop().await;
    js.delete_consumer_from_stream("noop-driver", "messages")
        .await
        .expect("delete consumer");
    js.delete_consumer_from_stream("bench-results", "pipeline-engine")
        .await
        .expect("delete consumer");
    rate
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
    let wasm = noop_driver();
    let drivers = tempfile::tempdir().expect("temp dir");
    std::fs::copy(&wasm, drivers.path().join("noop-driver.wasm")).expect("copy driver");
    let dir = tempfile::tempdir().expect("temp dir");
    let server = upstream::NatsServer::start(dir.path());
    let url = server.url.clone();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(&url).await.expect("connect");
        let js = jetstream::new(client);
        upstream::create_upstream_streams(&js).await;

        eprintln!("bare loop: publishing {EVENTS} events");
        let bare = durable(&js, "messages", "bare", vec!["resources.noop".into()]).await;
        publish(&js, EVENTS).await;
        let bare_rate = drain_rate(&bare, EVENTS).await;
        js.delete_consumer_from_stream("bare", "messages")
            .await
            .expect("delete consumer");

        let mut rows = vec![("bare pull-and-ack loop".to_string(), bare_rate)];
        for concurrency in [1, 4, 16] {
            eprintln!("conveyor-host, concurrency {concurrency}: publishing {EVENTS} events");
            let rate = host_rate(&url, &js, concurrency, drivers.path()).await;
            rows.push((
                format!("conveyor-host, noop, concurrency {concurrency}"),
                rate,
            ));
        }
        println!(
            "\nevents per second through NATS ({EVENTS} events each, same nats-server, same run)"
        );
        for (name, rate) in &rows {
            println!(
                "  {name:<40} {rate:>9.0} /s   ({:.1}% of bare)",
                rate / bare_rate * 100.0
            );
        }
    });
}
