//! Embedded mode end to end, next to its floors, in one run.
//!
//! The host runs in this process (the real daemon: HTTP API, SQLite store, queue, manager,
//! sandbox), with the no-op driver and then the sample driver logging five lines. A load
//! generator in the same process (`CLIENTS` keep-alive connections of hyper's HTTP/1.1
//! client) creates resources of the driver's type as fast as the API answers, for `EVENTS`
//! events. Figures:
//!
//! - creates accepted per second, and their latency (p50, p99), with a `GET /runs/{id}` sent
//!   every `READ_EVERY` beside them and timed (readers must not starve behind writers);
//! - events completed per second end to end: from the first create sent to the last run
//!   succeeded (its result stored, its event acked), read from `/metrics`;
//! - the floors, measured in the same run: the same load generator's `GET /health` (HTTP
//!   with no work: the ceiling for creates on this machine), the same SQLite writes done directly (per event,
//!   one transaction storing the resource, its version, its run and step and its queue row,
//!   and one storing the result, the step's and run's status and removing the queue row; one
//!   connection, cached statements, WAL, `synchronous=NORMAL`, the same disk), and the sandbox
//!   loop with no store (`Sandbox::reconcile` of the same driver on two workers, log lines
//!   only counted).
//!
//! - CPU time per event: the store's writer thread's (the one serial part of the path, so
//!   one second over it is the most events a second the writer leaves room for, whatever the
//!   machine's other load) and all the host's threads' together.
//!
//! Each figure is printed with its ratio to its floor; RSS at the end. Run:
//! `cargo bench -p conveyor-host --bench embedded` (`EMBEDDED_BENCH_EVENTS` to change the count).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use support::Host;
use support::bench::sandbox_floor;

/// Concurrent HTTP clients creating resources.
const CLIENTS: usize = 64;
/// How often the reader beside the writers sends its `GET /runs/{id}`.
const READ_EVERY: Duration = Duration::from_millis(5);
/// The driver's `concurrency`.
const CONCURRENCY: u32 = 16;

fn events() -> usize {
    std::env::var("EMBEDDED_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

// ---- floor 1: the same SQLite writes, done directly ----------------------------------------

/// Events a second through the store's two transactions per event, on one connection.
fn sqlite_floor(dir: &Path, n: usize) -> rusqlite::Result<f64> {
    let conn = rusqlite::Connection::open(dir.join("floor.db"))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE resources (type TEXT, name TEXT, json TEXT, PRIMARY KEY (type, name));
         CREATE TABLE resource_versions (type TEXT, name TEXT, version TEXT, json TEXT,
             PRIMARY KEY (type, name, version));
         CREATE TABLE runs (runid TEXT PRIMARY KEY, type TEXT, name TEXT, status TEXT,
             created_at TEXT);
         CREATE TABLE steps (runid TEXT, step INTEGER, driver TEXT, status TEXT,
             PRIMARY KEY (runid, step));
         CREATE TABLE queue (seq INTEGER PRIMARY KEY, runid TEXT, driver TEXT, payload TEXT);
         CREATE TABLE results (runid TEXT, step INTEGER, json TEXT, PRIMARY KEY (runid, step));",
    )?;
    let resource = json!({"id": "7b0c", "name": "bench", "resource": "noop",
        "metadata": {"version": "1"}, "spec": {}})
    .to_string();
    let result = json!({"success": true, "message": "ok", "data": null}).to_string();
    let start = Instant::now();
    for i in 0..n {
        let name = format!("r{i}");
        let run = format!("{i:032x}");
        let tx = conn.unchecked_transaction()?;
        tx.prepare_cached("INSERT INTO resources VALUES ('noop', ?1, ?2)")?
            .execute(rusqlite::params![name, resource])?;
        tx.prepare_cached("INSERT INTO resource_versions VALUES ('noop', ?1, '1', ?2)")?
            .execute(rusqlite::params![name, resource])?;
        tx.prepare_cached("INSERT INTO runs VALUES (?1, 'noop', ?2, 'queued', 'now')")?
            .execute(rusqlite::params![run, name])?;
        tx.prepare_cached("INSERT INTO steps VALUES (?1, 1, 'noop-driver', 'queued')")?
            .execute([&run])?;
        tx.prepare_cached(
            "INSERT INTO queue (runid, driver, payload) VALUES (?1, 'noop-driver', ?2)",
        )?
        .execute(rusqlite::params![run, resource])?;
        tx.commit()?;
        let tx = conn.unchecked_transaction()?;
        tx.prepare_cached("INSERT INTO results VALUES (?1, 1, ?2)")?
            .execute(rusqlite::params![run, result])?;
        tx.prepare_cached("UPDATE steps SET status = 'succeeded' WHERE runid = ?1 AND step = 1")?
            .execute([&run])?;
        tx.prepare_cached("UPDATE runs SET status = 'succeeded' WHERE runid = ?1")?
            .execute([&run])?;
        tx.prepare_cached("DELETE FROM queue WHERE runid = ?1")?
            .execute([&run])?;
        tx.commit()?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

// ---- floor 3: HTTP alone ------------------------------------------------------------------

/// Requests a second that the same load generator (`CLIENTS` connections) gets from the
/// host's cheapest route, `GET /health`: the most creates a second that HTTP on this machine
/// leaves room for, before any work is done for them.
/// One keep-alive HTTP/1.1 connection of the load generator: hyper's client connection, no
/// pool to share between tasks, so that the generator takes as little as it can of the cores
/// it shares with the host (with reqwest it took about a fifth of the CPU of a run).
struct Connection {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
}

impl Connection {
    async fn open(host: &Host) -> Connection {
        let authority = host
            .url
            .strip_prefix("http://")
            .expect("the bench's host serves plain HTTP")
            .to_string();
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .expect("connect to the host");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (send, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("an HTTP/1.1 connection");
        tokio::spawn(connection);
        Connection { send, authority }
    }

    /// Sends a request (a JSON body when given) and returns its status and body.
    async fn send(
        &mut self,
        method: hyper::Method,
        path: &str,
        json: Option<Bytes>,
    ) -> (hyper::StatusCode, Bytes) {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        if json.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(json.unwrap_or_default()))
            .expect("a request");
        self.send.ready().await.expect("the connection is open");
        let response = self.send.send_request(request).await.expect("a response");
        let status = response.status();
        let body = response.into_body().collect().await.expect("a body");
        (status, body.to_bytes())
    }
}

async fn http_floor(host: &Host, n: usize) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let mut connections = Vec::new();
    for _ in 0..CLIENTS {
        connections.push(Connection::open(host).await);
    }
    let start = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            let next = next.clone();
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                    let (status, _) = connection.send(hyper::Method::GET, "/health", None).await;
                    assert!(status.is_success(), "GET /health: {status}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a client");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

// ---- the host --------------------------------------------------------------------------

struct HostFigures {
    creates_per_s: f64,
    events_per_s: f64,
    p50: Duration,
    p99: Duration,
    get_p50: Duration,
    get_p99: Duration,
    /// How many of those GETs were answered.
    gets: usize,
    /// The writer thread's CPU time per event.
    writer_cpu: Duration,
    /// The host's CPU time per event, all its threads.
    host_cpu: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The host's successful reconciles of `driver` so far, from `/metrics`.
async fn succeeded(client: &reqwest::Client, host: &Host, driver: &str) -> u64 {
    let text = match client.get(host.at("/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return 0,
    };
    text.lines()
        .filter(|l| {
            l.starts_with("conveyor_reconciles_total")
                && l.contains(&format!("driver=\"{driver}\""))
                && l.contains("outcome=\"success\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn drive(
    host: &Host,
    kind: &str,
    driver: &str,
    spec: serde_json::Value,
    n: usize,
) -> HostFigures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("a client");
    let before = succeeded(&client, host, driver).await;
    let (writer_before, host_before) = cpu_so_far();
    let next = Arc::new(AtomicU64::new(0));
    let batch = uuid::Uuid::new_v4().simple().to_string();
    // Each create's body is this with its own name: `{"name":"<batch>-<i>",` and the rest.
    let rest = serde_json::to_string(&json!({"resource": kind, "spec": spec}))
        .expect("JSON")
        .replacen('{', ",", 1);
    let mut connections = Vec::new();
    for _ in 0..CLIENTS {
        connections.push(Connection::open(host).await);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut connection in connections {
        let (next, batch, rest) = (next.clone(), batch.clone(), rest.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    return latencies;
                }
                let body = Bytes::from(format!("{{\"name\":\"{batch}-{i}\"{rest}"));
                let sent = Instant::now();
                let (status, answer) = connection
                    .send(hyper::Method::POST, "/resources", Some(body))
                    .await;
                latencies.push(sent.elapsed());
                assert_eq!(
                    status,
                    201,
                    "create {i}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }));
    }
    // A reader beside the writers: a GET /runs/{id} of a run that exists every
    // READ_EVERY, a probe of the latency readers see, not a second load (one sent back to
    // back took a third of a core from the host it measured, and a different share each run).
    let reader = {
        let (client, host_url) = (client.clone(), host.at(""));
        let first = client
            .post(host.at("/resources"))
            .json(&json!({"name": format!("{batch}-probe"), "resource": kind, "spec": spec}))
            .send()
            .await
            .expect("probe");
        let probe: serde_json::Value = first.json().await.expect("JSON");
        let run = probe["runid"].as_str().unwrap_or_default().to_string();
        let done = next.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut every = tokio::time::interval(READ_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while done.load(Ordering::Relaxed) < n as u64 {
                every.tick().await;
                let sent = Instant::now();
                let r = client
                    .get(format!("{host_url}/runs/{run}"))
                    .send()
                    .await
                    .expect("GET /runs/{id}");
                let _ = r.bytes().await;
                latencies.push(sent.elapsed());
            }
            latencies
        })
    };
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("a client"));
    }
    let accepted = start.elapsed();
    let mut gets = reader.await.expect("the reader");
    // Every create's run (and the probe's) succeeded; polled often enough that the poll's
    // step is not a share of a phase of a few seconds.
    let target = before + n as u64 + 1;
    loop {
        if succeeded(&client, host, driver).await >= target {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "runs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let completed = start.elapsed();
    let (writer_after, host_after) = cpu_so_far();
    latencies.sort();
    gets.sort();
    HostFigures {
        creates_per_s: n as f64 / accepted.as_secs_f64(),
        events_per_s: n as f64 / completed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        get_p50: percentile(&gets, 0.50),
        get_p99: percentile(&gets, 0.99),
        gets: gets.len(),
        writer_cpu: (writer_after - writer_before) / n as u32,
        host_cpu: (host_after - host_before) / n as u32,
    }
}

/// Fills the host's store, beside the running host, to `lines` log lines in all (five per run,
/// one run per five lines, a run row each), written straight into its SQLite file in large
/// transactions: the API would take minutes to store a million.
fn fill(db: &Path, from: usize, lines: usize) -> rusqlite::Result<()> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let mut i = from;
    while i < lines {
        let tx = conn.unchecked_transaction()?;
        let end = (i + 50_000).min(lines);
        {
            let mut run = tx.prepare_cached(
                "INSERT INTO runs (run_id, resource_type, resource_name, event, status, created_at,
                    finished_at) VALUES (?1, 'bulk', ?1, 'create', 'succeeded', ?2, ?2)",
            )?;
            let mut line = tx.prepare_cached(
                "INSERT INTO logs (run_id, driver, pipeline, timestamp, message, labels)
                 VALUES (?1, 'bulk-driver', '', ?2, ?3, '{\"step\":\"1\"}')",
            )?;
            let now = "2026-12-01T00:00:00.000000Z";
            for n in (i..end).step_by(5) {
                let id = format!("bulk-{n:09}");
                run.execute(rusqlite::params![id, now])?;
                for k in 0..5 {
                    line.execute(rusqlite::params![id, now, format!("bulk line {k}")])?;
                }
            }
        }
        tx.commit()?;
        i = end;
    }
    Ok(())
}

/// The median and p99 of `n` sequential GETs of `path`.
async fn time_get(client: &reqwest::Client, url: &str, n: usize) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let sent = Instant::now();
        let r = client.get(url).send().await.expect("GET");
        assert!(r.status().is_success(), "{url}: {}", r.status());
        let _ = r.bytes().await;
        times.push(sent.elapsed());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// On-CPU time so far of this process's threads: the store's writer thread (the one serial
/// part of an event's path: its time per event is the ceiling of events a second), and every
/// thread of the host (its runtime, writer, checkpointer, compiler and epoch threads; not the
/// load generator's runtime or the main thread). From `/proc/self/task/*/schedstat`, in ns.
fn cpu_so_far() -> (Duration, Duration) {
    let (mut writer, mut host) = (0u64, 0u64);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (Duration::ZERO, Duration::ZERO);
    };
    for task in tasks.flatten() {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).ok();
        let (Some(comm), Some(stat)) = (read("comm"), read("schedstat")) else {
            continue;
        };
        let ns: u64 = stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let comm = comm.trim();
        if comm == "store-writer" {
            writer += ns;
        }
        if !comm.starts_with("tokio-rt-worker") && !comm.starts_with("embedded") {
            host += ns;
        }
    }
    (Duration::from_nanos(writer), Duration::from_nanos(host))
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench binaries without `--bench`: nothing to check here.
        return Ok(());
    }
    let n = events();
    let drivers = support::build_rust_drivers(&["noop-driver", "sample-driver"])?;
    let scratch = support::tempdir();
    println!(
        "embedded mode, {n} events, {CLIENTS} HTTP clients, driver concurrency {CONCURRENCY}\n"
    );

    let sqlite = sqlite_floor(scratch.path(), n)?;
    let noop_sandbox = sandbox_floor(
        &drivers.join("noop_driver.wasm"),
        r#"{"id":"1","name":"b","resource":"noop","metadata":{"version":"1"},"spec":{}}"#,
        n,
    )?;
    let sample_sandbox = sandbox_floor(
        &drivers.join("sample_driver.wasm"),
        r#"{"id":"1","name":"b","resource":"resource-1","metadata":{"version":"1"},"spec":{"delay_ms":0}}"#,
        n,
    )?;
    let dir = support::workdir(&["noop-driver", "sample-driver"]);
    let host = Host::start(
        dir.path(),
        &format!("[defaults]\nconcurrency = {CONCURRENCY}\n"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Warmed up (connections), then measured.
    runtime.block_on(http_floor(&host, 500));
    let http = runtime.block_on(http_floor(&host, n));
    println!("floors");
    println!("  SQLite, the same writes directly    {sqlite:>10.0} events/s");
    println!("  sandbox alone, noop (2 workers)     {noop_sandbox:>10.0} events/s");
    println!("  sandbox alone, 5 lines (2 workers)  {sample_sandbox:>10.0} events/s");
    println!("  HTTP alone, GET /health ({CLIENTS} clients) {http:>7.0} requests/s\n");
    let cases: [(&str, &str, &str, serde_json::Value, f64); 2] = [
        ("noop", "noop", "noop-driver", json!({}), noop_sandbox),
        (
            "sample, 5 lines",
            "resource-1",
            "sample-driver",
            json!({"delay_ms": 0}),
            sample_sandbox,
        ),
    ];
    runtime.block_on(async {
        host.define("noop", json!({"type": "object"})).await;
        host.define("resource-1", json!({"type": "object"})).await;
    });
    for (label, kind, driver, spec, sandbox) in cases {
        // A short warm-up (connections, caches), then the measured run.
        runtime.block_on(drive(&host, kind, driver, spec.clone(), 500));
        let f = runtime.block_on(drive(&host, kind, driver, spec, n));
        let floor = sqlite.min(sandbox);
        println!("{label}");
        println!(
            "  creates accepted   {:>10.0} /s   {:>5.1} % of the SQLite floor, {:.1} % of HTTP alone",
            f.creates_per_s,
            100.0 * f.creates_per_s / sqlite,
            100.0 * f.creates_per_s / http
        );
        println!(
            "  events end to end  {:>10.0} /s   {:>5.1} % of the SQLite floor, {:.1} % of the lower floor ({floor:.0}/s)",
            f.events_per_s,
            100.0 * f.events_per_s / sqlite,
            100.0 * f.events_per_s / floor
        );
        println!("  create latency     p50 {}   p99 {}", ms(f.p50), ms(f.p99));
        println!(
            "  CPU per event      store writer {:.0} µs (its ceiling {:.0}/s), the host's threads {:.0} µs",
            f.writer_cpu.as_secs_f64() * 1e6,
            1.0 / f.writer_cpu.as_secs_f64().max(1e-9),
            f.host_cpu.as_secs_f64() * 1e6
        );
        println!(
            "  GET /runs/{{id}}     p50 {}   p99 {}   ({} beside the writers)\n",
            ms(f.get_p50),
            ms(f.get_p99),
            f.gets
        );
    }
    // ---- the queries users run, as the store grows ----
    let dir = support::workdir(&["noop-driver"]);
    let host = Host::start(dir.path(), "");
    let db = dir.path().join("data").join("conveyor-host.db");
    let client = reqwest::Client::new();
    println!("queries, 200 each, by stored log lines");
    let mut filled = 0;
    for lines in [10_000, 1_000_000] {
        fill(&db, filled, lines)?;
        filled = lines;
        let probe = format!("bulk-{:09}", lines / 2 / 5 * 5);
        let (logs50, logs99) = runtime.block_on(time_get(
            &client,
            &host.at(&format!("/logs?runid={probe}")),
            200,
        ));
        let (runs50, runs99) = runtime.block_on(time_get(
            &client,
            &host.at("/runs?type=bulk&status=succeeded&limit=50"),
            200,
        ));
        println!(
            "  {lines:>9} lines   GET /logs?runid=  p50 {} p99 {}   GET /runs?type=&status=&limit=50  p50 {} p99 {}",
            ms(logs50),
            ms(logs99),
            ms(runs50),
            ms(runs99)
        );
    }
    println!("\nRSS at the end: {:.0} MiB", rss_mib());
    Ok(())
}
