//! What the benches share: a log sink that only counts, the budget they run drivers with, and
//! the sandbox floor (the same reconciles with no store and no broker).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use conveyor_host::bindings::Event;
use conveyor_host::{
    ApiClient, EngineSettings, Grants, Limits, Log, LogSink, NoClient, RunContext, RunLogger,
    Sandbox, build_engine, start_epoch_ticker,
};

/// The budget of a benchmarked reconcile: the host's defaults, so that it measures the path
/// a real event takes.
pub const BUDGET: Limits = Limits {
    timeout: Duration::from_secs(30),
    cpu: Duration::from_secs(10),
    memory: 64 << 20,
    result_size: 1 << 20,
    log_lines: 10_000,
    log_bytes: 1 << 20,
};

/// A log sink that only counts lines, so that no log store is measured.
#[derive(Default)]
pub struct CountingSink(AtomicU64);

impl CountingSink {
    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl LogSink for CountingSink {
    fn write(&self, line: Log) {
        black_box(line);
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Events a second through `Sandbox::reconcile` of `wasm` with `payload`, 16 at a time on two
/// workers, with no store and no broker: the floor under any backend's figure.
pub fn sandbox_floor(wasm: &Path, payload: &str, n: usize) -> anyhow::Result<f64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let engine = build_engine(&EngineSettings {
            pool_instances: 64,
            max_memory: 64 << 20,
        })?;
        start_epoch_ticker(&engine)?;
        let sandbox = Arc::new(Sandbox::new(engine.clone())?);
        let component = wasmtime::component::Component::from_file(&engine, wasm)?;
        let pre = Arc::new(sandbox.prepare(&component)?);
        let sink = Arc::new(CountingSink::default());
        let client: Arc<dyn ApiClient> = Arc::new(NoClient("the benchmark has no API client"));
        let start = Instant::now();
        let per_task = n / 16;
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (sandbox, pre, sink, client) =
                (sandbox.clone(), pre.clone(), sink.clone(), client.clone());
            let payload = payload.to_string();
            tasks.push(tokio::spawn(async move {
                for _ in 0..per_task {
                    let event = Event {
                        name: "create".into(),
                        payload: payload.clone(),
                        run_id: "0123456789abcdef0123456789abcdef".into(),
                        message_id: "0123456789abcdef01234567".into(),
                        pipeline: None,
                        attempt: 1,
                    };
                    let logger = RunLogger::new(sink.clone(), "bench", &event.run_id, None)
                        .with_budget(10_000, 1 << 20);
                    let ctx = RunContext {
                        logger,
                        client: client.clone(),
                        grants: Grants::none(),
                        cancel: Default::default(),
                    };
                    black_box(sandbox.reconcile(&pre, event, ctx, BUDGET).await);
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        Ok((per_task * 16) as f64 / start.elapsed().as_secs_f64())
    })
}
