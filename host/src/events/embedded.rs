//! The embedded event source: the `queue` table of the host's SQLite store. An event is in the
//! table before the API answers; it leaves the table in the same transaction that stores its
//! result. Events that were being delivered when the host stopped are delivered again when it
//! starts (at-least-once, like JetStream's redelivery after AckWait).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Delivery, EventSource, Settlement, SourceError};
use crate::clock::now_ms;
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
            Settlement::Done { result, .. } => self.store.complete(delivery.token, &result)?,
            Settlement::Retry { delay } => {
                let due = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                self.store.release(delivery.token, due)?;
                // A sleeping consumer computed its wait before this due time existed.
                self.wake();
            }
            Settlement::Skip => self.store.discard(delivery.token)?,
            Settlement::Reject { reason } => {
                tracing::warn!(
                    driver = %delivery.driver,
                    message_id = %delivery.message_id,
                    %reason,
                    "event rejected"
                );
                self.store.discard(delivery.token)?;
            }
        }
        Ok(())
    }
}
