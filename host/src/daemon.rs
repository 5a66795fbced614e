//! `conveyor-host run`: builds the engine and the drivers registry, starts the backend the
//! config names, serves the HTTP API, and shuts them down in order on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, OpsState};
use crate::backend::{self, LogPipeline, Shared};
use crate::config::{Config, EventSourceKind};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::wasm::Sandbox;
use crate::wasm::cache::ComponentCache;
use crate::wasm::engine::{self, EngineSettings};
use crate::wasm::imports::log::TracingSink;

/// How long open HTTP connections (log streams) get to close after a shutdown signal.
const HTTP_DRAIN: Duration = Duration::from_secs(3);

/// A running host.
pub struct Running {
    /// The address the API listens on.
    pub addr: SocketAddr,
    /// `http`, or `https` with `[api.tls]`.
    pub scheme: &'static str,
    shutdown: CancellationToken,
    manager: JoinHandle<()>,
    server: JoinHandle<std::io::Result<()>>,
    logs: Arc<dyn LogPipeline>,
}

/// Runs the host until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let host = start(config).await?;
    println!("conveyor-host listening on {}://{}", host.scheme, host.addr);
    signal().await;
    host.stop().await;
    Ok(())
}

/// Starts the host: loads the drivers, starts the configured backend and serves the API.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let open = !config.api.auth.configured();
    if open && !config.api.listen.ip().is_loopback() {
        anyhow::ensure!(
            config.api.insecure,
            "api.listen = {} is not a loopback address and [api.auth] has neither tokens nor \
             jwt: anyone who can reach it could run the drivers and their secrets. Configure \
             [[api.auth.tokens]] or [api.auth.jwt], or set api.insecure = true to serve \
             without authentication",
            config.api.listen
        );
        tracing::warn!(
            listen = %config.api.listen,
            "serving the API without authentication on a non-loopback address (api.insecure = true)"
        );
    }
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
    registry
        .load_all()
        .with_context(|| format!("cannot read drivers_dir {}", config.drivers_dir.display()))?;
    tokio::spawn(warn_about_the_loaded_drivers(
        registry.clone(),
        config.clone(),
    ));

    let metrics = Arc::new(Metrics::new());
    let started = backend::start(
        &config,
        Shared {
            registry: registry.clone(),
            sandbox,
            metrics: metrics.clone(),
            policies: config.policies(),
            shutdown: shutdown.clone(),
        },
    )
    .await?;
    let app = api::app(
        OpsState {
            registry,
            metrics,
            gauges: started.gauges,
        },
        started.routes,
        // The document of the routes the mode's backend serves (NATS mode serves none of
        // its own).
        match config.events.source {
            EventSourceKind::Embedded => api::embedded_openapi(),
            EventSourceKind::Nats => utoipa::openapi::OpenApi::default(),
        },
        api::Auth::new(
            config.api.auth.tokens(),
            config.api.auth.jwt_verifier(),
            config.api.auth.open_metrics,
            config.api.insecure,
        ),
        usize::try_from(config.api.max_body).unwrap_or(usize::MAX),
        &api::CorsOrigins::from_config(
            config.api.cors_origins.as_deref(),
            config.api.auth.configured(),
        ),
    );

    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen on {} (api.listen)", config.api.listen))?;
    let addr = listener.local_addr()?;
    let limits = api::ServeLimits {
        max_connections: config.api.max_connections,
        max_connections_per_client: config.api.max_connections_per_client,
        header_timeout: config.api.header_timeout,
        idle_timeout: config.api.idle_timeout,
    };
    let tls = match &config.api.tls {
        Some(t) => Some(api::tls_acceptor(&t.cert, &t.key, t.client_ca.as_deref())?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = tokio::spawn(api::serve(listener, app, limits, tls, shutdown.clone()));
    tracing::info!(%addr, %scheme, source = %config.events.source, "conveyor-host is ready");
    Ok(Running {
        addr,
        scheme,
        shutdown,
        manager: started.manager,
        server,
        logs: started.logs,
    })
}

/// Once the drivers found at start are loaded, warns about configured drivers that are not
/// there and about concurrency the instance pool cannot hold.
async fn warn_about_the_loaded_drivers(registry: Arc<Registry>, config: Config) {
    registry.startup_settled(Duration::MAX).await;
    for name in config.drivers.keys() {
        if registry.get(name).is_none() {
            tracing::warn!(driver = %name, "[drivers.{name}] is configured but no such driver is loaded (yet)");
        }
    }
    // Every live instance takes a pool slot, whatever its language: when the drivers may run
    // more at once than the pool holds, the surplus fails to instantiate and is retried, so
    // one busy driver can crowd out the others.
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
