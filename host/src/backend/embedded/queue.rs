//! The embedded event source: the store's durable queue. An event is in the queue before the
//! API answers; it leaves the queue in the same transaction that stores its result and moves
//! its run on. Events that were being delivered when the host stopped are delivered again
//! when it starts (at-least-once, like JetStream's redelivery after AckWait).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::pipeline::{self, StepEnd};
use crate::backend::{Delivery, EventSource, Settlement};
use crate::clock::now_ms;
use crate::conveyor::Resource;
use crate::manager::DriverPolicy;
use crate::registry::Registry;
use crate::result::{Outcome, RunResult};
use crate::store::{QueuedEvent, Store, StoreError};
use crate::wasm::DriverInfo;

/// How long after a settlement that the store refused the event is offered again.
const SETTLE_AGAIN_AFTER_MS: i64 = 1_000;

/// Longest sleep between looks at the queue when nothing wakes the consumer; only matters if a
/// wake-up is somehow missed.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// Why the embedded queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Taking the next event failed.
    #[error("cannot take the next event")]
    Claim(#[source] StoreError),
    /// Recording what became of an event failed.
    #[error("cannot settle the event")]
    Settle(#[source] StoreError),
}

/// The queue as an event source.
pub struct Queue {
    store: Arc<Store>,
    /// Per driver, its idle slots' turn at the queue.
    lookers: std::sync::Mutex<std::collections::HashMap<String, Arc<Looker>>>,
}

/// A driver's idle slots. One at a time looks at the queue (and waits for it to change)
/// while the others wait their turn; the one looking claims an event for each slot in line
/// in one write, and leaves the others' in `claimed` for them to take as their turn comes.
/// So an event costs no write of its own to claim, and an enqueue wakes one slot, not all.
/// No more is claimed than there are idle slots to start it at once.
#[derive(Default)]
struct Looker {
    turn: tokio::sync::Mutex<()>,
    /// Slots waiting for `turn`.
    in_line: std::sync::atomic::AtomicUsize,
    /// Events claimed for the slots in line. Filled by the claim itself, so that a slot that
    /// stops waiting (its future dropped) leaves what it claimed to the next one.
    claimed: std::sync::Mutex<std::collections::VecDeque<QueuedEvent>>,
}

impl Looker {
    fn take(&self) -> Option<QueuedEvent> {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }
}

impl Queue {
    /// The queue of `store`.
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        Arc::new(Queue {
            store,
            lookers: Default::default(),
        })
    }

    fn looker(&self, driver: &str) -> Arc<Looker> {
        let mut lookers = self.lookers.lock().unwrap_or_else(|p| p.into_inner());
        lookers.entry(driver.to_string()).or_default().clone()
    }

    /// Until `shutdown`, fails the steps whose driver is not loaded once their event has
    /// waited `wait`: nothing would ever deliver it, and the run would hang, as upstream's
    /// does. The run's next pipeline step is not started (the step failed).
    pub async fn fail_missing_drivers(
        self: Arc<Self>,
        registry: Arc<Registry>,
        wait: Duration,
        shutdown: CancellationToken,
    ) {
        let tick = wait.clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = self.fail_missing_once(&registry, wait) {
                tracing::error!(error = %e, "could not check for events of missing drivers");
            }
        }
    }

    fn fail_missing_once(&self, registry: &Registry, wait: Duration) -> Result<(), StoreError> {
        // A driver may be among the files still loading (a first compile takes seconds, and
        // the wait counts from when the event was queued, perhaps before a restart): only a
        // driver that is missing once every file is settled is missing.
        if registry.is_loading() {
            return Ok(());
        }
        let cutoff = now_ms() - i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
        for driver in self.store.waiting_drivers()? {
            if registry.get(&driver).is_some() {
                continue;
            }
            let reason = format!(
                "driver {driver} is not loaded (waited {})",
                humantime::format_duration(wait)
            );
            let failed = self.fail_waiting(&driver, cutoff, &reason)?;
            if failed > 0 {
                tracing::warn!(%driver, events = failed, "failed events of a driver that is not loaded");
            }
        }
        Ok(())
    }

    /// Ends every unclaimed event for `driver` enqueued at or before `cutoff_ms` with a
    /// failed result saying `reason` (its driver is not loaded). Returns how many.
    pub fn fail_waiting(
        &self,
        driver: &str,
        cutoff_ms: i64,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let mut failed = 0;
        for id in self.store.waiting_since(driver, cutoff_ms)? {
            let settled = self.store.write(|tx| {
                // Checked again inside the transaction: the driver may have been loaded and
                // claimed the event since.
                let Some(row) = crate::store::queue::row(tx, id)?.filter(|r| !r.claimed) else {
                    return Ok(false);
                };
                let now = crate::clock::now_rfc3339();
                let e = row.event;
                let result = RunResult {
                    run_id: e.run_id,
                    driver: e.driver,
                    message_id: e.message_id,
                    event: e.event,
                    resource_type: e.resource_type,
                    resource_name: e.resource_name,
                    outcome: Outcome::DriverNotLoaded,
                    message: reason.to_string(),
                    data: serde_json::Value::Null,
                    attempts: row.attempts,
                    started_at: now.clone(),
                    finished_at: now,
                };
                pipeline::settle(tx, id, StepEnd::Result(&result))
            })?;
            failed += usize::from(settled);
        }
        Ok(failed)
    }

    /// Stores a final result, removes its event and moves its run on, in one transaction.
    #[cfg(test)]
    pub fn complete(&self, id: i64, result: &RunResult) -> Result<bool, StoreError> {
        self.store
            .write(|tx| pipeline::settle(tx, id, StepEnd::Result(result)))
    }

    fn delivery(q: QueuedEvent) -> Result<Delivery<i64>, (i64, String)> {
        // A broadcast's payload is the caller's text: read as upstream's drivers read it.
        let resource: Resource = crate::conveyor::decode(q.event.payload.as_bytes())
            .map_err(|e| (q.id, format!("the payload is not a Conveyor resource: {e}")))?;
        Ok(Delivery {
            token: q.id,
            driver: q.event.driver,
            event: q.event.event,
            payload: q.event.payload,
            resource,
            run_id: q.event.run_id,
            message_id: q.event.message_id,
            attempt: q.attempt,
        })
    }
}

impl EventSource for Queue {
    type Token = i64;
    type Error = QueueError;

    /// Nothing to prepare: the queue already holds one row per listening driver.
    async fn attach(&self, _driver: &DriverInfo, _policy: &DriverPolicy) -> Result<(), QueueError> {
        Ok(())
    }

    async fn next(&self, driver: &str) -> Result<Delivery<i64>, QueueError> {
        use std::sync::atomic::Ordering;
        let looker = self.looker(driver);
        looker.in_line.fetch_add(1, Ordering::SeqCst);
        let _turn = looker.turn.lock().await;
        looker.in_line.fetch_sub(1, Ordering::SeqCst);
        loop {
            if let Some(q) = looker.take() {
                match Self::delivery(q) {
                    Ok(d) => return Ok(d),
                    Err((id, reason)) => {
                        tracing::warn!(%driver, %reason, "event rejected");
                        self.store
                            .write(|tx| pipeline::settle(tx, id, StepEnd::Rejected(&reason)))
                            .map_err(QueueError::Settle)?;
                        continue;
                    }
                }
            }
            // Register for wake-ups before looking, so an enqueue between the look and the
            // wait is not missed.
            let notified = self.store.queue_changed();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = now_ms();
            // One for this slot and one for each slot in line behind it.
            let wanted = 1 + looker.in_line.load(Ordering::SeqCst);
            // Run ahead of the writes in line, so that a slot does not wait behind the creates
            // handed over before its claim (a batch's worth, milliseconds), and answered once
            // the writer has run it, not after its commit: a claim only keeps this host's
            // other slots off the events, and every start resets claims anyway (so a crash
            // delivers them again either way), while waiting for the commit would leave the
            // slots idle for a batch's disk writes on every claim. What it claimed
            // goes to the looker in a task of its own, so that a slot stopped while it waits
            // (its driver removed) leaves the events to the next slot that looks, not claimed
            // and undelivered until a restart.
            let name = driver.to_string();
            let claimed = self
                .store
                .write_ahead(move |tx| crate::store::queue::claim(tx, &name, now, wanted));
            let into = looker.clone();
            let taken = tokio::spawn(async move {
                let taken = claimed.await?;
                let n = taken.len();
                into.claimed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(taken);
                Ok(n)
            })
            .await
            .unwrap_or_else(|e| Err(StoreError::Task(e.to_string())))
            .map_err(QueueError::Claim)?;
            if taken > 0 {
                continue;
            }
            let wait = match self.store.next_due(driver).map_err(QueueError::Claim)? {
                Some(due) => Duration::from_millis((due - now).clamp(1, 60_000) as u64),
                None => IDLE_POLL,
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Hands the settlement to the store's writer and returns without waiting for its
    /// commit, so the slot starts its next event meanwhile: writes run in the order they are
    /// handed over, so every later claim sees this one, and the result, the event's removal
    /// and the run's next step are still one write. If the host stops before the commit, the
    /// event is still claimed in the store and is delivered again at the next start; if the
    /// write fails, it is put back after a pause.
    async fn settle(
        &self,
        delivery: Delivery<i64>,
        settlement: Settlement,
    ) -> Result<(), QueueError> {
        let id = delivery.token;
        type Committed = std::pin::Pin<Box<dyn Future<Output = Result<bool, StoreError>> + Send>>;
        let committed: Committed = match settlement {
            Settlement::Done(result) | Settlement::GaveUp(result) => Box::pin(
                self.store
                    .write_soon(move |tx| pipeline::settle(tx, id, StepEnd::Result(&result))),
            ),
            // The queue has one consumer, this host: nothing is held elsewhere.
            Settlement::Retry { delay } | Settlement::Elsewhere { delay } => {
                let due = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                Box::pin(
                    self.store.write_soon(move |tx| {
                        crate::store::queue::release(tx, id, due).map(|()| true)
                    }),
                )
            }
            Settlement::Skip => {
                let reason = format!(
                    "{} does not handle {} events",
                    delivery.driver, delivery.event
                );
                Box::pin(
                    self.store
                        .write_soon(move |tx| pipeline::settle(tx, id, StepEnd::Skipped(&reason))),
                )
            }
        };
        let store = self.store.clone();
        let (driver, message_id) = (delivery.driver, delivery.message_id);
        tokio::spawn(async move {
            let Err(e) = committed.await else { return };
            tracing::error!(%driver, %message_id, error = %crate::error_chain(&e), "could not settle the event; it will be delivered again");
            // The write rolled back, so the event is as it was: claimed. Offer it again after
            // a pause rather than only at the next start.
            let due = now_ms() + SETTLE_AGAIN_AFTER_MS;
            if let Err(e) = store
                .write_off(move |tx| crate::store::queue::release(tx, id, due))
                .await
            {
                tracing::error!(event = id, error = %e, "cannot release an event whose settlement failed; it is delivered again at the next start");
            }
        });
        Ok(())
    }
}
