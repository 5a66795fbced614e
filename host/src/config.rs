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
    /// Runs and pipelines.
    #[serde(default)]
    pub runs: RunsConfig,
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
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// `embedded` (the default): the host's own durable queue, fed by its HTTP API.
    #[serde(default)]
    pub source: EventSourceKind,
}

/// The kinds of event source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventSourceKind {
    /// The host's own SQLite-backed queue.
    #[default]
    Embedded,
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
    /// Events one driver handles at the same time.
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
    4
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
        match checks.iter().find(|(bad, _)| *bad) {
            Some((_, message)) => Err(message.to_string()),
            None => Ok(()),
        }
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
    fn missing_required_key_is_named() {
        let e = parse("data_dir = \"x\"\n").unwrap_err();
        assert!(e.contains("drivers_dir"), "{e}");
    }
}
