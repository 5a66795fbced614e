//! The seam per deployment mode. Each backend is one module that builds everything the mode
//! needs: its event source, its log pipeline, the drivers' API client, its HTTP routes and
//! its background tasks, and starts the manager on them.
//!
//! - [`embedded`]: the host's own SQLite store and durable queue, and a Conveyor-compatible
//!   HTTP API over them;
//! - [`conveyor`]: a Conveyor deployment's NATS JetStream with upstream's subjects and JSON,
//!   and its server's REST API for the drivers' client.
//!
//! The manager sees only [`EventSource`] and [`LogPipeline`]: a delivery comes in, its
//! [`Settlement`] goes back, and the backends differ behind that.

pub mod conveyor;
pub mod embedded;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, EventSourceKind};
use crate::conveyor::Resource;
use crate::manager::{DriverPolicy, Policies};
use crate::metrics::{Gauges, Metrics};
use crate::registry::Registry;
use crate::result::RunResult;
use crate::wasm::{DriverInfo, LogSink, Sandbox};

/// One event delivered to one driver.
#[derive(Debug)]
pub struct Delivery<T> {
    /// The source's handle on the delivery, to settle it.
    pub token: T,
    /// The driver it is for.
    pub driver: String,
    /// `create`, `update`, `delete` or `process`.
    pub event: String,
    /// The resource as JSON text, as the driver gets it.
    pub payload: String,
    /// The same resource, parsed once by the source.
    pub resource: Resource,
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
    /// Record (or publish) the final result, then acknowledge.
    Done(Box<RunResult>),
    /// Record (or publish) the final result of a transient failure that ran out of attempts,
    /// then stop redelivery (a broker records it as terminated).
    GaveUp(Box<RunResult>),
    /// Deliver again after `delay` (a nak with delay).
    Retry {
        /// How long to wait.
        delay: Duration,
    },
    /// Acknowledge without a result: the driver does not want this event.
    Skip,
    /// Deliver again after `delay`, without counting an attempt: another host is reconciling
    /// the same resource for this driver (see [`EventSource::hold`]).
    Elsewhere {
        /// How long to wait.
        delay: Duration,
    },
}

/// Whether this host may reconcile a delivery's resource now (see [`EventSource::hold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// It may; the hold lasts until the delivery is settled.
    Held,
    /// Another host is reconciling the same resource for the same driver.
    Elsewhere,
}

/// A source of deliveries, one stream per driver.
pub trait EventSource: Send + Sync + 'static {
    /// The handle a delivery carries back to `settle`.
    type Token: Send + Sync + 'static;
    /// Why the source failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Prepares deliveries for a driver (a durable consumer, say). Called before the first
    /// `next` for that driver; may wait for the broker.
    fn attach(
        &self,
        driver: &DriverInfo,
        policy: &DriverPolicy,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Waits for the next delivery for `driver`.
    fn next(
        &self,
        driver: &str,
    ) -> impl Future<Output = Result<Delivery<Self::Token>, Self::Error>> + Send;

    /// Takes the delivery's resource for this host, across every host that serves the driver,
    /// before its reconcile; the manager already holds it within this host. The hold ends
    /// when the delivery is settled. A source with a single consumer (the embedded queue)
    /// has nothing to take.
    fn hold(
        &self,
        delivery: &Delivery<Self::Token>,
    ) -> impl Future<Output = Result<Hold, Self::Error>> + Send {
        let _ = delivery;
        std::future::ready(Ok(Hold::Held))
    }

    /// Records what became of a delivery. On success the delivery is never handed out again;
    /// on error it will be, later (at-least-once).
    fn settle(
        &self,
        delivery: Delivery<Self::Token>,
        settlement: Settlement,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Where a run's log lines go: a [`LogSink`] that can also wait until every line written so
/// far has reached its destination, so a result is never recorded before its logs.
#[async_trait::async_trait]
pub trait LogPipeline: LogSink {
    /// Waits until every line written before the call is stored or published.
    async fn flush(&self);

    /// Waits until every line written before the call is sure to be stored or published
    /// before anything the caller writes after it returns (a run's result): [`flush`] by
    /// default; sooner where the destination keeps that order itself (embedded mode: the
    /// lines are handed to the store's writer, whose writes commit in order).
    ///
    /// [`flush`]: LogPipeline::flush
    async fn order(&self) {
        self.flush().await;
    }
}

/// What the daemon gives every backend.
pub struct Shared {
    /// The loaded drivers.
    pub registry: Arc<Registry>,
    /// The sandbox the manager runs them in.
    pub sandbox: Arc<Sandbox>,
    /// The host's metrics.
    pub metrics: Arc<Metrics>,
    /// Each driver's limits, grants and retry policy.
    pub policies: Policies,
    /// Cancelled when the host stops.
    pub shutdown: CancellationToken,
}

/// A started backend.
pub struct Started {
    /// The manager, running until shutdown; it ends once its runs in flight have settled.
    pub manager: JoinHandle<()>,
    /// The log pipeline, flushed last on shutdown.
    pub logs: Arc<dyn LogPipeline>,
    /// The backend's own HTTP routes (the embedded API; none in NATS mode).
    pub routes: axum::Router,
    /// Gauges read when `/metrics` is scraped (queue depth and runs, where the backend keeps
    /// them).
    pub gauges: Option<Arc<dyn Gauges>>,
}

/// Starts the backend the config names.
pub async fn start(config: &Config, shared: Shared) -> anyhow::Result<Started> {
    match config.events.source {
        EventSourceKind::Embedded => {
            embedded::start(embedded::Settings::from_config(config), shared)
        }
        EventSourceKind::Nats => {
            conveyor::start(conveyor::Settings::from_config(config), shared).await
        }
    }
}
