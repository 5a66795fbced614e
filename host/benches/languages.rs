//! The same driver in Rust, Python (componentize-py) and JavaScript (jco, QuickJS backend):
//! what each language costs per event, to compile, to load from the compile cache, and in
//! memory per live instance, measured in one run so that the figures compare.
//!
//! The three drivers (examples/rust-driver, examples/python-driver, examples/js-driver) do the
//! same work: parse the payload, log four labelled lines, read the resource and its definition
//! back through the API client, and return a result with JSON data. Events go through the
//! host's real per-event path, `Sandbox::reconcile` (fresh instance, log capture, limits); the
//! API client answers from memory and log lines go to a sink that counts them, so neither the
//! store nor the network is measured. The Rust driver is the baseline each ratio is against.
//!
//! Run with `cargo bench --bench languages`. It builds the drivers first (the Python and
//! JavaScript ones with their examples' build scripts, which need the tools that tests/run.sh
//! installs into .tools/).

use std::collections::HashSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use conveyor_host::Log;
use conveyor_host::RunLogger;
use conveyor_host::RunState;
use conveyor_host::bindings::{ClientError, Created, DriverPre, Event};
use conveyor_host::{ApiClient, Grants, GuestOutcome, LogSink, RunContext, RunOutcome, Sandbox};
use conveyor_host::{EngineSettings, build_engine, start_epoch_ticker};
use sha2::{Digest, Sha256};
use support::bench::BUDGET;
use wasmtime::component::Component;

/// Lines each driver logs per event: three working steps and a closing line.
const STEPS: u64 = 3;
const LINES: u64 = STEPS + 1;
/// Untimed events per driver before timing.
const WARMUP: usize = 20;
/// Instances held alive at once for the memory figure.
const LIVE: usize = 8;
/// Wall time spent timing each driver's events (at least `MIN_EVENTS` events).
const TIME_PER_DRIVER: Duration = Duration::from_secs(5);
const MIN_EVENTS: usize = 50;

struct Language {
    label: &'static str,
    driver: &'static str,
    kind: &'static str,
    wasm: PathBuf,
}

/// The API client the drivers read back through: it answers from memory.
struct MemoryClient;

#[async_trait::async_trait]
impl ApiClient for MemoryClient {
    async fn get_resource(&self, kind: &str, name: &str) -> Result<String, ClientError> {
        Ok(serde_json::json!({
            "id": "00000000-0000-0000-0000-000000000001",
            "name": name,
            "resource": kind,
            "metadata": {"version": "1"},
            "spec": {"steps": STEPS},
        })
        .to_string())
    }

    async fn create_resource(&self, _json: &str) -> Result<Created, ClientError> {
        Err(ClientError::Denied("the benchmark creates nothing".into()))
    }

    async fn update_resource(&self, _: &str, _: &str, _: &str) -> Result<String, ClientError> {
        Err(ClientError::Denied("the benchmark updates nothing".into()))
    }

    async fn get_resource_definition(&self, name: &str) -> Result<String, ClientError> {
        Ok(serde_json::json!({
            "name": name,
            "description": "benchmark tasks",
            "version": "1.0.0",
            "schema": {"type": "object"},
        })
        .to_string())
    }
}

/// Counts lines; with a gate set, the first line of each run waits until the gate opens, which
/// holds that run's instance alive (for the memory figure).
#[derive(Default)]
struct Sink {
    lines: AtomicU64,
    gate: Mutex<Option<HashSet<String>>>,
    opened: Condvar,
    held: AtomicUsize,
}

impl LogSink for Sink {
    fn write(&self, line: Log) {
        self.lines.fetch_add(1, Ordering::Relaxed);
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        let first = gate.as_mut().is_some_and(|seen| seen.insert(line.runid));
        if first {
            self.held.fetch_add(1, Ordering::SeqCst);
            while gate.is_some() {
                gate = self.opened.wait(gate).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

struct Bench {
    sandbox: Sandbox,
    sink: Arc<Sink>,
    client: Arc<dyn ApiClient>,
}

impl Bench {
    async fn event(&self, lang: &Language, pre: &DriverPre<RunState>, run_id: &str) -> RunOutcome {
        let payload = serde_json::json!({
            "id": "00000000-0000-0000-0000-000000000001",
            "name": "bench",
            "resource": lang.kind,
            "metadata": {"version": "1"},
            "spec": {"steps": STEPS},
        })
        .to_string();
        let event = Event {
            name: "create".into(),
            payload,
            run_id: run_id.into(),
            message_id: "0123456789abcdef01234567".into(),
            pipeline: None,
            attempt: 1,
        };
        let ctx = RunContext {
            logger: RunLogger::new(self.sink.clone(), lang.driver, run_id, None)
                .with_budget(10_000, 1 << 20),
            client: self.client.clone(),
            grants: Grants::none(),
            cancel: Default::default(),
        };
        self.sandbox
            .reconcile(pre, event, ctx, BUDGET)
            .await
            .outcome
    }

    /// One event, checked: a driver that fails is not benchmarked as a fast one.
    async fn check(&self, lang: &Language, pre: &DriverPre<RunState>) {
        let before = self.sink.lines.load(Ordering::Relaxed);
        match self.event(lang, pre, "check").await {
            RunOutcome::Returned {
                outcome: GuestOutcome::Success,
                data: Some(data),
                ..
            } => {
                assert_eq!(data["language"], lang.label, "{data}");
                assert_eq!(
                    data["read_back"]["definition_description"],
                    "benchmark tasks"
                );
            }
            other => panic!("{}: the driver did not succeed: {other:?}", lang.driver),
        }
        let lines = self.sink.lines.load(Ordering::Relaxed) - before;
        assert_eq!(lines, LINES, "{}: lines logged", lang.driver);
    }
}

/// Builds the three drivers and returns them.
fn build() -> anyhow::Result<Vec<Language>> {
    let rust_dir = support::build_rust_drivers(&["rust-driver"])?;
    let python = support::build_example_driver("python-driver", "", &[])?;
    let js = support::build_example_driver("js-driver", "", &[])?;
    Ok(vec![
        Language {
            label: "rust",
            driver: "rust-driver",
            kind: "rust-task",
            wasm: rust_dir.join("rust_driver.wasm"),
        },
        Language {
            label: "python",
            driver: "python-driver",
            kind: "python-task",
            wasm: python,
        },
        Language {
            label: "javascript",
            driver: "js-driver",
            kind: "js-task",
            wasm: js,
        },
    ])
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

struct Loaded {
    size: u64,
    compile: Duration,
    artefact: u64,
    hash: Duration,
    deserialize: Duration,
    pre: DriverPre<RunState>,
}

/// Compiles a driver, then loads it back the way the cache does on a restart: hash the file
/// (its identity), then map the compiled artefact.
fn load(
    bench: &Bench,
    engine: &wasmtime::Engine,
    lang: &Language,
    scratch: &Path,
) -> anyhow::Result<Loaded> {
    let bytes = std::fs::read(&lang.wasm)?;
    let start = Instant::now();
    let compiled = Component::new(engine, &bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", lang.wasm.display()))?;
    let compile = start.elapsed();
    let artefact = scratch.join(format!("{}.cwasm", lang.driver));
    std::fs::write(&artefact, compiled.serialize()?)?;
    drop(compiled);

    let start = Instant::now();
    let bytes = std::fs::read(&lang.wasm)?;
    black_box(Sha256::digest(&bytes));
    let hash = start.elapsed();
    let start = Instant::now();
    // SAFETY: written just above by this engine.
    let component = unsafe { Component::deserialize_file(engine, &artefact) }?;
    let deserialize = start.elapsed();
    Ok(Loaded {
        size: bytes.len() as u64,
        compile,
        artefact: std::fs::metadata(&artefact)?.len(),
        hash,
        deserialize,
        pre: bench.sandbox.prepare(&component)?,
    })
}

/// Sequential events for `TIME_PER_DRIVER`: (events, mean, p50, p99).
async fn per_event(
    bench: &Bench,
    lang: &Language,
    pre: &DriverPre<RunState>,
) -> (usize, Duration, Duration, Duration) {
    for _ in 0..WARMUP {
        black_box(bench.event(lang, pre, "warmup").await);
    }
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < TIME_PER_DRIVER || times.len() < MIN_EVENTS {
        let t = Instant::now();
        black_box(bench.event(lang, pre, "timed").await);
        times.push(t.elapsed());
    }
    times.sort();
    let n = times.len();
    let mean = times.iter().sum::<Duration>() / n as u32;
    (n, mean, times[n / 2], times[(n * 99 / 100).min(n - 1)])
}

/// RSS growth per instance with `LIVE` instances of the driver alive at once.
fn live_memory(
    bench: &Arc<Bench>,
    lang: &Arc<Language>,
    pre: &Arc<DriverPre<RunState>>,
) -> anyhow::Result<u64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(LIVE + 2)
        .enable_all()
        .build()?;
    let before = rss_bytes();
    *bench.sink.gate.lock().unwrap_or_else(|p| p.into_inner()) = Some(HashSet::new());
    bench.sink.held.store(0, Ordering::SeqCst);
    let runs: Vec<_> = (0..LIVE)
        .map(|i| {
            let (bench, lang, pre) = (bench.clone(), lang.clone(), pre.clone());
            runtime.spawn(async move { bench.event(&lang, &pre, &format!("live-{i}")).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while bench.sink.held.load(Ordering::SeqCst) < LIVE {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}: instances did not all start",
            lang.driver
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let during = rss_bytes();
    *bench.sink.gate.lock().unwrap_or_else(|p| p.into_inner()) = None;
    bench.sink.opened.notify_all();
    for r in runs {
        let outcome = runtime.block_on(r)?;
        anyhow::ensure!(
            matches!(
                outcome,
                RunOutcome::Returned {
                    outcome: GuestOutcome::Success,
                    ..
                }
            ),
            "{}: a held instance failed: {outcome:?}",
            lang.driver
        );
    }
    Ok(during.saturating_sub(before) / LIVE as u64)
}

fn main() -> anyhow::Result<()> {
    // `cargo test --benches` runs every bench target once; this one takes minutes.
    if std::env::args().all(|a| a != "--bench") {
        println!("languages: run with `cargo bench --bench languages`");
        return Ok(());
    }
    let languages: Vec<Arc<Language>> = build()?.into_iter().map(Arc::new).collect();

    let engine = build_engine(&EngineSettings {
        pool_instances: 64,
        max_memory: 64 << 20,
    })?;
    start_epoch_ticker(&engine)?;
    let bench = Arc::new(Bench {
        sandbox: Sandbox::new(engine.clone())?,
        sink: Arc::default(),
        client: Arc::new(MemoryClient),
    });
    let scratch = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let mut rows = Vec::new();
    for lang in &languages {
        eprintln!("{}: compiling", lang.driver);
        let loaded = load(&bench, &engine, lang, scratch.path())?;
        runtime.block_on(bench.check(lang, &loaded.pre));
        eprintln!("{}: timing events", lang.driver);
        let events = runtime.block_on(per_event(&bench, lang, &loaded.pre));
        let pre = Arc::new(loaded.pre.clone());
        let memory = live_memory(&bench, lang, &pre)?;
        rows.push((lang.clone(), loaded, events, memory));
    }

    let baseline = rows[0].2.1.as_secs_f64();
    println!();
    println!(
        "per event: the same driver ({LINES} log lines, 2 API client reads, JSON result), \
         fresh instance each, sequential, same run"
    );
    println!(
        "{:<11} {:>7} {:>10} {:>10} {:>10} {:>9}",
        "language", "events", "mean", "p50", "p99", "vs rust"
    );
    for (lang, _, (n, mean, p50, p99), _) in &rows {
        println!(
            "{:<11} {:>7} {:>10} {:>10} {:>10} {:>8.1}x",
            lang.label,
            n,
            support::format_duration(*mean),
            support::format_duration(*p50),
            support::format_duration(*p99),
            mean.as_secs_f64() / baseline
        );
    }
    println!();
    println!("compile once, then load from the compile cache (restart)");
    println!(
        "{:<11} {:>10} {:>10} {:>10} {:>10} {:>12} {:>14}",
        "language", ".wasm", "compile", ".cwasm", "sha256", "deserialize", "live instance"
    );
    for (lang, l, _, memory) in &rows {
        println!(
            "{:<11} {:>10} {:>10} {:>10} {:>10} {:>12} {:>14}",
            lang.label,
            mib(l.size),
            support::format_duration(l.compile),
            mib(l.artefact),
            support::format_duration(l.hash),
            support::format_duration(l.deserialize),
            mib(*memory)
        );
    }
    println!(
        "(live instance: RSS growth per instance with {LIVE} instances of the driver alive at once)"
    );
    Ok(())
}
