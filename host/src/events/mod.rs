//! Where events come from, and where their outcome goes. The manager sees one trait; the
//! embedded queue and (later) NATS JetStream differ only behind it.

pub mod embedded;
pub mod nats;

use std::future::Future;
use std::time::Duration;

use crate::store::StoredResult;

/// One event delivered to one driver.
#[derive(Debug)]
pub struct Delivery<T> {
    /// The source's handle on the delivery, to settle it.
    pub token: T,
    /// The driver it is for.
    pub driver: String,
    /// `create`, `update`, `delete` or `process`.
    pub event: String,
    /// The resource as JSON text.
    pub payload: String,
    /// The run id.
    pub run_id: String,
    /// The message id.
    pub message_id: String,
    /// Which delivery this is, counting this one.
    pub attempt: u32,
}

/// What to do with a delivery once it has been handled.
#[derive(Debug)]
pub enum Settlement {
    /// Record (or publish) the final result, then acknowledge. `exhausted` marks a transient
    /// failure that ran out of attempts, which a broker may record as terminated.
    Done {
        /// The result.
        result: Box<StoredResult>,
        /// The attempts ran out.
        exhausted: bool,
    },
    /// Deliver again after `delay` (a nak with delay).
    Retry {
        /// How long to wait.
        delay: Duration,
    },
    /// Acknowledge without a result: the driver does not want this event.
    Skip,
    /// Drop a message that can never be handled (a terminate), with the reason.
    Reject {
        /// Why.
        reason: String,
    },
}

/// Why the source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The embedded store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// NATS or JetStream failed.
    #[error("NATS: {0}")]
    Nats(String),
}

/// A source of deliveries, one stream per driver.
pub trait EventSource: Send + Sync + 'static {
    /// The handle a delivery carries back to `settle`.
    type Token: Send + Sync + 'static;

    /// Prepares deliveries for a driver (a durable consumer, say). Called before the first
    /// `next` for that driver; may wait for the broker.
    fn attach(
        &self,
        driver: &crate::wasm::DriverInfo,
        settings: &crate::config::DriverSettings,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Waits for the next delivery for `driver`.
    fn next(
        &self,
        driver: &str,
    ) -> impl Future<Output = Result<Delivery<Self::Token>, SourceError>> + Send;

    /// Records what became of a delivery. On success the delivery is never handed out again;
    /// on error it will be, later (at-least-once).
    fn settle(
        &self,
        delivery: Delivery<Self::Token>,
        settlement: Settlement,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
}
