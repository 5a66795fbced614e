//! `conveyor-host run`: wires the engine, the drivers, the event source (embedded queue or
//! NATS), the log pipeline, the manager and the HTTP API together, and shuts them down in order on SIGTERM or
//! Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::{Config, EventSourceKind};
use crate::events::embedded::EmbeddedQueue;
use crate::events::nats::NatsSource;
use crate::logs::nats::NatsLogs;
use crate::logs::{LogHub, LogPipeline};
use crate::manager::Manager;
use crate::registry::Registry;
use crate::resources::Resources;
use crate::rest_client::RestClient;
use crate::store::Store;
use crate::wasm::ApiClient;
use crate::wasm::Sandbox;
use crate::wasm::cache::ComponentCache;
use crate::wasm::engine::{self, EngineSettings};
use crate::wasm::imports::client::NoClient;
use crate::wasm::imports::log::TracingSink;

/// How long open HTTP connections (log streams) get to close after a shutdown signal.
const HTTP_DRAIN: Duration = Duration::from_secs(3);

/// A running host.
pub struct Running {
    /// The address the API listens on.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    manager: JoinHandle<()>,
    server: JoinHandle<std::io::Result<()>>,
    logs: Arc<dyn LogPipeline>,
}

/// Runs the host until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let host = start(config).await?;
    println!("conveyor-host listening on http://{}", host.addr);
    signal().await;
    host.stop().await;
    Ok(())
}

/// Starts the host: loads the drivers, starts the manager on the configured event source and
/// serves the API.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    anyhow::ensure!(
        config.drivers_dir.is_dir(),
        "drivers_dir {} is not a directory",
        config.drivers_dir.display()
    );
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;

    let engine = engine::build(&EngineSettings {
        pool_instances: config.engine.pool_instances,
        max_memory: config.max_memory(),
    })?;
    engine::start_epoch_ticker(&engine).context("cannot start the epoch ticker")?;
    let sandbox = Arc::new(Sandbox::new(engine.clone())?);
    let cache = ComponentCache::new(&engine, &config.data_dir.join("cache"))
        .context("cannot create the compile cache in data_dir")?;
    let registry = Arc::new(Registry::new(
        &config.drivers_dir,
        sandbox.clone(),
        cache,
        Arc::new(TracingSink),
    ));
    // Watch before the first scan, so a file dropped in meanwhile is not missed (a change
    // seen twice is loaded once: an unchanged sha256 is skipped).
    let shutdown = CancellationToken::new();
    registry
        .clone()
        .watch(shutdown.clone())
        .with_context(|| format!("cannot watch drivers_dir {}", config.drivers_dir.display()))?;
    // The API starts while drivers load: a first compile of a Python or JavaScript component
    // takes seconds and must not hold up the others (GET /health lists what is loading).
    let initial_load = registry
        .load_all()
        .with_context(|| format!("cannot read drivers_dir {}", config.drivers_dir.display()))?;
    {
        let (registry, config) = (registry.clone(), config.clone());
        tokio::spawn(async move {
            let _ = initial_load.await;
            for name in config.drivers.keys() {
                if registry.get(name).is_none() {
                    tracing::warn!(driver = %name, "[drivers.{name}] is configured but no such driver is loaded (yet)");
                }
            }
            // Every live instance takes a pool slot, whatever its language: when the drivers
            // may run more at once than the pool holds, the surplus fails to instantiate and
            // is retried, so one busy driver can crowd out the others.
            let wanted: u64 = registry
                .all()
                .iter()
                .map(|d| u64::from(config.driver_settings(&d.info.name).concurrency))
                .sum();
            let pool = u64::from(config.engine.pool_instances);
            if wanted > pool {
                tracing::warn!(
                    wanted,
                    pool,
                    "the loaded drivers' concurrency adds up to {wanted}, more than engine.pool_instances = {pool}: raise pool_instances or lower concurrency"
                );
            }
        });
    }

    let (manager, logs, app): (JoinHandle<()>, Arc<dyn LogPipeline>, axum::Router) = match config
        .events
        .source
    {
        EventSourceKind::Embedded => {
            let db = config.data_dir.join("conveyor-host.db");
            let store = Arc::new(
                Store::open(&db)
                    .with_context(|| format!("cannot open the store {}", db.display()))?,
            );
            let logs = LogHub::start(store.clone());
            let queue = EmbeddedQueue::new(store.clone());
            let resources = Arc::new(Resources::new(
                store.clone(),
                registry.clone(),
                queue.clone(),
                config.runs.missing_driver_wait,
            ));
            tokio::spawn(queue.clone().fail_missing_drivers(
                registry.clone(),
                config.runs.missing_driver_wait,
                shutdown.clone(),
            ));
            let manager = Manager::new(
                queue,
                registry.clone(),
                sandbox,
                logs.clone(),
                resources.clone(),
                config.clone(),
            );
            let app = api::router(AppState {
                resources,
                store,
                logs: logs.clone(),
                registry: registry.clone(),
            });
            (tokio::spawn(manager.run(shutdown.clone())), logs, app)
        }
        EventSourceKind::Nats => {
            let source = Arc::new(NatsSource::connect(&config.events).await?);
            let logs = Arc::new(NatsLogs::start(source.client()));
            let client: Arc<dyn ApiClient> = match &config.conveyor.api_url {
                Some(url) => Arc::new(RestClient::new(url)?),
                None => Arc::new(NoClient(
                    "the Conveyor API client is not configured: set [conveyor] api_url in the host config",
                )),
            };
            let manager = Manager::new(
                source,
                registry.clone(),
                sandbox,
                logs.clone(),
                client,
                config.clone(),
            );
            let app = api::operations_router(registry.clone());
            (tokio::spawn(manager.run(shutdown.clone())), logs, app)
        }
    };

    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen on {} (api.listen)", config.api.listen))?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );
    tracing::info!(%addr, source = %config.events.source, "conveyor-host is ready");
    Ok(Running {
        addr,
        shutdown,
        manager,
        server,
        logs,
    })
}

impl Running {
    /// Stops fetching events, lets running reconciles finish (each within its timeout),
    /// flushes the logs and closes the API.
    pub async fn stop(self) {
        tracing::info!("shutting down: letting running reconciles finish");
        self.shutdown.cancel();
        if let Err(e) = self.manager.await {
            tracing::error!(error = %e, "the manager stopped abnormally");
        }
        self.logs.flush().await;
        if tokio::time::timeout(HTTP_DRAIN, self.server).await.is_err() {
            tracing::info!("closed open log streams");
        }
        tracing::info!("stopped");
    }
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the host");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
