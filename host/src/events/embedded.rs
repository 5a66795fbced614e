//! The embedded event source: the `queue` table of the host's SQLite store. An event is in the
//! table before the API answers; it leaves the table in the same transaction that stores its
//! result. Events that were being delivered when the host stopped are delivered again when it
//! starts (at-least-once, like JetStream's redelivery after AckWait).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Delivery, EventSource, Settlement, SourceError};
use crate::clock::now_ms;
use crate::registry::Registry;
use crate::store::Store;

/// Longest sleep between looks at the queue when nothing wakes the consumer; only matters if a
/// wake-up is somehow missed.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// The SQLite-backed queue.
pub struct EmbeddedQueue {
    store: Arc<Store>,
    wake: Notify,
}

impl EmbeddedQueue {
    /// A queue over the store's `queue` table.
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        Arc::new(EmbeddedQueue {
            store,
            wake: Notify::new(),
        })
    }

    /// Tells waiting consumers that events were enqueued.
    pub fn wake(&self) {
        self.wake.notify_waiters();
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

    fn fail_missing_once(
        &self,
        registry: &Registry,
        wait: Duration,
    ) -> Result<(), crate::store::StoreError> {
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
            let failed = self.store.fail_waiting(&driver, cutoff, &reason)?;
            if failed > 0 {
                tracing::warn!(%driver, events = failed, "failed events of a driver that is not loaded");
                // Failed broadcast steps may end runs; nothing new is enqueued, but wake
                // anyway in case a later step was.
                self.wake();
            }
        }
        Ok(())
    }
}

impl EventSource for EmbeddedQueue {
    type Token = i64;

    /// Nothing to prepare: the queue already holds one row per listening driver.
    async fn attach(
        &self,
        _driver: &crate::wasm::DriverInfo,
        _settings: &crate::config::DriverSettings,
    ) -> Result<(), SourceError> {
        Ok(())
    }

    async fn next(&self, driver: &str) -> Result<Delivery<i64>, SourceError> {
        loop {
            // Register for wake-ups before looking, so an enqueue between the look and the
            // wait is not missed.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = now_ms();
            if let Some(q) = self.store.claim_next(driver, now)? {
                return Ok(Delivery {
                    token: q.id,
                    driver: q.event.driver,
                    event: q.event.event,
                    payload: q.event.payload,
                    run_id: q.event.run_id,
                    message_id: q.event.message_id,
                    attempt: q.attempt,
                });
            }
            let wait = match self.store.next_due(driver)? {
                Some(due) => Duration::from_millis((due - now).clamp(1, 60_000) as u64),
                None => IDLE_POLL,
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn settle(
        &self,
        delivery: Delivery<i64>,
        settlement: Settlement,
    ) -> Result<(), SourceError> {
        match settlement {
            Settlement::Done { result, .. } => {
                self.store.complete(delivery.token, &result)?;
                // The run's next step may have been enqueued.
                self.wake();
            }
            Settlement::Retry { delay } => {
                let due = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                self.store.release(delivery.token, due)?;
                // A sleeping consumer computed its wait before this due time existed.
                self.wake();
            }
            Settlement::Skip => {
                let reason = format!(
                    "{} does not handle {} events",
                    delivery.driver, delivery.event
                );
                self.store.skip(delivery.token, &reason)?;
                self.wake();
            }
            Settlement::Reject { reason } => {
                tracing::warn!(
                    driver = %delivery.driver,
                    message_id = %delivery.message_id,
                    %reason,
                    "event rejected"
                );
                self.store.discard(delivery.token, &reason)?;
            }
        }
        Ok(())
    }
}
