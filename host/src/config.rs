//! The host configuration file (`host.toml`): its model, defaults and validation.
//!
//! Every error names the key at fault (for example `defaults.timeout`) and the file, so a typo
//! never turns into a silently ignored setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A configuration error: the file, and what is wrong with which key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has a bad value.
    #[error("{path}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// The whole host configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The directory holding driver components (`*.wasm`). Relative to the config file.
    pub drivers_dir: PathBuf,
    /// Where the host keeps its SQLite store and compiled-component cache. Relative to the
    /// config file.
    pub data_dir: PathBuf,
    /// The HTTP API.
    #[serde(default)]
    pub api: ApiConfig,
    /// Where events come from.
    #[serde(default)]
    pub events: EventsConfig,
    /// Budgets and retry policy that apply to every driver.
    #[serde(default)]
    pub defaults: DriverDefaults,
    /// The WebAssembly engine's instance pool.
    #[serde(default)]
    pub engine: EngineConfig,
    /// The Conveyor server, for the drivers' API client in NATS mode.
    #[serde(default)]
    pub conveyor: ConveyorConfig,
    /// Runs and pipelines.
    #[serde(default)]
    pub runs: RunsConfig,
}

/// `[conveyor]`: the Conveyor server this host works for (NATS mode).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConveyorConfig {
    /// The server's REST API, for the drivers' `client` import, e.g. `http://localhost:8080`.
    pub api_url: Option<String>,
}

/// `[runs]`: runs and pipelines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsConfig {
    /// How long an event waits for a driver that is not loaded (a pipeline step naming a
    /// driver that is not there, or an event queued before its driver was removed) before
    /// its step fails, and with it the run.
    #[serde(default = "default_missing_driver_wait", deserialize_with = "duration")]
    pub missing_driver_wait: Duration,
}

impl Default for RunsConfig {
    fn default() -> Self {
        RunsConfig {
            missing_driver_wait: default_missing_driver_wait(),
        }
    }
}

fn default_missing_driver_wait() -> Duration {
    Duration::from_secs(60)
}

/// `[api]`: the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The address to listen on, `127.0.0.1:8080` by default. Port 0 picks a free port; the
    /// host prints the address it bound.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// `[events]`: where events come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// `embedded` (the default): the host's own durable queue, fed by its HTTP API.
    /// `nats`: a Conveyor deployment's NATS JetStream.
    #[serde(default)]
    pub source: EventSourceKind,
    /// NATS server URL(s), comma-separated (`nats` source). Default `nats://127.0.0.1:4222`.
    #[serde(default)]
    pub url: Option<String>,
    /// TLS for NATS: the CA to trust, and the client certificate and key of Conveyor's mTLS.
    #[serde(default)]
    pub tls: Option<NatsTls>,
    /// How long JetStream waits for an ack before redelivering (`nats` source). Running
    /// reconciles send in-progress acks well within it.
    #[serde(default = "default_ack_wait", deserialize_with = "duration")]
    pub ack_wait: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            source: EventSourceKind::default(),
            url: None,
            tls: None,
            ack_wait: default_ack_wait(),
        }
    }
}

fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}

/// `[events.tls]`: TLS for the NATS connection. Relative paths are relative to the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsTls {
    /// PEM CA certificate(s) that sign the server's certificate.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (with `key`), for servers that require mTLS.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

/// The kinds of event source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventSourceKind {
    /// The host's own SQLite-backed queue.
    #[default]
    Embedded,
    /// A Conveyor deployment's NATS JetStream.
    Nats,
}

impl EventsConfig {
    /// The NATS URL, with upstream's default.
    pub fn nats_url(&self) -> &str {
        self.url.as_deref().unwrap_or("nats://127.0.0.1:4222")
    }
}

/// `[defaults]`: per-driver budgets and retry policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverDefaults {
    /// Wall-clock limit for one reconcile, including time blocked in host calls (`"30s"`).
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Linear-memory limit for one instance (`"64MiB"`).
    #[serde(default = "default_memory", deserialize_with = "byte_size")]
    pub memory: u64,
    /// Events one driver handles at the same time (1 by default, as upstream).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Deliveries of one event before a transient failure becomes final.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The first retry delay; it doubles on each further attempt, up to five minutes.
    #[serde(default = "default_backoff", deserialize_with = "duration")]
    pub backoff: Duration,
}

impl Default for DriverDefaults {
    fn default() -> Self {
        DriverDefaults {
            timeout: default_timeout(),
            memory: default_memory(),
            concurrency: default_concurrency(),
            max_attempts: default_max_attempts(),
            backoff: default_backoff(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_memory() -> u64 {
    64 << 20
}
fn default_concurrency() -> u32 {
    // One at a time, as upstream's runtimes do: a driver must opt in to parallel runs.
    1
}
fn default_max_attempts() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

/// `[engine]`: the instance pool shared by all drivers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Component instances alive at once across all drivers; the pool reserves slots for this
    /// many up front.
    #[serde(default = "default_pool_instances")]
    pub pool_instances: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pool_instances: default_pool_instances(),
        }
    }
}

fn default_pool_instances() -> u32 {
    64
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); use a number and a unit, such as \"30s\" or \"500ms\""
        ))
    })
}

fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid size {s:?} ({e}); use a number and a unit, such as \"64MiB\""
            ))
        })
}

impl Config {
    /// Reads and validates a config file. Relative paths in it are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // Absolute, so that paths in logs and `GET /drivers` do not depend on the working
        // directory the host was started from.
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses config text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let mut config: Config = toml::from_str(text).map_err(describe_toml_error)?;
        config.drivers_dir = base.join(&config.drivers_dir);
        config.data_dir = base.join(&config.data_dir);
        if let Some(tls) = &mut config.events.tls {
            for path in [&mut tls.ca, &mut tls.cert, &mut tls.key]
                .into_iter()
                .flatten()
            {
                *path = base.join(&*path);
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let d = &self.defaults;
        let checks = [
            (
                d.timeout.is_zero(),
                "defaults.timeout: must be more than zero",
            ),
            (d.memory < 1 << 20, "defaults.memory: must be at least 1MiB"),
            (
                d.concurrency == 0,
                "defaults.concurrency: must be at least 1",
            ),
            (
                d.max_attempts == 0,
                "defaults.max_attempts: must be at least 1",
            ),
            (
                self.engine.pool_instances == 0,
                "engine.pool_instances: must be at least 1",
            ),
        ];
        if let Some((_, message)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(message.to_string());
        }
        let e = &self.events;
        let nats_only = e.url.is_some() || e.tls.is_some();
        if e.source == EventSourceKind::Embedded && nats_only {
            return Err("events.url and events.tls apply only to source = \"nats\"".to_string());
        }
        if let Some(tls) = &e.tls
            && tls.cert.is_some() != tls.key.is_some()
        {
            return Err("events.tls.cert and events.tls.key must be given together".to_string());
        }
        if e.ack_wait < Duration::from_secs(1) {
            return Err("events.ack_wait: must be at least 1s".to_string());
        }
        if let Some(url) = &self.conveyor.api_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "conveyor.api_url: {url:?} must start with http:// or https://"
            ));
        }
        Ok(())
    }
}

/// toml's full rendering quotes the offending line, so the key is always in view, even for a
/// bad value whose own message cannot know its key.
fn describe_toml_error(e: toml::de::Error) -> String {
    e.to_string().trim_end().to_string()
}

impl fmt::Display for EventSourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventSourceKind::Embedded => f.write_str("embedded"),
            EventSourceKind::Nats => f.write_str("nats"),
        }
    }
}

/// Per-driver settings resolved from the defaults (later, from `[drivers.<name>]` too).
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// Wall-clock limit for one reconcile.
    pub timeout: Duration,
    /// Memory limit for one instance, in bytes.
    pub memory: u64,
    /// Events in flight at once.
    pub concurrency: u32,
    /// Deliveries before a transient failure is final.
    pub max_attempts: u32,
    /// The first retry delay.
    pub backoff: Duration,
}

impl Config {
    /// The settings that apply to a driver.
    pub fn driver_settings(&self, _driver: &str) -> DriverSettings {
        let d = &self.defaults;
        DriverSettings {
            timeout: d.timeout,
            memory: d.memory,
            concurrency: d.concurrency,
            max_attempts: d.max_attempts,
            backoff: d.backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/conveyor"))
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let c = parse("drivers_dir = \"drivers\"\ndata_dir = \"/var/lib/ch\"\n").unwrap();
        assert_eq!(c.drivers_dir, Path::new("/etc/conveyor/drivers"));
        assert_eq!(c.data_dir, Path::new("/var/lib/ch"));
        assert_eq!(c.api.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.events.source, EventSourceKind::Embedded);
        assert_eq!(c.defaults.timeout, Duration::from_secs(30));
        assert_eq!(c.defaults.memory, 64 << 20);
    }

    #[test]
    fn sizes_and_durations_parse() {
        let c = parse(
            "drivers_dir = \"d\"\ndata_dir = \"x\"\n[defaults]\ntimeout = \"1500ms\"\nmemory = \"16MiB\"\n",
        )
        .unwrap();
        assert_eq!(c.defaults.timeout, Duration::from_millis(1500));
        assert_eq!(c.defaults.memory, 16 << 20);
    }

    #[test]
    fn unknown_key_is_named() {
        let e =
            parse("drivers_dir = \"d\"\ndata_dir = \"x\"\n[api]\nlisten_on = \"1\"\n").unwrap_err();
        assert!(e.contains("listen_on"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = parse("drivers_dir = \"d\"\ndata_dir = \"x\"\n[defaults]\ntimeout = \"soon\"\n")
            .unwrap_err();
        assert!(e.contains("timeout") && e.contains("duration"), "{e}");
        let e = parse("drivers_dir = \"d\"\ndata_dir = \"x\"\n[events]\nsource = \"kafka\"\n")
            .unwrap_err();
        assert!(e.contains("kafka"), "{e}");
        let e = parse("drivers_dir = \"d\"\ndata_dir = \"x\"\n[defaults]\nconcurrency = 0\n")
            .unwrap_err();
        assert!(e.contains("defaults.concurrency"), "{e}");
    }

    #[test]
    fn nats_settings_parse_and_check() {
        let c = parse(
            "drivers_dir = \"d\"\ndata_dir = \"x\"\n[events]\nsource = \"nats\"\nurl = \"nats://h:4222\"\nack_wait = \"10s\"\n[events.tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n[conveyor]\napi_url = \"http://h:8080\"\n",
        )
        .unwrap();
        assert_eq!(c.events.source, EventSourceKind::Nats);
        assert_eq!(c.events.nats_url(), "nats://h:4222");
        assert_eq!(
            c.events.tls.unwrap().ca.unwrap(),
            Path::new("/etc/conveyor/ca.pem")
        );
        let e = parse("drivers_dir = \"d\"\ndata_dir = \"x\"\n[events]\nurl = \"nats://h\"\n")
            .unwrap_err();
        assert!(e.contains("events.url"), "{e}");
        let e = parse(
            "drivers_dir = \"d\"\ndata_dir = \"x\"\n[events]\nsource = \"nats\"\n[events.tls]\ncert = \"c\"\n",
        )
        .unwrap_err();
        assert!(e.contains("events.tls.key"), "{e}");
        let e =
            parse("drivers_dir = \"d\"\ndata_dir = \"x\"\n[conveyor]\napi_url = \"localhost\"\n")
                .unwrap_err();
        assert!(e.contains("conveyor.api_url"), "{e}");
    }

    #[test]
    fn missing_required_key_is_named() {
        let e = parse("data_dir = \"x\"\n").unwrap_err();
        assert!(e.contains("drivers_dir"), "{e}");
    }
}
