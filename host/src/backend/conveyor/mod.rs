//! NATS mode: the host joins a Conveyor deployment. Events come from its JetStream with
//! upstream's subjects and JSON ([`jetstream`]), log lines go to its log subjects ([`logs`]),
//! results are published for its pipeline engine, and the drivers' API client calls its REST
//! API ([`rest_client`]). Several hosts serving the same driver share its durable consumer,
//! pulled in batches for the free slots ([`pull`]), and take a lease on each resource before
//! reconciling it ([`lease`]), so that one resource is reconciled by one host at a time.

pub mod jetstream;
pub mod lease;
pub mod logs;
mod pull;
pub mod rest_client;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::{Shared, Started};
use crate::config::{Config, EventsConfig};
use crate::jwt::Signer;
use crate::manager::Manager;
use crate::wasm::ApiClient;
use crate::wasm::imports::client::NoClient;

/// What NATS mode takes from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[events]`: the NATS URL, TLS and ack wait.
    pub events: EventsConfig,
    /// `[conveyor] api_url`: the server's REST API, for the drivers' client.
    pub api_url: Option<String>,
    /// The PEM certificate chain and key that sign the REST client's JWTs: `[conveyor]`
    /// `cert` and `key`, else `[events.tls]`'s.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Settings {
    /// The NATS settings of a host config.
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            events: config.events.clone(),
            api_url: config.conveyor.api_url.clone(),
            identity: config
                .conveyor
                .identity(&config.events)
                .map(|(cert, key)| (cert.to_path_buf(), key.to_path_buf())),
        }
    }
}

/// Connects to NATS and starts the log publisher and the manager.
pub async fn start(settings: Settings, shared: Shared) -> anyhow::Result<Started> {
    let source = Arc::new(jetstream::NatsSource::connect(&settings.events).await?);
    let logs = Arc::new(logs::NatsLogs::start(source.client()));
    let client: Arc<dyn ApiClient> = match &settings.api_url {
        Some(url) => {
            let signer = match &settings.identity {
                Some((cert, key)) => {
                    let signer = Signer::from_pem_files(cert, key).with_context(|| {
                        format!(
                            "cannot sign the Conveyor API's JWTs with {} and {}",
                            cert.display(),
                            key.display()
                        )
                    })?;
                    tracing::info!(
                        alg = signer.alg().name(),
                        cert = %cert.display(),
                        "requests to the Conveyor API carry a JWT bound to this certificate"
                    );
                    Some(Arc::new(signer))
                }
                None => None,
            };
            Arc::new(rest_client::RestClient::new(url, signer)?)
        }
        None => Arc::new(NoClient(
            "the Conveyor API client is not configured: set [conveyor] api_url in the host config",
        )),
    };
    let manager = Manager::new(
        source.clone(),
        logs.clone(),
        client,
        &shared,
        Default::default(),
    );
    Ok(Started {
        manager: tokio::spawn(async move {
            manager.run(shared.shutdown).await;
            // The last acks are confirmed and their leases given back before the host stops.
            source.drain().await;
        }),
        logs,
        routes: axum::Router::new(),
        gauges: None,
    })
}
