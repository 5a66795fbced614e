//! Embedded mode: the host is its own Conveyor. Resources, runs, results and logs live in the
//! host's SQLite store ([`crate::store`]); the HTTP API is Conveyor-compatible.
//!
//! A resource change goes through the [`control`] plane, which validates it and, by the
//! [`pipeline`] rules, stores it with its run and the events it starts in one transaction; the
//! [`queue`] delivers those events to the manager and takes their results back; the [`logs`]
//! hub stores every line before it is streamed.

pub mod control;
pub mod logs;
pub mod pipeline;
pub mod queue;
pub mod retention;
pub mod schema;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::{Shared, Started};
use crate::config::Config;
use crate::manager::{Cancellations, Manager};
use crate::metrics::{Gauges, GaugesError, RunGauges};
use crate::store::Store;

/// What embedded mode takes from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The SQLite file.
    pub database: PathBuf,
    /// How long an event waits for a driver that is not loaded before its step fails; also
    /// how long a resource change waits for the drivers found at start to load.
    pub missing_driver_wait: Duration,
    /// Log streams open at once.
    pub max_streams: usize,
    /// Log streams open at once from one client address.
    pub max_streams_per_client: usize,
    /// What the store keeps of finished runs and log lines.
    pub retention: crate::config::RetentionConfig,
}

impl Settings {
    /// The embedded settings of a host config.
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            database: config.data_dir.join("conveyor-host.db"),
            missing_driver_wait: config.runs.missing_driver_wait,
            max_streams: config.api.max_streams,
            max_streams_per_client: config.api.max_streams_per_client,
            retention: config.retention.clone(),
        }
    }
}

/// Opens the store and starts the queue, the log hub, the control plane, the missing-driver
/// sweeper, the pruner and the manager; returns the embedded API's routes.
pub fn start(settings: Settings, shared: Shared) -> anyhow::Result<Started> {
    let db = &settings.database;
    let store = Arc::new(
        Store::open(db).with_context(|| format!("cannot open the store {}", db.display()))?,
    );
    let logs = logs::LogHub::start(store.clone(), shared.metrics.clone());
    let queue = queue::Queue::new(store.clone());
    let resources = Arc::new(control::Resources::new(
        store.clone(),
        shared.registry.clone(),
        settings.missing_driver_wait,
    ));
    tokio::spawn(queue.clone().fail_missing_drivers(
        shared.registry.clone(),
        settings.missing_driver_wait,
        shared.shutdown.clone(),
    ));
    tokio::spawn(retention::run(
        store.clone(),
        settings.retention.clone(),
        shared.shutdown.clone(),
    ));
    let cancellations = Arc::new(Cancellations::default());
    let manager = Manager::new(
        queue,
        logs.clone(),
        resources.clone(),
        &shared,
        cancellations.clone(),
    );
    let routes = crate::api::embedded_routes(crate::api::EmbeddedState {
        resources,
        store: store.clone(),
        logs: logs.clone(),
        cancellations,
        streams: crate::api::StreamSlots::new(
            settings.max_streams,
            settings.max_streams_per_client,
        ),
    });
    Ok(Started {
        manager: tokio::spawn(manager.run(shared.shutdown)),
        logs,
        routes,
        gauges: Some(store as Arc<dyn Gauges>),
    })
}

impl Gauges for Store {
    fn read(&self) -> Result<RunGauges, GaugesError> {
        Ok(RunGauges {
            queue_depths: self.queue_depths().map_err(GaugesError::new)?,
            runs_by_status: self
                .runs_by_status()
                .map_err(GaugesError::new)?
                .into_iter()
                .map(|(s, n)| (s.as_str(), n))
                .collect(),
        })
    }
}
