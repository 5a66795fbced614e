//! One delivery, top to bottom: admit (does the driver want it?), lock (one reconcile per
//! driver and resource at a time in this host), hold (and across hosts, where the source
//! has several), sandbox (a fresh instance within the driver's limits and
//! grants), verdict (what the outcome means), flush (every log line of the run is stored or
//! published), settle (the result, built once, goes back to the source with the delivery).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client::RunClient;
use super::retry::{self, Verdict};
use super::{DriverPolicy, Manager};
use crate::backend::{Delivery, EventSource, Hold, Settlement};
use crate::error_chain;
use crate::result::RunResult;
use crate::wasm::bindings::Event;
use crate::wasm::{RunContext, RunLogger};

/// How long an event whose resource another host is reconciling waits before it is
/// delivered again.
const ELSEWHERE_DELAY: Duration = Duration::from_millis(250);

impl<S: EventSource> Manager<S> {
    /// Handles one delivery and settles it.
    pub(super) async fn handle(&self, d: Delivery<S::Token>, shutdown: &CancellationToken) {
        let settlement = self.process(&d, shutdown).await;
        let (driver, message_id) = (d.driver.clone(), d.message_id.clone());
        if let Err(e) = self.source.settle(d, settlement).await {
            tracing::error!(%driver, %message_id, error = %error_chain(&e), "could not settle the event; it will be delivered again");
        }
    }

    async fn process(&self, d: &Delivery<S::Token>, shutdown: &CancellationToken) -> Settlement {
        // Admit.
        let Some(driver) = self.registry.get(&d.driver) else {
            return Settlement::Retry {
                delay: Duration::from_secs(10),
            };
        };
        if !crate::routing::admits(&driver.info, &d.event) {
            return Settlement::Skip;
        }
        // Lock: a later event for the same resource waits for the earlier one to settle.
        // During shutdown, an event still waiting for its turn goes back to the source
        // untouched, to be delivered again (here after a restart, or to another host).
        let key = (
            d.driver.clone(),
            d.resource.resource.clone(),
            d.resource.name.clone(),
        );
        let _key = tokio::select! {
            k = self.keys.clone().lock(key) => k,
            _ = shutdown.cancelled() => return Settlement::Retry { delay: Duration::ZERO },
        };
        // Hold: the same resource across hosts (NATS mode's lease). One held elsewhere, or
        // a hold that cannot be asked for, comes back soon without using up an attempt.
        match self.source.hold(d).await {
            Ok(Hold::Held) => {}
            Ok(Hold::Elsewhere) => {
                self.metrics.held_elsewhere(&d.driver);
                return Settlement::Elsewhere {
                    delay: ELSEWHERE_DELAY,
                };
            }
            Err(e) => {
                tracing::warn!(driver = %d.driver, run_id = %d.run_id, error = %error_chain(&e), "cannot take the resource's lease; delivering the event again soon");
                return Settlement::Elsewhere {
                    delay: Duration::from_secs(1),
                };
            }
        }

        // Sandbox.
        let policy = self.policies.for_driver(&d.driver);
        let logger = self.logger(d, &policy);
        let started_at = crate::clock::now_rfc3339();
        let event = Event {
            name: d.event.clone(),
            payload: d.payload.clone(),
            run_id: d.run_id.clone(),
            message_id: d.message_id.clone(),
            pipeline: pipeline(d).map(str::to_string),
            attempt: d.attempt,
        };
        let registered = self.cancellations.register(&d.run_id);
        let ctx = RunContext {
            logger: logger.clone(),
            client: RunClient::new(
                self.client
                    .clone()
                    .acting_for(&d.driver, policy.client.queued_writes)
                    .unwrap_or_else(|| self.client.clone()),
                policy.client,
                logger.clone(),
            ),
            grants: policy.grants.clone(),
            cancel: registered.token.clone(),
        };
        self.metrics.started(&d.driver);
        let clock = Instant::now();
        let reconciled = self
            .sandbox
            .reconcile(&driver.pre, event, ctx, policy.limits)
            .await;
        drop(registered);

        // Verdict.
        let verdict = retry::decide(reconciled.outcome, d.attempt, &policy.retry);
        self.metrics.reconciled(
            &d.driver,
            verdict.outcome,
            verdict.retry.is_some(),
            clock.elapsed(),
            reconciled.instantiate,
        );
        if let Some(line) = &verdict.note {
            logger.host_line(line.clone());
        }

        // Order: every line of the run is stored before the delivery is settled (no later
        // than the settlement's commit), so a client that sees the result also sees all the
        // logs.
        self.logs.order().await;

        // Settle.
        settlement(d, verdict, started_at)
    }

    fn logger(&self, d: &Delivery<S::Token>, policy: &DriverPolicy) -> RunLogger {
        RunLogger::new(self.logs.clone(), &d.driver, &d.run_id, pipeline(d))
            .with_redactor(policy.grants.redactor.clone())
            .with_budget(policy.limits.log_lines, policy.limits.log_bytes)
    }
}

fn pipeline<T>(d: &Delivery<T>) -> Option<&str> {
    (!d.resource.pipeline.is_empty()).then_some(d.resource.pipeline.as_str())
}

/// The settlement of a verdict: the result, built once from the delivery and the verdict, or
/// another attempt.
fn settlement<T>(d: &Delivery<T>, verdict: Verdict, started_at: String) -> Settlement {
    if let Some(delay) = verdict.retry {
        return Settlement::Retry { delay };
    }
    let result = Box::new(RunResult {
        run_id: d.run_id.clone(),
        driver: d.driver.clone(),
        message_id: d.message_id.clone(),
        event: d.event.clone(),
        resource_type: d.resource.resource.clone(),
        resource_name: d.resource.name.clone(),
        outcome: verdict.outcome,
        message: verdict.message,
        data: verdict.data.unwrap_or(serde_json::Value::Null),
        attempts: d.attempt,
        started_at,
        finished_at: crate::clock::now_rfc3339(),
    });
    if verdict.gave_up {
        Settlement::GaveUp(result)
    } else {
        Settlement::Done(result)
    }
}
