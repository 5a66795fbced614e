//! The per-event sandbox path, against the raw wasmtime floor beneath it.
//!
//! Every event runs in a fresh instance, so the cost of setting one up and tearing it down is
//! paid on every delivery. This benchmark measures, in one run so that the figures compare:
//!
//! - `floor/<driver>`: what wasmtime itself costs: a fresh `Store` with a bare state (an empty
//!   WASI context, `wasi:http` with wasmtime's default hooks, imports that do nothing), `instantiate_async` from the `InstancePre` and one
//!   call of `reconcile`. No log capture, no memory limiter, no epoch callback, no timeout.
//!   It uses the host's engine (the same pooling allocator and compiled code) but its own
//!   linker, because the host's store state cannot be built outside the crate.
//! - `sandbox/<driver>`: the host's real per-event path, `Sandbox::reconcile`, with stdout and
//!   stderr captured into the run's log, the memory limiter, the wall-clock deadline (epoch
//!   callback and Tokio timeout) and the result's conversion. Log lines go to a sink that only
//!   counts them, so the log store (SQLite) is not measured.
//!
//! `noop` is a driver that returns at once; `log5` is the test driver logging five lines.
//!
//! A last figure, `noisy neighbour`, is the noop driver's latency (mean and p99) on a
//! two-worker runtime while two hostile guests spin in Wasm next to it (each stopped by its
//! CPU budget and started again), against the same loop with no neighbours: what one bad
//! driver costs the others.
//!
//! The floor matters because it is what no change to the host can remove: the sandbox's
//! figure minus the floor is the host's own overhead, and the ratio printed at the end says
//! whether the host's bookkeeping is in proportion to the instantiation it wraps. Criterion
//! reports each case; a second, plain timed loop (floor and sandbox interleaved) gives the
//! means for that summary table.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use conveyor_host::NoClient;
use conveyor_host::RunLogger;
use conveyor_host::RunState;
use conveyor_host::bindings::conveyor::driver::{client, log, types};
use conveyor_host::bindings::{ClientError, Created, Driver, DriverPre, Event, Outcome};
use conveyor_host::{ApiClient, Grants, GuestOutcome, Limits, RunContext, RunOutcome, Sandbox};
use conveyor_host::{EngineSettings, build_engine, start_epoch_ticker};
use criterion::Criterion;
use support::bench::{BUDGET, CountingSink};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

const NOOP_PAYLOAD: &str =
    r#"{"id":"1","name":"b","resource":"noop","metadata":{"version":"1"},"spec":{}}"#;
const LOG5_PAYLOAD: &str = r#"{"id":"1","name":"b","resource":"test","metadata":{"version":"1"},"spec":{"action":"ok","lines":5}}"#;
const LOOP_PAYLOAD: &str = r#"{"id":"1","name":"b","resource":"test","metadata":{"version":"1"},"spec":{"action":"loop"}}"#;

/// The spinning neighbours' budget: each run ends as cpu-exceeded after 300 ms of Wasm.
const NEIGHBOUR_BUDGET: Limits = Limits {
    timeout: Duration::from_secs(5),
    cpu: Duration::from_millis(300),
    memory: 64 << 20,
    result_size: 1 << 20,
    log_lines: 10_000,
    log_bytes: 1 << 20,
};
/// Noop events timed with and without neighbours.
const NEIGHBOUR_EVENTS: usize = 1_000;

/// Iterations of the summary's timed loop, per case.
const SUMMARY_ITERATIONS: u32 = 2_000;
/// The summary's loop alternates floor and sandbox in this many rounds, so that drift in the
/// machine's speed (other load, frequency changes) hits both alike.
const SUMMARY_ROUNDS: u32 = 10;
/// Untimed iterations before the summary's loop.
const SUMMARY_WARMUP: u32 = 200;

// ---- the floor: a bare store state ------------------------------------------------------

/// The floor's store state: an empty WASI context and a count of `log` calls (so the bench
/// can check the guest really logged), nothing else.
struct FloorState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    logged: u32,
}

impl FloorState {
    fn new() -> Self {
        FloorState {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            logged: 0,
        }
    }
}

/// `wasi:http` is linked (with wasmtime's default hooks) only so that drivers importing it
/// link on the floor too; the benchmarked drivers make no requests.
impl WasiHttpView for FloorState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

impl WasiView for FloorState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for FloorState {}

impl log::Host for FloorState {
    async fn log(
        &mut self,
        _labels: Vec<(String, String)>,
        _message: String,
    ) -> wasmtime::Result<()> {
        self.logged += 1;
        Ok(())
    }
}

const FLOOR_DENIED: &str = "the floor benchmark has no API client";

impl client::Host for FloorState {
    async fn get_resource(
        &mut self,
        _: String,
        _: String,
    ) -> wasmtime::Result<Result<String, ClientError>> {
        Ok(Err(ClientError::Denied(FLOOR_DENIED.into())))
    }

    async fn create_resource(
        &mut self,
        _: String,
    ) -> wasmtime::Result<Result<Created, ClientError>> {
        Ok(Err(ClientError::Denied(FLOOR_DENIED.into())))
    }

    async fn update_resource(
        &mut self,
        _: String,
        _: String,
        _: String,
    ) -> wasmtime::Result<Result<String, ClientError>> {
        Ok(Err(ClientError::Denied(FLOOR_DENIED.into())))
    }

    async fn get_resource_definition(
        &mut self,
        _: String,
    ) -> wasmtime::Result<Result<String, ClientError>> {
        Ok(Err(ClientError::Denied(FLOOR_DENIED.into())))
    }
}

fn floor_linker(engine: &Engine) -> anyhow::Result<Linker<FloorState>> {
    let mut linker = Linker::new(engine);
    Driver::add_to_linker::<FloorState, HasSelf<FloorState>>(&mut linker, |s| s)?;
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// One event on the floor: a fresh store, instantiate, call `reconcile`, drop the store.
/// Returns the outcome and how many lines the guest logged.
async fn floor_once(engine: &Engine, pre: &DriverPre<FloorState>, event: Event) -> (Outcome, u32) {
    let mut store = Store::new(engine, FloorState::new());
    // The engine has epoch interruption on (the host's deadlines need it), and a store's
    // deadline starts at 0, which the ticker has long passed: push it out of reach instead
    // of installing the host's callback.
    store.set_epoch_deadline(u64::MAX / 2);
    let driver = pre
        .instantiate_async(&mut store)
        .await
        .expect("floor: instantiate");
    let result = driver
        .call_reconcile(&mut store, &event)
        .await
        .expect("floor: call reconcile");
    (result.outcome, store.data().logged)
}

// ---- the sandbox: the host's path ---------------------------------------------------------

/// One driver under test, prepared for both paths.
struct Case {
    name: &'static str,
    payload: &'static str,
    expected_lines: u32,
    floor: DriverPre<FloorState>,
    sandbox: DriverPre<RunState>,
}

/// Everything shared by the cases.
struct Bench {
    engine: Engine,
    sandbox: Sandbox,
    sink: Arc<CountingSink>,
    client: Arc<dyn ApiClient>,
}

impl Bench {
    fn event(payload: &str) -> Event {
        Event {
            name: "create".into(),
            payload: payload.into(),
            run_id: "0123456789abcdef0123456789abcdef".into(),
            message_id: "0123456789abcdef01234567".into(),
            pipeline: None,
            attempt: 1,
        }
    }

    async fn floor(&self, case: &Case) -> (Outcome, u32) {
        floor_once(&self.engine, &case.floor, Bench::event(case.payload)).await
    }

    async fn sandbox(&self, case: &Case) -> RunOutcome {
        self.sandbox_with(case, BUDGET).await
    }

    async fn sandbox_with(&self, case: &Case, budget: Limits) -> RunOutcome {
        let event = Bench::event(case.payload);
        // As the manager builds it: the default log budget, no grants.
        let logger = RunLogger::new(self.sink.clone(), case.name, &event.run_id, None)
            .with_budget(10_000, 1 << 20);
        let ctx = RunContext {
            logger,
            client: self.client.clone(),
            grants: Grants::none(),
            cancel: Default::default(),
        };
        self.sandbox
            .reconcile(&case.sandbox, event, ctx, budget)
            .await
            .outcome
    }

    /// Runs each path once and checks that it did what the case expects, so that a broken
    /// driver or a failing sandbox is not benchmarked as a fast one.
    async fn check(&self, case: &Case) {
        let (outcome, logged) = self.floor(case).await;
        assert!(
            matches!(outcome, Outcome::Success),
            "floor/{}: the driver did not succeed: {outcome:?}",
            case.name
        );
        assert_eq!(
            logged, case.expected_lines,
            "floor/{}: lines logged",
            case.name
        );

        let before = self.sink.lines();
        let outcome = self.sandbox(case).await;
        assert!(
            matches!(
                outcome,
                RunOutcome::Returned {
                    outcome: GuestOutcome::Success,
                    ..
                }
            ),
            "sandbox/{}: the driver did not succeed: {outcome:?}",
            case.name
        );
        let lines = self.sink.lines() - before;
        assert_eq!(
            lines,
            u64::from(case.expected_lines),
            "sandbox/{}: lines logged",
            case.name
        );
    }
}

// ---- the guest components ----------------------------------------------------------------

/// Builds the guest drivers (a no-op when they are up to date) and returns the directory
/// holding their `.wasm` files. A failed build is fatal only when the files are missing.
fn build_drivers() -> PathBuf {
    let files = ["noop_driver.wasm", "test_driver.wasm"];
    let built = support::build_rust_drivers(&["noop-driver", "test-driver"]);
    let dir = support::target_dir().join("wasm32-wasip2").join("release");
    let missing: Vec<_> = files.iter().filter(|f| !dir.join(f).is_file()).collect();
    match built {
        Ok(_) if missing.is_empty() => {}
        _ if missing.is_empty() => {
            eprintln!(
                "warning: building the guest drivers failed ({built:?}); using the existing files"
            );
        }
        _ => panic!(
            "the guest drivers {missing:?} are missing from {} and building them failed ({built:?})",
            dir.display()
        ),
    }
    dir
}

// ---- the run ------------------------------------------------------------------------------

fn mean(total: Duration, n: u32) -> Duration {
    total / n
}

/// Whether this is a real benchmark run (`cargo bench`), rather than `cargo test --benches`,
/// `--list` or `--profile-time`, where the summary's extra minute is not wanted.
fn is_full_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench")
        && !args
            .iter()
            .any(|a| a == "--list" || a == "--test" || a.starts_with("--profile-time"))
}

fn main() -> anyhow::Result<()> {
    let dir = build_drivers();

    let engine = build_engine(&EngineSettings {
        pool_instances: 64,
        max_memory: 64 << 20,
    })?;
    start_epoch_ticker(&engine)?;
    let sandbox = Sandbox::new(engine.clone())?;
    let linker = floor_linker(&engine)?;

    let mut cases = Vec::new();
    let mut neighbour = None;
    for (name, file, payload, expected_lines) in [
        ("noop", "noop_driver.wasm", NOOP_PAYLOAD, 0),
        ("log5", "test_driver.wasm", LOG5_PAYLOAD, 5),
    ] {
        let path = dir.join(file);
        let component = Component::from_file(&engine, &path)
            .map_err(|e| anyhow::anyhow!("compiling {}: {e:#}", path.display()))?;
        if name == "log5" {
            neighbour = Some(Case {
                name: "loop",
                payload: LOOP_PAYLOAD,
                expected_lines: 0,
                floor: DriverPre::new(linker.instantiate_pre(&component)?)?,
                sandbox: sandbox.prepare(&component)?,
            });
        }
        cases.push(Case {
            name,
            payload,
            expected_lines,
            floor: DriverPre::new(linker.instantiate_pre(&component)?)?,
            sandbox: sandbox.prepare(&component)?,
        });
    }
    let neighbour = Arc::new(neighbour.expect("the test driver is among the cases"));

    let bench = Arc::new(Bench {
        engine,
        sandbox,
        sink: Arc::new(CountingSink::default()),
        client: Arc::new(NoClient("the benchmark has no API client")),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for case in &cases {
        runtime.block_on(bench.check(case));
    }

    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .sample_size(50)
        .configure_from_args();
    for (group, sandboxed) in [("floor", false), ("sandbox", true)] {
        let mut g = criterion.benchmark_group(group);
        for case in &cases {
            g.bench_function(case.name, |b| {
                b.to_async(&runtime).iter(|| async {
                    if sandboxed {
                        black_box(bench.sandbox(case).await);
                    } else {
                        black_box(bench.floor(case).await);
                    }
                })
            });
        }
        g.finish();
    }
    criterion.final_summary();

    if !is_full_run() {
        return Ok(());
    }

    let per_round = SUMMARY_ITERATIONS / SUMMARY_ROUNDS;
    let mut rows = Vec::new();
    for case in &cases {
        let (floor, sandboxed) = runtime.block_on(async {
            for _ in 0..SUMMARY_WARMUP {
                black_box(bench.floor(case).await);
                black_box(bench.sandbox(case).await);
            }
            let (mut floor, mut sandboxed) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..SUMMARY_ROUNDS {
                let start = Instant::now();
                for _ in 0..per_round {
                    black_box(bench.floor(case).await);
                }
                floor += start.elapsed();
                let start = Instant::now();
                for _ in 0..per_round {
                    black_box(bench.sandbox(case).await);
                }
                sandboxed += start.elapsed();
            }
            (floor, sandboxed)
        });
        let n = per_round * SUMMARY_ROUNDS;
        rows.push((case.name, mean(floor, n), mean(sandboxed, n)));
    }

    println!();
    println!(
        "per-event cost (mean of {}, same run)",
        per_round * SUMMARY_ROUNDS
    );
    println!(
        "{:<8} {:>10} {:>10} {:>7}",
        "driver", "floor", "sandbox", "ratio"
    );
    for (name, floor, sandboxed) in rows {
        let ratio = sandboxed.as_secs_f64() / floor.as_secs_f64();
        println!(
            "{name:<8} {:>10} {:>10} {:>6.2}x",
            support::format_duration(floor),
            support::format_duration(sandboxed),
            ratio
        );
    }

    let noop = Arc::new(cases.swap_remove(0));
    let (quiet, noisy) = noisy_neighbour(&bench, &noop, &neighbour)?;
    println!();
    println!(
        "noisy neighbour: noop on 2 worker threads, {NEIGHBOUR_EVENTS} events one after another"
    );
    println!("{:<28} {:>10} {:>10}", "", "mean", "p99");
    for (label, (mean, p99)) in [("alone", quiet), ("beside 2 spinning guests", noisy)] {
        println!(
            "{label:<28} {:>10} {:>10}",
            support::format_duration(mean),
            support::format_duration(p99)
        );
    }
    Ok(())
}

/// The noop driver's latency alone, then with two guests spinning beside it.
fn noisy_neighbour(
    bench: &Arc<Bench>,
    noop: &Arc<Case>,
    spinner: &Arc<Case>,
) -> anyhow::Result<((Duration, Duration), (Duration, Duration))> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let measure = |bench: Arc<Bench>, noop: Arc<Case>| async move {
        let mut times = Vec::with_capacity(NEIGHBOUR_EVENTS);
        for _ in 0..NEIGHBOUR_EVENTS {
            let start = Instant::now();
            black_box(bench.sandbox(&noop).await);
            times.push(start.elapsed());
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / NEIGHBOUR_EVENTS as u32;
        (mean, times[NEIGHBOUR_EVENTS * 99 / 100])
    };
    let quiet = runtime.block_on(runtime.spawn(measure(bench.clone(), noop.clone())))?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let (bench, spinner, stop) = (bench.clone(), spinner.clone(), stop.clone());
            runtime.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = bench.sandbox_with(&spinner, NEIGHBOUR_BUDGET).await;
                    assert!(
                        matches!(&outcome, RunOutcome::Failed { kind, .. } if kind.as_str() == "cpu-exceeded"),
                        "the spinning guest should end as cpu-exceeded: {outcome:?}"
                    );
                }
            })
        })
        .collect();
    // Let the spinners get going before timing.
    std::thread::sleep(Duration::from_millis(100));
    let noisy = runtime.block_on(runtime.spawn(measure(bench.clone(), noop.clone())))?;
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        runtime.block_on(s)?;
    }
    Ok((quiet, noisy))
}
