//! Runs one fixture's event through a driver's `reconcile` in the host's own sandbox: the
//! same engine settings, budgets and grants (from `--config`, or the defaults), the same
//! API-client budget, the same failure kinds, with the fixture's store behind the client and
//! no server, queue or NATS.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::fixture::Fixture;
use super::store::{FixtureStore, StoreSetupError};
use crate::config::Config;
use crate::conveyor::{Log, Resource};
use crate::manager::client::RunClient;
use crate::result::Outcome;
use crate::wasm::bindings::{DriverPre, Event};
use crate::wasm::cache::compile_uncached;
use crate::wasm::engine::{self, EngineSettings};
use crate::wasm::imports::log::TracingSink;
use crate::wasm::sandbox::RunState;
use crate::wasm::{GuestOutcome, LogSink, RunContext, RunLogger, RunOutcome, Sandbox};

/// The sandbox fixtures run in, and the config their driver's budgets and grants come from.
pub struct Tester {
    sandbox: Arc<Sandbox>,
    config: Config,
}

/// A driver loaded for testing.
pub struct TestDriver {
    /// Its name, from `info()`.
    pub name: String,
    pre: DriverPre<RunState>,
}

/// What one run came to.
#[derive(Debug, Clone)]
pub struct Ran {
    /// Its outcome, as results name it.
    pub outcome: Outcome,
    /// The result's message (or the sandbox's, for a failure kind).
    pub message: String,
    /// The result's data (`null` when none).
    pub data: Value,
    /// Every line of the run's log, the host's notes included.
    pub logs: Vec<Log>,
    /// The resources the driver created or updated through its client, as stored after the
    /// run, in the order first written.
    pub written: Vec<Resource>,
    /// How long the reconcile took.
    pub elapsed: Duration,
}

/// Collects a run's lines.
#[derive(Default)]
struct Lines(Mutex<Vec<Log>>);

impl LogSink for Lines {
    fn write(&self, line: Log) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}

impl Tester {
    /// A sandbox as the host would build it under `config` (the defaults when `None`).
    pub fn new(config: Option<Config>) -> anyhow::Result<Tester> {
        let config = match config {
            Some(c) => c,
            None => Config::parse("drivers_dir = \".\"\ndata_dir = \".\"\n", Path::new("."))
                .map_err(anyhow::Error::msg)?,
        };
        let engine = engine::build(&EngineSettings {
            pool_instances: 4,
            max_memory: config.max_memory(),
        })?;
        engine::start_epoch_ticker(&engine)?;
        Ok(Tester {
            sandbox: Arc::new(Sandbox::new(engine)?),
            config,
        })
    }

    /// Compiles, links and introspects a driver file, as the host loads one.
    pub async fn load(&self, path: &Path) -> anyhow::Result<TestDriver> {
        let file = path.display();
        let compiled = {
            let engine = self.sandbox.engine().clone();
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || compile_uncached(&engine, &path)).await?
        }
        .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        let pre = self.sandbox.prepare(&compiled.component).map_err(|e| {
            anyhow::anyhow!(
                "{file}: it does not fit the conveyor:driver@0.1.0 `driver` world: {e:#}"
            )
        })?;
        let logger = RunLogger::new(Arc::new(TracingSink), "test", "info", None);
        let info = self
            .sandbox
            .info(&pre, logger)
            .await
            .map_err(|f| anyhow::anyhow!("{file}: its info() failed: {f}"))?;
        crate::wasm::driver::DriverInfo {
            name: info.name.clone(),
            resources: info.resources,
            events: info.events,
        }
        .validate()
        .map_err(|e| anyhow::anyhow!("{file}: its info() is not usable: {e}"))?;
        Ok(TestDriver {
            name: info.name,
            pre,
        })
    }

    /// Runs the fixture's event through the driver once (one delivery: a retry or a
    /// transient failure is the outcome, not delivered again).
    pub async fn run(
        &self,
        driver: &TestDriver,
        fixture: &Fixture,
    ) -> Result<Ran, StoreSetupError> {
        let policy = self.config.driver_settings(&driver.name).policy();
        let (store, payload) = FixtureStore::load(fixture, self.sandbox.clone()).await?;
        let lines = Arc::new(Lines::default());
        let run_id = crate::conveyor::new_run_id();
        let logger = RunLogger::new(
            lines.clone(),
            &driver.name,
            &run_id,
            fixture.pipeline.as_deref(),
        )
        .with_redactor(policy.grants.redactor.clone())
        .with_budget(policy.limits.log_lines, policy.limits.log_bytes);
        let recording = store.client(&driver.name, policy.client.queued_writes);
        let ctx = RunContext {
            logger: logger.clone(),
            client: RunClient::new(recording.clone(), policy.client, logger),
            grants: policy.grants.clone(),
            cancel: CancellationToken::new(),
        };
        let event = Event {
            name: fixture.event.clone(),
            payload,
            run_id,
            message_id: crate::conveyor::new_message_id(),
            pipeline: fixture.pipeline.clone(),
            attempt: fixture.attempt,
        };
        let started = Instant::now();
        let reconciled = self
            .sandbox
            .reconcile(&driver.pre, event, ctx, policy.limits)
            .await;
        let elapsed = started.elapsed();
        let (outcome, message, data) = match reconciled.outcome {
            RunOutcome::Returned {
                outcome,
                message,
                data,
            } => {
                let outcome = match outcome {
                    GuestOutcome::Success => Outcome::Success,
                    GuestOutcome::Failure => Outcome::Failure,
                    GuestOutcome::Retry(_) => Outcome::Retry,
                };
                (outcome, message, data.unwrap_or(Value::Null))
            }
            RunOutcome::Failed { kind, message } => (Outcome::Failed(kind), message, Value::Null),
        };
        let written = recording
            .written()
            .iter()
            .filter_map(|(kind, name)| store.resource(kind, name))
            .collect();
        let logs = std::mem::take(&mut *lines.0.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(Ran {
            outcome,
            message,
            data,
            logs,
            written,
            elapsed,
        })
    }
}
