//! One event's sandbox: a fresh `Store` and instance from the driver's `InstancePre`, the
//! WASI context (nothing granted: no files, no environment, no network; stdout and stderr go
//! to the run's log), a memory limit and a wall-clock deadline, the call, and what became of
//! it. The store is dropped when the call ends, so nothing survives into the next event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{Driver, DriverPre, DriverResult, Event, Outcome, WitDriverInfo};
use super::imports::client::{ApiClient, NoClient};
use super::imports::log::RunLogger;
use super::imports::stdio::LogStream;

/// The budgets of one call.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Wall-clock limit, including time blocked in host calls.
    pub timeout: Duration,
    /// Linear-memory limit, in bytes.
    pub memory: u64,
}

/// What a run may use besides its budgets.
pub struct RunContext {
    /// The run's logger.
    pub logger: RunLogger,
    /// The API client answering the `client` import.
    pub client: Arc<dyn ApiClient>,
}

/// How a sandboxed call failed, the same word in results, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The guest trapped: a Rust panic, an `unreachable`, an out-of-bounds access.
    Trap,
    /// The call ran past its wall-clock timeout.
    WallTimeout,
    /// The guest tried to grow its memory past the limit.
    MemoryExceeded,
    /// The component could not be instantiated (for example the instance pool was full).
    Instantiate,
    /// The guest returned a result the host cannot use (data that is not JSON).
    InvalidResult,
}

impl FailureKind {
    /// The kind's name, as used in results, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::WallTimeout => "wall-timeout",
            FailureKind::MemoryExceeded => "memory-exceeded",
            FailureKind::Instantiate => "instantiate",
            FailureKind::InvalidResult => "invalid-result",
        }
    }

    /// Whether another attempt might succeed. A trap, a timeout or running out of memory can
    /// depend on the input, the load or a remote service, so they are retried up to the
    /// attempt limit; a malformed result will not change.
    pub fn is_transient(self) -> bool {
        !matches!(self, FailureKind::InvalidResult)
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the driver said about its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestOutcome {
    /// Done.
    Success,
    /// Failed for good.
    Failure,
    /// Failed; try again, after at least this delay if given.
    Retry(Option<Duration>),
}

/// How one sandboxed reconcile ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// The driver returned a result.
    Returned {
        /// Its verdict.
        outcome: GuestOutcome,
        /// Its message.
        message: String,
        /// Its data, parsed.
        data: Option<serde_json::Value>,
    },
    /// The sandbox stopped the call, or the call failed.
    Failed {
        /// What happened.
        kind: FailureKind,
        /// A sentence saying so, with the panic text for a panic.
        message: String,
    },
}

/// A reconcile's outcome and how long instantiating the component took (`None` when it did
/// not get that far).
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciled {
    /// How it ended.
    pub outcome: RunOutcome,
    /// Time spent instantiating from the `InstancePre`.
    pub instantiate: Option<Duration>,
}

/// The per-store state: the WASI context and what the imports need.
pub struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    pub(crate) logger: RunLogger,
    pub(crate) client: Arc<dyn ApiClient>,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl super::bindings::conveyor::driver::types::Host for RunState {}

/// Raised from the epoch callback when the wall-clock deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// Raised by the limiter when a memory would grow past the limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded: the guest asked for {desired} bytes in all")]
struct MemoryExceeded {
    limit: usize,
    desired: usize,
}

/// Caps the sum of the instance's linear memories (a component may have several), not just
/// each one.
struct MemoryLimiter {
    limit: usize,
    used: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            // An error (rather than `Ok(false)`) traps at once with a precise reason, instead
            // of letting the guest's allocator abort with a less helpful message.
            return Err(wasmtime::Error::new(MemoryExceeded {
                limit: self.limit,
                desired: total,
            }));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pool's `table_elements`.
        Ok(true)
    }
}

/// The linker with every import a driver may use, and the engine it belongs to.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<RunState>,
}

impl Sandbox {
    /// Builds the linker: the driver world's imports and WASI p2.
    pub fn new(engine: Engine) -> wasmtime::Result<Sandbox> {
        let mut linker = Linker::new(&engine);
        Driver::add_to_linker::<RunState, HasSelf<RunState>>(&mut linker, |s| s)?;
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Ok(Sandbox { engine, linker })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Links a component once, so each event only instantiates. Fails with a message naming
    /// the missing import or export when the component does not fit the `driver` world.
    pub fn prepare(&self, component: &Component) -> wasmtime::Result<DriverPre<RunState>> {
        DriverPre::new(self.linker.instantiate_pre(component)?)
    }

    /// Calls `info()` in a throwaway instance.
    pub async fn info(
        &self,
        pre: &DriverPre<RunState>,
        logger: RunLogger,
    ) -> Result<WitDriverInfo, RunFailure> {
        let ctx = RunContext {
            logger,
            client: Arc::new(NoClient("the API client is not available during info()")),
        };
        let budget = Budget {
            timeout: Duration::from_secs(10),
            memory: 256 << 20,
        };
        self.call(pre, ctx, budget, |driver, store| {
            Box::pin(async move { driver.call_info(store).await })
        })
        .await
    }

    /// Runs `reconcile` for one event in a fresh instance.
    pub async fn reconcile(
        &self,
        pre: &DriverPre<RunState>,
        event: Event,
        ctx: RunContext,
        budget: Budget,
    ) -> RunOutcome {
        self.reconcile_timed(pre, event, ctx, budget).await.outcome
    }

    /// [`Sandbox::reconcile`], also reporting how long instantiation took.
    pub async fn reconcile_timed(
        &self,
        pre: &DriverPre<RunState>,
        event: Event,
        ctx: RunContext,
        budget: Budget,
    ) -> Reconciled {
        let (result, instantiate) = self
            .call_timed(pre, ctx, budget, move |driver, store| {
                Box::pin(async move { driver.call_reconcile(store, &event).await })
            })
            .await;
        let outcome = match result {
            Ok(r) => returned(r),
            Err(f) => RunOutcome::Failed {
                kind: f.kind,
                message: f.message,
            },
        };
        Reconciled {
            outcome,
            instantiate,
        }
    }

    async fn call<R>(
        &self,
        pre: &DriverPre<RunState>,
        ctx: RunContext,
        budget: Budget,
        f: impl for<'a> FnOnce(
            &'a Driver,
            &'a mut Store<RunState>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>,
        >,
    ) -> Result<R, RunFailure> {
        self.call_timed(pre, ctx, budget, f).await.0
    }

    async fn call_timed<R>(
        &self,
        pre: &DriverPre<RunState>,
        ctx: RunContext,
        budget: Budget,
        f: impl for<'a> FnOnce(
            &'a Driver,
            &'a mut Store<RunState>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>,
        >,
    ) -> (Result<R, RunFailure>, Option<Duration>) {
        let stdout = LogStream::new(ctx.logger.clone(), "stdout");
        let stderr = LogStream::new(ctx.logger.clone(), "stderr");
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let limit = usize::try_from(budget.memory).unwrap_or(usize::MAX);
        let mut store = Store::new(
            &self.engine,
            RunState {
                wasi,
                table: ResourceTable::new(),
                limiter: MemoryLimiter { limit, used: 0 },
                logger: ctx.logger,
                client: ctx.client,
            },
        );
        store.limiter(|s| &mut s.limiter);
        // Epochs catch a guest spinning in Wasm; the outer timeout catches one blocked in a
        // host call (a sleep, say). Until the deadline, each tick yields to Tokio so that a
        // busy guest shares its thread with the other runs.
        let deadline = Instant::now() + budget.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });

        let mut instantiate = None;
        let outcome = tokio::time::timeout(budget.timeout, async {
            let started = Instant::now();
            let driver = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| (Stage::Instantiate, e))?;
            instantiate = Some(started.elapsed());
            f(&driver, &mut store).await.map_err(|e| (Stage::Call, e))
        })
        .await;
        stdout.finish();
        stderr.finish();
        let result = match outcome {
            Ok(Ok(r)) => Ok(r),
            Err(_) => Err(RunFailure::timeout(budget.timeout)),
            Ok(Err((stage, e))) => Err(classify(stage, &e, &stderr.tail(), budget.timeout)),
        };
        (result, instantiate)
    }
}

/// A sandbox failure: its kind and a sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFailure {
    /// What happened.
    pub kind: FailureKind,
    /// Says what happened.
    pub message: String,
}

impl RunFailure {
    fn timeout(limit: Duration) -> Self {
        RunFailure {
            kind: FailureKind::WallTimeout,
            message: format!(
                "the driver did not finish within its {} timeout",
                humantime::format_duration(limit)
            ),
        }
    }
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    Instantiate,
    Call,
}

fn classify(stage: Stage, e: &wasmtime::Error, stderr: &str, timeout: Duration) -> RunFailure {
    if e.is::<DeadlineExceeded>() {
        return RunFailure::timeout(timeout);
    }
    if let Some(m) = e.downcast_ref::<MemoryExceeded>() {
        return RunFailure {
            kind: FailureKind::MemoryExceeded,
            message: format!("the driver ran out of memory: {m}"),
        };
    }
    let panic = panic_text(stderr);
    match (stage, e.downcast_ref::<Trap>(), panic) {
        (_, _, Some(panic)) => RunFailure {
            kind: FailureKind::Trap,
            message: format!("the driver panicked: {panic}"),
        },
        (_, Some(trap), None) => RunFailure {
            kind: FailureKind::Trap,
            message: format!("the driver trapped: {trap}"),
        },
        (Stage::Instantiate, None, None) => RunFailure {
            kind: FailureKind::Instantiate,
            message: format!("the driver could not be instantiated: {e:#}"),
        },
        (Stage::Call, None, None) => RunFailure {
            kind: FailureKind::Trap,
            message: format!("the driver failed: {e:#}"),
        },
    }
}

/// Rust's panic message on stderr: the lines from `panicked at` up to the `note:` hint.
fn panic_text(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at")?;
    let text: Vec<&str> = stderr[start..]
        .lines()
        .take_while(|l| !l.starts_with("note:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Some(text.join(" "))
}

fn returned(r: DriverResult) -> RunOutcome {
    let data = match r.data.as_deref().map(serde_json::from_str) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            return RunOutcome::Failed {
                kind: FailureKind::InvalidResult,
                message: format!("the driver returned `data` that is not JSON: {e}"),
            };
        }
    };
    let outcome = match r.outcome {
        Outcome::Success => GuestOutcome::Success,
        Outcome::Failure => GuestOutcome::Failure,
        Outcome::Retry(ms) => GuestOutcome::Retry(ms.map(Duration::from_millis)),
    };
    RunOutcome::Returned {
        outcome,
        message: r.message,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_text_is_extracted() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:4:9:\nboom: bad spec\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_text(stderr).unwrap(),
            "panicked at src/lib.rs:4:9: boom: bad spec"
        );
        assert_eq!(panic_text("just output"), None);
    }

    #[test]
    fn bad_data_is_an_invalid_result() {
        let r = returned(DriverResult {
            outcome: Outcome::Success,
            message: "m".into(),
            data: Some("{not json".into()),
        });
        assert!(matches!(
            r,
            RunOutcome::Failed {
                kind: FailureKind::InvalidResult,
                ..
            }
        ));
    }
}
