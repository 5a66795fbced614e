//! The driver manager: for each loaded driver, a loop that takes deliveries from the event
//! source (up to the driver's concurrency), runs `reconcile` in the sandbox, decides what the
//! outcome means (done, retry with backoff, give up) and settles the delivery. Loops start
//! and stop as the registry gains and loses drivers (hot reload).
//!
//! Nothing is settled before the run's log lines are stored, and a result is stored by the
//! source in the same step that acknowledges the delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DriverSettings};
use crate::conveyor::Resource;
use crate::events::{Delivery, EventSource, Settlement};
use crate::logs::LogPipeline;
use crate::registry::Registry;
use crate::store::StoredResult;
use crate::wasm::bindings::Event;
use crate::wasm::imports::log::RunLogger;
use crate::wasm::{ApiClient, Budget, Grants, GuestOutcome, RunContext, RunOutcome, Sandbox};

/// The longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Runs drivers on the deliveries of one event source.
pub struct Manager<S: EventSource> {
    source: Arc<S>,
    registry: Arc<Registry>,
    sandbox: Arc<Sandbox>,
    logs: Arc<dyn LogPipeline>,
    client: Arc<dyn ApiClient>,
    config: Arc<Config>,
    keys: Arc<KeyLocks>,
}

impl<S: EventSource> Manager<S> {
    /// A manager; call [`Manager::run`] to start it.
    pub fn new(
        source: Arc<S>,
        registry: Arc<Registry>,
        sandbox: Arc<Sandbox>,
        logs: Arc<dyn LogPipeline>,
        client: Arc<dyn ApiClient>,
        config: Arc<Config>,
    ) -> Arc<Self> {
        Arc::new(Manager {
            source,
            registry,
            sandbox,
            logs,
            client,
            config,
            keys: Arc::default(),
        })
    }

    /// Serves every loaded driver until `shutdown` is cancelled, then lets the runs in flight
    /// finish (each is bounded by its timeout). A driver added to the registry gets a loop; a
    /// removed one has its loop stopped once its runs in flight finish.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.registry.subscribe();
        let mut loops: HashMap<String, CancellationToken> = HashMap::new();
        let mut tasks = JoinSet::new();
        loop {
            let names: Vec<String> = self
                .registry
                .all()
                .iter()
                .map(|d| d.info.name.clone())
                .collect();
            loops.retain(|name, stop| {
                let keep = names.contains(name);
                if !keep {
                    stop.cancel();
                }
                keep
            });
            for name in names {
                if !loops.contains_key(&name) {
                    let stop = shutdown.child_token();
                    loops.insert(name.clone(), stop.clone());
                    tasks.spawn(self.clone().driver_loop(name, stop));
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                _ = shutdown.cancelled() => break,
            }
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn driver_loop(self: Arc<Self>, driver: String, shutdown: CancellationToken) {
        let Some(info) = self.registry.get(&driver).map(|d| d.info.clone()) else {
            return;
        };
        let settings = Arc::new(self.config.driver_settings(&driver));
        // Grants are resolved once per driver, so each event only clones an Arc.
        let grants = Grants::from_settings(&settings);
        loop {
            let attached = tokio::select! {
                a = self.source.attach(&info, &settings) => a,
                _ = shutdown.cancelled() => return,
            };
            match attached {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(%driver, error = %e, "cannot attach to the event source; retrying in 2s");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        // `concurrency` workers, each taking its next event only when it is free: the slots
        // fetch in parallel, and nothing is taken that cannot start at once.
        let mut workers = JoinSet::new();
        for _ in 0..settings.concurrency {
            let this = self.clone();
            let (driver, settings, grants) = (driver.clone(), settings.clone(), grants.clone());
            let shutdown = shutdown.clone();
            workers.spawn(async move {
                loop {
                    let delivery = tokio::select! {
                        d = this.source.next(&driver) => d,
                        _ = shutdown.cancelled() => break,
                    };
                    match delivery {
                        Ok(d) => this.handle(d, &settings, grants.clone(), &shutdown).await,
                        Err(e) => {
                            tracing::error!(%driver, error = %e, "event source failed; retrying in 1s");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
    }

    async fn handle(
        &self,
        d: Delivery<S::Token>,
        settings: &DriverSettings,
        grants: Arc<Grants>,
        shutdown: &CancellationToken,
    ) {
        let settlement = self.process(&d, settings, grants, shutdown).await;
        let (driver, message_id) = (d.driver.clone(), d.message_id.clone());
        if let Err(e) = self.source.settle(d, settlement).await {
            tracing::error!(%driver, %message_id, error = %e, "could not settle the event; it will be delivered again");
        }
    }

    async fn process(
        &self,
        d: &Delivery<S::Token>,
        settings: &DriverSettings,
        grants: Arc<Grants>,
        shutdown: &CancellationToken,
    ) -> Settlement {
        let Some(driver) = self.registry.get(&d.driver) else {
            return Settlement::Retry {
                delay: Duration::from_secs(10),
            };
        };
        if !driver.info.wants_event(&d.event) {
            return Settlement::Skip;
        }
        let resource: Resource = match serde_json::from_str(&d.payload) {
            Ok(r) => r,
            Err(e) => {
                return Settlement::Reject {
                    reason: format!("the payload is not a Conveyor resource: {e}"),
                };
            }
        };
        // One reconcile per (driver, resource) at a time: a later event for the same resource
        // waits for the earlier one to settle.
        // During shutdown, an event still waiting for its turn goes back to the source
        // untouched, to be delivered again (here after a restart, or to another host).
        let key = format!("{}\0{}\0{}", d.driver, resource.resource, resource.name);
        let _key = tokio::select! {
            k = self.keys.clone().lock(key) => k,
            _ = shutdown.cancelled() => return Settlement::Retry { delay: Duration::ZERO },
        };

        let pipeline = (!resource.pipeline.is_empty()).then_some(resource.pipeline.as_str());
        let logger = RunLogger::new(self.logs.clone(), &d.driver, &d.run_id, pipeline)
            .with_redactor(grants.redactor.clone())
            .with_budget(settings.log_lines, settings.log_bytes);
        let started_at = crate::clock::now_rfc3339();
        let event = Event {
            name: d.event.clone(),
            payload: d.payload.clone(),
            run_id: d.run_id.clone(),
            message_id: d.message_id.clone(),
            pipeline: pipeline.map(str::to_string),
            attempt: d.attempt,
        };
        let ctx = RunContext {
            logger: logger.clone(),
            client: self.client.clone(),
            grants,
        };
        let budget = Budget {
            timeout: settings.timeout,
            cpu: settings.cpu,
            memory: settings.memory,
            result_size: settings.result_size,
        };
        let counters = self.registry.counters(&d.driver);
        counters.started.fetch_add(1, Ordering::Relaxed);
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let metrics = &crate::metrics::METRICS;
        let in_flight = metrics.in_flight.with_label_values(&[d.driver.as_str()]);
        in_flight.inc();
        let clock = std::time::Instant::now();
        let reconciled = self
            .sandbox
            .reconcile_timed(&driver.pre, event, ctx, budget)
            .await;
        in_flight.dec();
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);

        let verdict = decide(reconciled.outcome, d.attempt, settings);
        metrics.reconciled(
            &d.driver,
            &verdict.outcome,
            clock.elapsed(),
            reconciled.instantiate,
        );
        if verdict.retry.is_some() {
            metrics
                .retries
                .with_label_values(&[d.driver.as_str()])
                .inc();
        }
        let counter = match (verdict.retry, verdict.success) {
            (Some(_), _) => &counters.retried,
            (None, true) => &counters.succeeded,
            (None, false) => &counters.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(line) = &verdict.note {
            logger.host_line(line.clone());
        }
        // Every line of the run is stored before the delivery is settled, so a client that
        // sees the result also sees all the logs.
        self.logs.flush().await;
        match verdict.retry {
            Some(delay) => Settlement::Retry { delay },
            None => Settlement::Done {
                exhausted: verdict.exhausted,
                result: Box::new(StoredResult {
                    run_id: d.run_id.clone(),
                    driver: d.driver.clone(),
                    message_id: d.message_id.clone(),
                    event: d.event.clone(),
                    resource_type: resource.resource.clone(),
                    resource_name: resource.name.clone(),
                    success: verdict.success,
                    outcome: verdict.outcome,
                    failure_kind: verdict.failure_kind,
                    message: verdict.message,
                    data: verdict.data.unwrap_or(serde_json::Value::Null),
                    attempts: d.attempt,
                    started_at,
                    finished_at: crate::clock::now_rfc3339(),
                    step: 0,
                }),
            },
        }
    }
}

/// What an outcome means for the delivery.
#[derive(Debug, PartialEq)]
struct Verdict {
    /// `Some(delay)`: deliver again; `None`: final.
    retry: Option<Duration>,
    success: bool,
    outcome: String,
    failure_kind: Option<String>,
    message: String,
    data: Option<serde_json::Value>,
    /// A line for the run's log, from the host.
    note: Option<String>,
    /// Final because a transient failure ran out of attempts.
    exhausted: bool,
}

fn decide(outcome: RunOutcome, attempt: u32, settings: &DriverSettings) -> Verdict {
    let can_retry = attempt < settings.max_attempts;
    let backoff = backoff(settings.backoff, attempt);
    match outcome {
        RunOutcome::Returned {
            outcome: GuestOutcome::Success,
            message,
            data,
        } => Verdict {
            retry: None,
            success: true,
            outcome: "success".into(),
            failure_kind: None,
            message,
            data,
            note: None,
            exhausted: false,
        },
        RunOutcome::Returned {
            outcome: GuestOutcome::Failure,
            message,
            data,
        } => Verdict {
            retry: None,
            success: false,
            outcome: "failure".into(),
            failure_kind: None,
            message,
            data,
            note: None,
            exhausted: false,
        },
        RunOutcome::Returned {
            outcome: GuestOutcome::Retry(after),
            message,
            data,
        } => {
            let delay = after.map_or(backoff, |a| a.max(backoff));
            Verdict {
                retry: can_retry.then_some(delay),
                success: false,
                outcome: "retry".into(),
                failure_kind: None,
                note: Some(retry_note(attempt, settings, &message, delay, can_retry)),
                message: given_up(message, attempt, can_retry),
                data,
                exhausted: !can_retry,
            }
        }
        RunOutcome::Failed { kind, message } => {
            let retry = (kind.is_transient() && can_retry).then_some(backoff);
            Verdict {
                retry,
                success: false,
                outcome: kind.as_str().into(),
                failure_kind: Some(kind.as_str().into()),
                note: Some(retry_note(
                    attempt,
                    settings,
                    &format!("{message} ({kind})"),
                    backoff,
                    retry.is_some(),
                )),
                message: given_up(message, attempt, retry.is_some() || !kind.is_transient()),
                data: None,
                exhausted: kind.is_transient() && retry.is_none(),
            }
        }
    }
}

fn retry_note(
    attempt: u32,
    s: &DriverSettings,
    what: &str,
    delay: Duration,
    retrying: bool,
) -> String {
    if retrying {
        format!(
            "attempt {attempt} of {} failed: {what}; retrying in {}",
            s.max_attempts,
            humantime::format_duration(delay)
        )
    } else {
        format!("attempt {attempt} of {} failed: {what}", s.max_attempts)
    }
}

/// Adds "after N attempts" to the final message of a transient failure that ran out of
/// attempts.
fn given_up(message: String, attempt: u32, retrying_or_final: bool) -> String {
    if retrying_or_final || attempt <= 1 {
        message
    } else {
        format!("{message} (gave up after {attempt} attempts)")
    }
}

/// `base * 2^(attempt-1)`, capped at five minutes.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Async locks by key, removed when no one holds or waits for them.
#[derive(Default)]
struct KeyLocks {
    map: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct KeyGuard {
    locks: Arc<KeyLocks>,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    async fn lock(self: Arc<Self>, key: String) -> KeyGuard {
        let mutex = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = mutex.lock_owned().await;
        KeyGuard {
            locks: self,
            key,
            guard: Some(guard),
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.map.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::FailureKind;

    fn settings(max_attempts: u32) -> DriverSettings {
        DriverSettings {
            timeout: Duration::from_secs(1),
            cpu: Duration::from_secs(1),
            memory: 1 << 20,
            concurrency: 1,
            log_lines: 10,
            log_bytes: 1000,
            result_size: 1000,
            max_attempts,
            backoff: Duration::from_secs(1),
            dirs: Vec::new(),
            env: Vec::new(),
            secrets: Vec::new(),
            http: Default::default(),
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_secs(1);
        assert_eq!(backoff(b, 1), Duration::from_secs(1));
        assert_eq!(backoff(b, 3), Duration::from_secs(4));
        assert_eq!(backoff(b, 40), MAX_BACKOFF);
    }

    #[test]
    fn transient_failures_retry_until_the_limit() {
        let trap = || RunOutcome::Failed {
            kind: FailureKind::Trap,
            message: "boom".into(),
        };
        let v = decide(trap(), 1, &settings(3));
        assert_eq!(v.retry, Some(Duration::from_secs(1)));
        let v = decide(trap(), 3, &settings(3));
        assert_eq!(v.retry, None);
        assert!(!v.success);
        assert_eq!(v.failure_kind.as_deref(), Some("trap"));
        assert_eq!(v.message, "boom (gave up after 3 attempts)");
    }

    #[test]
    fn guest_retry_respects_its_delay_and_the_limit() {
        let retry = |ms| RunOutcome::Returned {
            outcome: GuestOutcome::Retry(Some(Duration::from_millis(ms))),
            message: "busy".into(),
            data: None,
        };
        assert_eq!(
            decide(retry(5000), 1, &settings(2)).retry,
            Some(Duration::from_secs(5))
        );
        assert_eq!(decide(retry(1), 2, &settings(2)).retry, None);
    }

    #[test]
    fn permanent_outcomes_are_final() {
        let v = decide(
            RunOutcome::Returned {
                outcome: GuestOutcome::Failure,
                message: "bad spec".into(),
                data: None,
            },
            1,
            &settings(3),
        );
        assert_eq!(v.retry, None);
        assert_eq!(v.message, "bad spec");
        let v = decide(
            RunOutcome::Failed {
                kind: FailureKind::InvalidResult,
                message: "not json".into(),
            },
            1,
            &settings(3),
        );
        assert_eq!(v.retry, None);
    }

    #[tokio::test]
    async fn key_locks_serialise_and_clean_up() {
        let locks = Arc::new(KeyLocks::default());
        let a = locks.clone().lock("k".into()).await;
        let waiting = tokio::spawn(locks.clone().lock("k".into()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(a);
        let b = waiting.await.unwrap();
        drop(b);
        assert!(locks.map.lock().unwrap().is_empty());
    }
}
