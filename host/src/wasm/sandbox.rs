//! One event's sandbox: a fresh `Store` and instance from the driver's `InstancePre`, the
//! WASI context (only what the driver is granted: directories, environment and secrets,
//! HTTP through an allow-list; never sockets; stdout and stderr go to the run's log), a
//! memory limit, a CPU budget and a wall-clock deadline, the call, and what became of it.
//! The store is dropped when the call ends, so nothing survives into the next event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::bindings::conveyor::driver::{client, log, types};
use super::bindings::{Driver, DriverPre, DriverResult, Event, Outcome, WitDriverInfo};
use super::engine::EPOCH_TICK;
use super::grants::Grants;
use super::imports::Types;
use super::imports::client::{ApiClient, ClientCtx, NoClient};
use super::imports::http::{Denials, HttpCtx};
use super::imports::log::{LogLimitExceeded, RunLogger};
use super::imports::stdio::LogStream;

/// The limits of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock limit, including time blocked in host calls.
    pub timeout: Duration,
    /// CPU limit: time spent executing WebAssembly, counted in epoch ticks.
    pub cpu: Duration,
    /// Linear-memory limit, in bytes.
    pub memory: u64,
    /// The largest result (message and data), in bytes.
    pub result_size: u64,
    /// Log lines the driver may write per run (stdout and stderr included).
    pub log_lines: u32,
    /// Log bytes (messages and label values) the driver may write per run.
    pub log_bytes: u64,
}

impl Limits {
    /// The limits of an `info()` call, which every driver gets whatever its config.
    pub const INFO: Limits = Limits {
        timeout: Duration::from_secs(10),
        cpu: Duration::from_secs(10),
        memory: 256 << 20,
        result_size: 1 << 20,
        log_lines: 10_000,
        log_bytes: 1 << 20,
    };
}

/// What a run may use besides its budgets.
pub struct RunContext {
    /// The run's logger (with the run's log budget and the driver's redactor).
    pub logger: RunLogger,
    /// The API client answering the `client` import.
    pub client: Arc<dyn ApiClient>,
    /// What the driver is granted.
    pub grants: Arc<Grants>,
    /// Cancelled when an operator cancels the run: the call stops at the next epoch tick, or
    /// at once when it is blocked in a host call.
    pub cancel: CancellationToken,
}

/// How a sandboxed call failed, the same word in results, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The guest trapped: a Rust panic, an `unreachable`, an out-of-bounds access.
    Trap,
    /// The guest executed WebAssembly for longer than its CPU budget.
    CpuExceeded,
    /// The call ran past its wall-clock timeout.
    WallTimeout,
    /// The guest tried to grow its memory past the limit.
    MemoryExceeded,
    /// The guest wrote more log lines or bytes than its budget.
    LogLimit,
    /// The guest failed after the host refused it something (an HTTP request outside its
    /// allow-list, say).
    Denied,
    /// The guest returned a result larger than its `result_size`.
    ResultTooLarge,
    /// The component could not be instantiated (for example the instance pool was full).
    Instantiate,
    /// The guest returned a result the host cannot use (data that is not JSON).
    InvalidResult,
    /// An operator cancelled the run.
    Cancelled,
}

impl FailureKind {
    /// The kind's name, as used in results, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::CpuExceeded => "cpu-exceeded",
            FailureKind::WallTimeout => "wall-timeout",
            FailureKind::MemoryExceeded => "memory-exceeded",
            FailureKind::LogLimit => "log-limit",
            FailureKind::Denied => "denied",
            FailureKind::ResultTooLarge => "result-too-large",
            FailureKind::Instantiate => "instantiate",
            FailureKind::InvalidResult => "invalid-result",
            FailureKind::Cancelled => "cancelled",
        }
    }

    /// The kind named `s` ([`FailureKind::as_str`]).
    pub fn parse(s: &str) -> Option<FailureKind> {
        [
            FailureKind::Trap,
            FailureKind::CpuExceeded,
            FailureKind::WallTimeout,
            FailureKind::MemoryExceeded,
            FailureKind::LogLimit,
            FailureKind::Denied,
            FailureKind::ResultTooLarge,
            FailureKind::Instantiate,
            FailureKind::InvalidResult,
            FailureKind::Cancelled,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Whether another attempt might succeed. A trap, a timeout or running out of memory can
    /// depend on the input, the load or a remote service, so they are retried up to the
    /// attempt limit; a malformed or oversized result, a log flood and a denial come from
    /// the driver's code or its grants and will not change.
    pub fn is_transient(self) -> bool {
        !matches!(
            self,
            FailureKind::InvalidResult
                | FailureKind::ResultTooLarge
                | FailureKind::LogLimit
                | FailureKind::Denied
                | FailureKind::Cancelled
        )
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

/// The per-store state: one context per capability (see [`super::imports`]), the resource
/// table WASI and `wasi:http` share, and the memory limiter. It only composes them: each
/// import is linked with a projection onto its own field.
pub struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: HttpCtx,
    log: RunLogger,
    client: ClientCtx,
    types: Types,
    limiter: MemoryLimiter,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RunState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.http.view(&mut self.table)
    }
}

/// Raised from the epoch callback when the wall-clock deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// Raised from the epoch callback when the run was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
struct Cancelled;

/// Raised from the epoch callback when the CPU budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("CPU budget exceeded")]
struct CpuExceeded;

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
    /// Builds the linker: the driver world's imports, WASI p2 and `wasi:http`. Linking an
    /// interface grants nothing by itself: what a call may reach is decided per driver by
    /// its WASI context and HTTP hooks.
    pub fn new(engine: Engine) -> wasmtime::Result<Sandbox> {
        let mut linker = Linker::new(&engine);
        types::add_to_linker::<RunState, HasSelf<Types>>(&mut linker, |s| &mut s.types)?;
        log::add_to_linker::<RunState, HasSelf<RunLogger>>(&mut linker, |s| &mut s.log)?;
        client::add_to_linker::<RunState, HasSelf<ClientCtx>>(&mut linker, |s| &mut s.client)?;
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
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

    /// Calls `info()` in a throwaway instance, within [`Limits::INFO`]: its log budget
    /// included, so a driver that floods the log from `info()` is stopped (`log-limit`) as a
    /// reconcile would be.
    pub async fn info(
        &self,
        pre: &DriverPre<RunState>,
        logger: RunLogger,
    ) -> Result<WitDriverInfo, RunFailure> {
        let ctx = RunContext {
            logger: info_logger(logger),
            client: Arc::new(NoClient("the API client is not available during info()")),
            grants: Grants::none(),
            cancel: CancellationToken::new(),
        };
        self.call_timed(pre, ctx, Limits::INFO, |driver, store| {
            Box::pin(async move { driver.call_info(store).await })
        })
        .await
        .0
        .map(|(info, _)| info)
    }

    /// Runs `reconcile` for one event in a fresh instance, and reports how it ended and how
    /// long instantiation took. Secrets are masked in the outcome (message, data, failure
    /// text) before it leaves the sandbox.
    pub async fn reconcile(
        &self,
        pre: &DriverPre<RunState>,
        event: Event,
        ctx: RunContext,
        budget: Limits,
    ) -> Reconciled {
        let redactor = ctx.grants.redactor.clone();
        let (result, instantiate) = self
            .call_timed(pre, ctx, budget, move |driver, store| {
                Box::pin(async move { driver.call_reconcile(store, &event).await })
            })
            .await;
        let (outcome, denials) = match result {
            Ok((r, denials)) => (returned(r, budget.result_size), denials),
            Err(f) => (
                RunOutcome::Failed {
                    kind: f.kind,
                    message: f.message,
                },
                f.denials,
            ),
        };
        let mut outcome = mark_denied(outcome, &denials);
        match &mut outcome {
            RunOutcome::Returned { message, data, .. } => {
                redactor.string(message);
                if let Some(d) = data {
                    redactor.json(d);
                }
            }
            RunOutcome::Failed { message, .. } => {
                redactor.string(message);
            }
        }
        Reconciled {
            outcome,
            instantiate,
        }
    }

    async fn call_timed<R>(
        &self,
        pre: &DriverPre<RunState>,
        ctx: RunContext,
        budget: Limits,
        f: impl for<'a> FnOnce(
            &'a Driver,
            &'a mut Store<RunState>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>,
        >,
    ) -> (Result<(R, Vec<String>), RunFailure>, Option<Duration>) {
        let stdout = LogStream::new(ctx.logger.clone(), "stdout");
        let stderr = LogStream::new(ctx.logger.clone(), "stderr");
        let wasi =
            match super::imports::wasi::context(&ctx.grants.wasi, stdout.clone(), stderr.clone()) {
                Ok(w) => w,
                Err(message) => {
                    return (
                        Err(RunFailure {
                            kind: FailureKind::Instantiate,
                            message,
                            denials: Vec::new(),
                        }),
                        None,
                    );
                }
            };
        let denials = Denials::default();
        let limit = usize::try_from(budget.memory).unwrap_or(usize::MAX);
        // The epoch ticks while this store lives (declared first, so dropped after it).
        let _ticking = super::engine::Ticking::start();
        let mut store = Store::new(
            &self.engine,
            RunState {
                wasi,
                table: ResourceTable::new(),
                http: HttpCtx::new(ctx.grants.http.clone(), denials.clone(), ctx.logger.clone()),
                client: ClientCtx::new(ctx.client, ctx.grants.redactor.clone(), ctx.logger.clone()),
                log: ctx.logger,
                types: Types,
                limiter: MemoryLimiter { limit, used: 0 },
            },
        );
        store.limiter(|s| &mut s.limiter);
        // Epochs catch a guest spinning in Wasm; the outer timeout catches one blocked in a
        // host call (a sleep, say). The callback runs once per tick while the guest executes
        // Wasm, and once when it comes back from a host call however long that took, so the
        // ticks it counts measure the guest's own CPU time at tick granularity. Until a limit
        // is hit, each tick yields to Tokio so that a busy guest shares its thread with the
        // other runs.
        let deadline = Instant::now() + budget.timeout;
        let cpu_ticks = budget.cpu.as_nanos().div_ceil(EPOCH_TICK.as_nanos()).max(1);
        let mut ticks: u128 = 0;
        let cancel = ctx.cancel.clone();
        let cancelled = ctx.cancel.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            ticks += 1;
            if cancel.is_cancelled() {
                Err(wasmtime::Error::new(Cancelled))
            } else if Instant::now() >= deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else if ticks > cpu_ticks {
                Err(wasmtime::Error::new(CpuExceeded))
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });

        let mut instantiate = None;
        let call = tokio::time::timeout(budget.timeout, async {
            let started = Instant::now();
            let driver = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| (Stage::Instantiate, e))?;
            instantiate = Some(started.elapsed());
            f(&driver, &mut store).await.map_err(|e| (Stage::Call, e))
        });
        // A guest blocked in a host call sees no epoch tick: the cancellation races the call.
        let outcome = tokio::select! {
            o = call => o,
            _ = cancelled.cancelled() => Ok(Err((Stage::Call, wasmtime::Error::new(Cancelled)))),
        };
        stdout.finish();
        stderr.finish();
        let denials = denials.all();
        let result = match outcome {
            Ok(Ok(r)) => Ok((r, denials)),
            Err(_) => Err(RunFailure::timeout(budget, denials)),
            Ok(Err((stage, e))) => Err(classify(stage, &e, &stderr.tail(), budget, denials)),
        };
        (result, instantiate)
    }
}

/// The logger of an `info()` call: `logger` within the log budget of [`Limits::INFO`].
fn info_logger(logger: RunLogger) -> RunLogger {
    logger.with_budget(Limits::INFO.log_lines, Limits::INFO.log_bytes)
}

/// A run that failed after the host refused it something is reported as `denied`, naming
/// what was refused; budget failures (a timeout, say) keep their own kind. A run that
/// succeeded anyway stays a success (the refusal is in its log).
fn mark_denied(outcome: RunOutcome, denials: &[String]) -> RunOutcome {
    let Some(first) = denials.first() else {
        return outcome;
    };
    let denied = |what: &str| {
        let more = match denials.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        RunOutcome::Failed {
            kind: FailureKind::Denied,
            message: format!("{what}; the host denied: {first}{more}"),
        }
    };
    match outcome {
        RunOutcome::Returned {
            outcome: GuestOutcome::Failure | GuestOutcome::Retry(_),
            message,
            ..
        } => denied(&message),
        RunOutcome::Failed {
            kind: FailureKind::Trap,
            message,
        } => denied(&message),
        other => other,
    }
}

/// A sandbox failure: its kind and a sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFailure {
    /// What happened.
    pub kind: FailureKind,
    /// Says what happened.
    pub message: String,
    /// What the host refused the run before it failed.
    pub denials: Vec<String>,
}

impl RunFailure {
    fn timeout(budget: Limits, denials: Vec<String>) -> Self {
        RunFailure {
            kind: FailureKind::WallTimeout,
            message: format!(
                "the driver did not finish within its {} timeout",
                humantime::format_duration(budget.timeout)
            ),
            denials,
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

fn classify(
    stage: Stage,
    e: &wasmtime::Error,
    stderr: &str,
    budget: Limits,
    denials: Vec<String>,
) -> RunFailure {
    if e.is::<DeadlineExceeded>() {
        return RunFailure::timeout(budget, denials);
    }
    if e.is::<Cancelled>() {
        return RunFailure {
            kind: FailureKind::Cancelled,
            message: "the run was cancelled".into(),
            denials,
        };
    }
    let (kind, message) = if e.is::<CpuExceeded>() {
        (
            FailureKind::CpuExceeded,
            format!(
                "the driver used more than its {} CPU budget",
                humantime::format_duration(budget.cpu)
            ),
        )
    } else if let Some(m) = e.downcast_ref::<MemoryExceeded>() {
        (
            FailureKind::MemoryExceeded,
            format!("the driver ran out of memory: {m}"),
        )
    } else if let Some(l) = e.downcast_ref::<LogLimitExceeded>() {
        (FailureKind::LogLimit, format!("the run was stopped: {l}"))
    } else {
        match (stage, e.downcast_ref::<Trap>(), panic_text(stderr)) {
            (_, _, Some(panic)) => (FailureKind::Trap, format!("the driver panicked: {panic}")),
            (_, Some(trap), None) => (FailureKind::Trap, format!("the driver trapped: {trap}")),
            (Stage::Instantiate, None, None) => (
                FailureKind::Instantiate,
                format!("the driver could not be instantiated: {e:#}"),
            ),
            (Stage::Call, None, None) => (FailureKind::Trap, format!("the driver failed: {e:#}")),
        }
    };
    RunFailure {
        kind,
        message,
        denials,
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

fn returned(r: DriverResult, result_size: u64) -> RunOutcome {
    let size = (r.message.len() + r.data.as_ref().map_or(0, String::len)) as u64;
    if size > result_size {
        return RunOutcome::Failed {
            kind: FailureKind::ResultTooLarge,
            message: format!(
                "the driver returned a result of {size} bytes, more than its result_size of {result_size} bytes"
            ),
        };
    }
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
    fn info_logs_within_the_info_budget() {
        let sink = Arc::new(crate::wasm::imports::log::Collect::default());
        let logger = info_logger(RunLogger::new(sink.clone(), "d.wasm", "info", None));
        let mut stopped = None;
        for i in 0..1_000_000u32 {
            if let Err(e) = logger.log([], format!("line {i}")) {
                stopped = Some((i, e));
                break;
            }
        }
        let (at, e) = stopped.expect("a million lines are stopped");
        assert_eq!(at, Limits::INFO.log_lines);
        assert_eq!(
            (e.lines, e.bytes),
            (u64::from(Limits::INFO.log_lines), Limits::INFO.log_bytes)
        );
        // The error the import raises is the one the sandbox reports as log-limit.
        let failure = classify(
            Stage::Call,
            &wasmtime::Error::new(e),
            "",
            Limits::INFO,
            Vec::new(),
        );
        assert_eq!(failure.kind, FailureKind::LogLimit);
        // The lines within the budget, and the host's one note past it.
        assert_eq!(
            sink.0.lock().unwrap().len(),
            Limits::INFO.log_lines as usize + 1
        );
        // Bytes count too: one line over the byte budget is stopped.
        let logger = info_logger(RunLogger::new(sink, "d.wasm", "info", None));
        let big = "x".repeat(Limits::INFO.log_bytes as usize + 1);
        assert!(logger.log([], big).is_err());
    }

    #[test]
    fn bad_data_is_an_invalid_result() {
        let r = returned(
            DriverResult {
                outcome: Outcome::Success,
                message: "m".into(),
                data: Some("{not json".into()),
            },
            1000,
        );
        assert!(matches!(
            r,
            RunOutcome::Failed {
                kind: FailureKind::InvalidResult,
                ..
            }
        ));
    }

    #[test]
    fn oversized_result_is_refused() {
        let r = returned(
            DriverResult {
                outcome: Outcome::Success,
                message: "x".repeat(20),
                data: None,
            },
            10,
        );
        assert!(matches!(
            r,
            RunOutcome::Failed {
                kind: FailureKind::ResultTooLarge,
                ..
            }
        ));
    }

    #[test]
    fn a_failure_after_a_denial_is_denied() {
        let failed = RunOutcome::Returned {
            outcome: GuestOutcome::Failure,
            message: "fetch failed".into(),
            data: None,
        };
        let denials = vec!["HTTP request to x:443".to_string()];
        match mark_denied(failed, &denials) {
            RunOutcome::Failed { kind, message } => {
                assert_eq!(kind, FailureKind::Denied);
                assert!(
                    message.starts_with("fetch failed; the host denied: HTTP"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        let ok = RunOutcome::Returned {
            outcome: GuestOutcome::Success,
            message: "fine".into(),
            data: None,
        };
        assert_eq!(mark_denied(ok.clone(), &denials), ok);
        let timeout = RunOutcome::Failed {
            kind: FailureKind::WallTimeout,
            message: "slow".into(),
        };
        assert_eq!(mark_denied(timeout.clone(), &denials), timeout);
    }
}
