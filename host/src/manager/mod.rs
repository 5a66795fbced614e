//! The driver manager: the one place that knows both the backends and the sandbox. For each
//! loaded driver it runs worker slots that take deliveries from the event source and carry
//! each through one run's stages (see [`run`]), and it starts and stops them as the registry
//! gains and loses drivers (hot reload).
//!
//! - [`slots`]: a driver's worker slots, up to its concurrency;
//! - [`run`]: one delivery: admit → lock → sandbox → verdict → flush logs → settle;
//! - [`retry`]: what an outcome means (done, retry after a backoff, give up);
//! - [`policy`]: each driver's limits, grants and retry policy, resolved from the config.

mod cancel;
pub(crate) mod client;
pub mod policy;
pub mod retry;
mod run;
mod slots;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use cancel::Cancellations;
pub use policy::{ClientBudget, DriverPolicy, Policies, RetryPolicy};

use crate::backend::{EventSource, LogPipeline, Shared};
use crate::keyed_lock::KeyedLocks;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::wasm::{ApiClient, Sandbox};

/// Runs drivers on the deliveries of one event source.
pub struct Manager<S: EventSource> {
    source: Arc<S>,
    registry: Arc<Registry>,
    sandbox: Arc<Sandbox>,
    logs: Arc<dyn LogPipeline>,
    client: Arc<dyn ApiClient>,
    policies: Policies,
    metrics: Arc<Metrics>,
    cancellations: Arc<Cancellations>,
    /// One reconcile per (driver, resource type, resource name) at a time.
    keys: Arc<KeyedLocks<(String, String, String)>>,
}

impl<S: EventSource> Manager<S> {
    /// A manager over `source`, writing run logs to `logs` and answering the drivers' client
    /// import with `client`; call [`Manager::run`] to start it.
    pub fn new(
        source: Arc<S>,
        logs: Arc<dyn LogPipeline>,
        client: Arc<dyn ApiClient>,
        shared: &Shared,
        cancellations: Arc<Cancellations>,
    ) -> Arc<Self> {
        Arc::new(Manager {
            source,
            registry: shared.registry.clone(),
            sandbox: shared.sandbox.clone(),
            logs,
            client,
            policies: shared.policies.clone(),
            metrics: shared.metrics.clone(),
            cancellations,
            keys: Arc::default(),
        })
    }

    /// Serves every loaded driver until `shutdown` is cancelled, then lets the runs in flight
    /// finish (each is bounded by its timeout). A driver added to the registry gets its slots;
    /// a removed one has its slots stopped once its runs in flight finish, and one whose
    /// resource types changed gets new slots on a new attach.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.registry.subscribe();
        // Each served driver's stop token and the resource types it was attached with.
        let mut drivers: HashMap<String, (CancellationToken, Vec<String>)> = HashMap::new();
        let mut tasks = JoinSet::new();
        loop {
            let loaded: HashMap<String, Vec<String>> = self
                .registry
                .all()
                .iter()
                .map(|d| (d.info.name.clone(), d.info.resources.clone()))
                .collect();
            // A removed driver stops; one reloaded with other resource types is attached
            // again (in NATS mode its consumer's filter subjects follow). The runs in flight
            // of a stopped one finish first.
            drivers.retain(|name, (stop, resources)| {
                let keep = loaded.get(name) == Some(resources);
                if !keep {
                    stop.cancel();
                }
                keep
            });
            for (name, resources) in loaded {
                if !drivers.contains_key(&name) {
                    let stop = shutdown.child_token();
                    drivers.insert(name.clone(), (stop.clone(), resources));
                    tasks.spawn(self.clone().serve_driver(name, stop));
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
}
