//! The host configuration file (`host.toml`): its model and defaults ([`Config`]), its units,
//! the drivers' environment and secrets, the checks, and the resolution of the model into
//! what the rest of the host takes (see [`resolve`]).
//!
//! Every error names the key at fault (for example `defaults.timeout`) and the file, so a typo
//! never turns into a silently ignored setting.

mod checks;
mod resolve;
mod secrets;
mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use resolve::DriverSettings;
pub use secrets::{EnvSource, Secret, SecretSource};

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
    /// `[drivers.<name>]`: per-driver budgets (overriding `[defaults]`) and capabilities.
    #[serde(default)]
    pub drivers: BTreeMap<String, DriverConfig>,
    /// How long finished runs and log lines are kept (embedded mode).
    #[serde(default)]
    pub retention: RetentionConfig,
}

/// `[retention]`: what the embedded store keeps. Each is an age (`"30d"`) or a count
/// (`100000`); absent, everything is kept. Runs that are not over are never removed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Finished runs, with their steps, results and log lines.
    pub runs: Option<Keep>,
    /// Log lines (of any run; a run that is not over keeps its lines).
    pub logs: Option<Keep>,
    /// How often the store is pruned (`"1m"`).
    #[serde(
        default = "default_prune_interval",
        deserialize_with = "units::duration"
    )]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            runs: None,
            logs: None,
            interval: default_prune_interval(),
        }
    }
}

fn default_prune_interval() -> Duration {
    Duration::from_secs(60)
}

/// How much of something to keep: what is younger than an age, or the newest so many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// What is younger than this.
    Age(Duration),
    /// The newest this many.
    Count(u64),
}

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keep, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Age(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected an age such as \"30d\" or a count such as 100000")
        })? {
            Raw::Count(0) => Err(serde::de::Error::custom(
                "a count of 0 would keep nothing; use at least 1",
            )),
            Raw::Count(n) => Ok(Keep::Count(n)),
            Raw::Age(s) => humantime::parse_duration(&s).map(Keep::Age).map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid age {s:?} ({e}); use a number and a unit, such as \"7d\""
                ))
            }),
        }
    }
}

/// `[conveyor]`: the Conveyor server this host works for (NATS mode).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConveyorConfig {
    /// The server's REST API, for the drivers' `client` import, e.g. `http://localhost:8080`.
    pub api_url: Option<String>,
    /// PEM certificate chain (leaf first) whose key signs the bearer JWT of every request to
    /// the server (upstream's `api.auth_enabled`), with `key`. Without it, `[events.tls]`'s
    /// `cert` and `key` are used when given. Relative to the config file.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (RSA, or ECDSA P-256 or P-384; PKCS#1, SEC1 or PKCS#8).
    pub key: Option<PathBuf>,
}

impl ConveyorConfig {
    /// The certificate and key that sign the REST client's JWTs: `[conveyor]`'s, else
    /// `[events.tls]`'s.
    pub fn identity<'a>(&'a self, events: &'a EventsConfig) -> Option<(&'a Path, &'a Path)> {
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            return Some((cert, key));
        }
        let tls = events.tls.as_ref()?;
        Some((tls.cert.as_deref()?, tls.key.as_deref()?))
    }
}

/// `[runs]`: runs and pipelines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsConfig {
    /// How long an event waits for a driver that is not loaded (a pipeline step naming a
    /// driver that is not there, or an event queued before its driver was removed) before
    /// its step fails, and with it the run.
    #[serde(
        default = "default_missing_driver_wait",
        deserialize_with = "units::duration"
    )]
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
    /// Connections held at once; when full, the connection idle the longest is closed to
    /// make room.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections held at once from one client address.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
    /// How long a client may take to send a request's headers (`"10s"`).
    #[serde(
        default = "default_header_timeout",
        deserialize_with = "units::duration"
    )]
    pub header_timeout: Duration,
    /// How long a connection with no request in flight is kept open (`"60s"`).
    #[serde(default = "default_idle_timeout", deserialize_with = "units::duration")]
    pub idle_timeout: Duration,
    /// The largest request body (`"4MiB"`); a larger one is refused with 413.
    #[serde(default = "default_max_body", deserialize_with = "units::byte_size")]
    pub max_body: u64,
    /// Log streams (SSE and WebSocket) open at once.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
    /// Log streams open at once from one client address.
    #[serde(default = "default_max_streams_per_client")]
    pub max_streams_per_client: usize,
    /// Serve on a non-loopback address without `[api.auth]` (the host warns).
    #[serde(default)]
    pub insecure: bool,
    /// The origins (`https://ci.example.com`) whose web pages may call the API (CORS), or
    /// `["*"]` for any. Unset: any origin when `[api.auth]` is configured (upstream's
    /// default), none when the API is open, so that no web page can drive an open host.
    #[serde(default)]
    pub cors_origins: Option<Vec<String>>,
    /// `[api.auth]`: who may call the API.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[api.tls]`: serve HTTPS.
    #[serde(default)]
    pub tls: Option<ApiTls>,
}

/// `[api.tls]`: the API over TLS. Relative paths are relative to the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTls {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA certificate(s): when given, clients must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
}

/// `[api.auth]`: the API's credentials. With none, the API serves loopback clients only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether `GET /metrics` needs no credentials (as upstream), `true` by default.
    #[serde(default = "default_true")]
    pub open_metrics: bool,
    /// `[[api.auth.tokens]]`: bearer tokens and their roles.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// `[api.auth.jwt]`: upstream Conveyor's JWTs bound to X.509 certificates.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// The tokens, read and hashed when the config is loaded.
    #[serde(skip)]
    resolved: Vec<crate::api::Token>,
    /// The JWT verifier, its CA read when the config is loaded.
    #[serde(skip)]
    verifier: Option<Arc<crate::jwt::Verifier>>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            open_metrics: true,
            tokens: Vec::new(),
            jwt: None,
            resolved: Vec::new(),
            verifier: None,
        }
    }
}

impl AuthConfig {
    /// The tokens, as the API checks them (digests only).
    pub fn tokens(&self) -> Vec<crate::api::Token> {
        self.resolved.clone()
    }

    /// The JWT verifier of `[api.auth.jwt]`, when configured.
    pub fn jwt_verifier(&self) -> Option<Arc<crate::jwt::Verifier>> {
        self.verifier.clone()
    }

    /// Whether any credential is configured: tokens or `[api.auth.jwt]`.
    pub fn configured(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some()
    }
}

/// `[api.auth.jwt]`: bearer JWTs as upstream Conveyor's API takes them, bound to an X.509
/// certificate that chains to `ca`; the certificate's subject common name picks the role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// PEM CA certificate(s) the tokens' certificates must chain to (upstream's `tls.ca`).
    /// Relative to the config file.
    pub ca: PathBuf,
    /// The role of a valid token whose certificate's common name is not in `subjects`;
    /// without it, such a token is refused (403).
    #[serde(default)]
    pub default_role: Option<crate::api::Role>,
    /// `[api.auth.jwt.subjects]`: certificate subject common name (CN) -> role.
    #[serde(default)]
    pub subjects: BTreeMap<String, crate::api::Role>,
}

fn default_true() -> bool {
    true
}

/// One `[[api.auth.tokens]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for the host's log (never the token).
    pub name: String,
    /// `read`, `write` or `admin`.
    pub role: crate::api::Role,
    /// Where the token comes from: `{ env = "VAR" }` or `{ file = "path" }`, as secrets.
    #[serde(flatten)]
    pub source: SecretSource,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_connections_per_client(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            max_body: default_max_body(),
            max_streams: default_max_streams(),
            max_streams_per_client: default_max_streams_per_client(),
            insecure: false,
            cors_origins: None,
            auth: AuthConfig::default(),
            tls: None,
        }
    }
}

fn default_max_connections() -> usize {
    // Well under the usual open-file limit of 1024, which the drivers' files and the store
    // share.
    512
}
fn default_max_connections_per_client() -> usize {
    256
}
fn default_max_streams() -> usize {
    256
}
fn default_max_streams_per_client() -> usize {
    64
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_body() -> u64 {
    4 << 20
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
    #[serde(default = "default_ack_wait", deserialize_with = "units::duration")]
    pub ack_wait: Duration,
    /// One reconcile per driver and resource across every host (`nats` source): a lease per
    /// resource in the JetStream key-value bucket `conveyor_host_leases`. Default on; a
    /// deployment with one host may turn it off to save two JetStream writes per event.
    #[serde(default = "default_true")]
    pub leases: bool,
    /// How long a lease outlives its last renewal (`nats` source): the lease bucket's
    /// `max_age`. A host that dies frees its resources after this. Renewed with the
    /// in-progress acks. Default `30s`.
    #[serde(default = "default_lease_ttl", deserialize_with = "units::duration")]
    pub lease_ttl: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            source: EventSourceKind::default(),
            url: None,
            tls: None,
            ack_wait: default_ack_wait(),
            leases: true,
            lease_ttl: default_lease_ttl(),
        }
    }
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(30)
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
    #[serde(default = "default_timeout", deserialize_with = "units::duration")]
    pub timeout: Duration,
    /// CPU budget for one reconcile: time spent executing WebAssembly, not time blocked in
    /// host calls (`"10s"`).
    #[serde(default = "default_cpu", deserialize_with = "units::duration")]
    pub cpu: Duration,
    /// Linear-memory limit for one instance (`"64MiB"`).
    #[serde(default = "default_memory", deserialize_with = "units::byte_size")]
    pub memory: u64,
    /// Log lines one run may write (its stdout and stderr included).
    #[serde(default = "default_log_lines")]
    pub log_lines: u32,
    /// Log bytes (messages and label values) one run may write (`"1MiB"`).
    #[serde(default = "default_log_bytes", deserialize_with = "units::byte_size")]
    pub log_bytes: u64,
    /// The largest result (message and data) a run may return (`"1MiB"`).
    #[serde(default = "default_result_size", deserialize_with = "units::byte_size")]
    pub result_size: u64,
    /// Calls one run may make through the API client import.
    #[serde(default = "default_client_calls")]
    pub client_calls: u32,
    /// Resources one run may create through the API client import.
    #[serde(default = "default_creates_per_run")]
    pub creates_per_run: u32,
    /// Events that one driver's writes through the API client may have waiting in the queue
    /// at once (embedded mode).
    #[serde(default = "default_queued_writes")]
    pub queued_writes: u32,
    /// Events one driver handles at the same time (1 by default, as upstream).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Deliveries of one event before a transient failure becomes final.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The first retry delay; it doubles on each further attempt, up to five minutes.
    #[serde(default = "default_backoff", deserialize_with = "units::duration")]
    pub backoff: Duration,
}

impl Default for DriverDefaults {
    fn default() -> Self {
        DriverDefaults {
            timeout: default_timeout(),
            cpu: default_cpu(),
            memory: default_memory(),
            log_lines: default_log_lines(),
            log_bytes: default_log_bytes(),
            result_size: default_result_size(),
            client_calls: default_client_calls(),
            creates_per_run: default_creates_per_run(),
            queued_writes: default_queued_writes(),
            concurrency: default_concurrency(),
            max_attempts: default_max_attempts(),
            backoff: default_backoff(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_cpu() -> Duration {
    Duration::from_secs(10)
}
fn default_memory() -> u64 {
    64 << 20
}
fn default_log_lines() -> u32 {
    10_000
}
fn default_log_bytes() -> u64 {
    1 << 20
}
fn default_client_calls() -> u32 {
    // Far more than a reconcile that reads a few resources needs; a loop hits it at once.
    1_000
}
fn default_creates_per_run() -> u32 {
    100
}
fn default_queued_writes() -> u32 {
    // A driver that fans out (a resource per item of its own) stays far below; one whose
    // writes feed back into its own events meets it before the queue grows without bound.
    1_000
}
fn default_result_size() -> u64 {
    1 << 20
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

/// `[drivers.<name>]`: one driver's budgets, each falling back to `[defaults]`, and the
/// capabilities granted to it. Everything not granted here is denied.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverConfig {
    /// Wall-clock limit for one reconcile.
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub timeout: Option<Duration>,
    /// CPU budget for one reconcile.
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub cpu: Option<Duration>,
    /// Memory limit for one instance.
    #[serde(default, deserialize_with = "units::opt_byte_size")]
    pub memory: Option<u64>,
    /// Events in flight at once.
    pub concurrency: Option<u32>,
    /// Log lines per run.
    pub log_lines: Option<u32>,
    /// Log bytes per run.
    #[serde(default, deserialize_with = "units::opt_byte_size")]
    pub log_bytes: Option<u64>,
    /// Largest result.
    #[serde(default, deserialize_with = "units::opt_byte_size")]
    pub result_size: Option<u64>,
    /// Client calls per run.
    pub client_calls: Option<u32>,
    /// Resources created per run.
    pub creates_per_run: Option<u32>,
    /// Events the driver's client writes may have queued.
    pub queued_writes: Option<u32>,
    /// Deliveries before a transient failure is final.
    pub max_attempts: Option<u32>,
    /// The first retry delay.
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub backoff: Option<Duration>,
    /// Host directories mounted into the guest.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Environment variables the guest sees: a literal value, or `{ env = "HOST_VAR" }`.
    #[serde(default)]
    pub env: BTreeMap<String, EnvSource>,
    /// Secrets, given to the guest as environment variables and redacted from its logs and
    /// results: `{ env = "HOST_VAR" }` or `{ file = "path" }`.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Outbound HTTP.
    #[serde(default)]
    pub http: HttpGrant,
    /// Environment and secret values, read once when the config is loaded.
    #[serde(skip)]
    resolved: Resolved,
}

/// A host directory granted to a driver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// The directory on the host. Relative to the config file.
    pub host: PathBuf,
    /// Where the guest sees it (absolute, such as `/workspace`).
    pub guest: String,
    /// `ro` (the default) or `rw`.
    #[serde(default)]
    pub mode: DirMode,
}

/// Read-only or read-write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum DirMode {
    /// Read-only.
    #[default]
    #[serde(rename = "ro")]
    ReadOnly,
    /// Read-write.
    #[serde(rename = "rw")]
    ReadWrite,
}

/// Environment and secret values of one driver, read when the config is loaded.
#[derive(Debug, Clone, Default)]
struct Resolved {
    env: Vec<(String, String)>,
    secrets: Vec<(String, Secret)>,
}

/// `[drivers.<name>.http]`: the outbound HTTP allow-list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// Hosts the driver may reach: `example.com` (ports 80 and 443), `example.com:8443`,
    /// `*.example.com` (any subdomain), `host:*` (any port), `*` (any host).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Whether the allowed hosts may resolve to loopback, private, link-local and other
    /// non-public addresses. Off by default, so an allowed name cannot be pointed at the
    /// host's own network.
    #[serde(default)]
    pub allow_private: bool,
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
        if let Some(tls) = &mut config.api.tls {
            for path in [
                Some(&mut tls.cert),
                Some(&mut tls.key),
                tls.client_ca.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                *path = base.join(&*path);
            }
        }
        if let Some(tls) = &mut config.events.tls {
            for path in [&mut tls.ca, &mut tls.cert, &mut tls.key]
                .into_iter()
                .flatten()
            {
                *path = base.join(&*path);
            }
        }
        for path in [&mut config.conveyor.cert, &mut config.conveyor.key]
            .into_iter()
            .flatten()
        {
            *path = base.join(&*path);
        }
        if let Some(jwt) = &mut config.api.auth.jwt {
            jwt.ca = base.join(&jwt.ca);
        }
        for driver in config.drivers.values_mut() {
            for dir in &mut driver.dirs {
                dir.host = base.join(&dir.host);
            }
        }
        checks::config(&config)?;
        let auth = &mut config.api.auth;
        auth.resolved = secrets::read_tokens(&auth.tokens, auth.jwt.is_some(), base)?;
        if let Some(jwt) = &auth.jwt {
            let verifier = crate::jwt::Verifier::from_pem_file(
                &jwt.ca,
                jwt.subjects.clone(),
                jwt.default_role,
            )
            .map_err(|e| format!("api.auth.jwt.ca: {}", crate::error_chain(&e)))?;
            auth.verifier = Some(Arc::new(verifier));
        }
        for (name, driver) in &mut config.drivers {
            let key = format!("drivers.{name}");
            let env = secrets::read_env(&key, &driver.env)?;
            let secrets = secrets::read_secrets(&key, &driver.secrets, &driver.env, base)?;
            driver.resolved = Resolved { env, secrets };
        }
        Ok(config)
    }
}

/// toml's full rendering quotes the offending line, so the key is always in view, even for a
/// bad value whose own message cannot know its key.
fn describe_toml_error(e: toml::de::Error) -> String {
    e.to_string().trim_end().to_string()
}

impl DriverDefaults {
    fn keys(&self) -> checks::BudgetKeys {
        checks::BudgetKeys {
            timeout: Some(self.timeout),
            cpu: Some(self.cpu),
            memory: Some(self.memory),
            log_lines: Some(self.log_lines),
            log_bytes: Some(self.log_bytes),
            result_size: Some(self.result_size),
            client_calls: Some(self.client_calls),
            concurrency: Some(self.concurrency),
            max_attempts: Some(self.max_attempts),
        }
    }
}

impl DriverConfig {
    fn keys(&self) -> checks::BudgetKeys {
        checks::BudgetKeys {
            timeout: self.timeout,
            cpu: self.cpu,
            memory: self.memory,
            log_lines: self.log_lines,
            log_bytes: self.log_bytes,
            result_size: self.result_size,
            client_calls: self.client_calls,
            concurrency: self.concurrency,
            max_attempts: self.max_attempts,
        }
    }
}

impl fmt::Display for EventSourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventSourceKind::Embedded => f.write_str("embedded"),
            EventSourceKind::Nats => f.write_str("nats"),
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
    fn driver_settings_fall_back_to_defaults() {
        let c = parse(
            "drivers_dir = \"d\"\ndata_dir = \"x\"\n[defaults]\ntimeout = \"5s\"\n\
             [drivers.fast]\ncpu = \"200ms\"\nmemory = \"128MiB\"\nlog_lines = 7\n\
             [drivers.fast.env]\nMODE = \"quick\"\n",
        )
        .unwrap();
        let fast = c.driver_settings("fast");
        assert_eq!(fast.timeout, Duration::from_secs(5));
        assert_eq!(fast.cpu, Duration::from_millis(200));
        assert_eq!(fast.memory, 128 << 20);
        assert_eq!(fast.log_lines, 7);
        assert_eq!(fast.env, [("MODE".to_string(), "quick".to_string())]);
        let other = c.driver_settings("other");
        assert_eq!(other.cpu, Duration::from_secs(10));
        assert!(other.env.is_empty() && other.secrets.is_empty() && other.dirs.is_empty());
        assert_eq!(c.max_memory(), 128 << 20);
    }

    #[test]
    fn capabilities_are_checked_and_named() {
        let base = "drivers_dir = \"d\"\ndata_dir = \"x\"\n";
        let e = parse(&format!(
            "{base}[drivers.a.secrets]\nT = {{ env = \"CONVEYOR_TEST_SURELY_UNSET\" }}\n"
        ))
        .unwrap_err();
        assert!(e.contains("drivers.a.secrets.T"), "{e}");
        let e = parse(&format!(
            "{base}[[drivers.a.dirs]]\nhost = \"/surely/missing\"\nguest = \"/w\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("drivers.a.dirs[0].host"), "{e}");
        let e = parse(&format!(
            "{base}[[drivers.a.dirs]]\nhost = \"/tmp\"\nguest = \"w\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("drivers.a.dirs[0].guest"), "{e}");
        let e = parse(&format!(
            "{base}[drivers.a.http]\nallow = [\"https://x.com\"]\n"
        ))
        .unwrap_err();
        assert!(e.contains("drivers.a.http.allow[0]"), "{e}");
        let e = parse(&format!("{base}[drivers.a]\ncpu = \"0s\"\n")).unwrap_err();
        assert!(e.contains("drivers.a.cpu"), "{e}");
        let e = parse(&format!("{base}[drivers.a]\nfuel = 3\n")).unwrap_err();
        assert!(e.contains("fuel"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "s3cr3t-value\n").unwrap();
        let c = Config::parse(
            "drivers_dir = \"d\"\ndata_dir = \"x\"\n[drivers.a.secrets]\nTOKEN = { file = \"tok\" }\n",
            dir.path(),
        )
        .unwrap();
        let s = c.driver_settings("a");
        assert_eq!(s.secrets[0].1.0, "s3cr3t-value");
        assert!(!format!("{c:?}{s:?}").contains("s3cr3t"));
    }

    #[test]
    fn jwt_auth_and_the_signing_identity_parse() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::jwt::testing::Ca::new("Test CA");
        let pem = |der: &[u8]| {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            let lines: Vec<String> = b64
                .as_bytes()
                .chunks(64)
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            )
        };
        std::fs::write(dir.path().join("ca.pem"), pem(&ca.der)).unwrap();
        let base = "drivers_dir = \"d\"\ndata_dir = \"x\"\n";
        let c = Config::parse(
            &format!(
                "{base}[api.auth.jwt]\nca = \"ca.pem\"\ndefault_role = \"read\"\n\
                 [api.auth.jwt.subjects]\n\"ci-bot\" = \"admin\"\n"
            ),
            dir.path(),
        )
        .unwrap();
        assert!(c.api.auth.configured() && c.api.auth.jwt_verifier().is_some());
        let jwt = c.api.auth.jwt.as_ref().unwrap();
        assert_eq!(jwt.ca, dir.path().join("ca.pem"));
        assert_eq!(jwt.default_role, Some(crate::api::Role::Read));
        assert_eq!(jwt.subjects["ci-bot"], crate::api::Role::Admin);

        let e = Config::parse(
            &format!("{base}[api.auth.jwt]\nca = \"ca.pem\"\n"),
            dir.path(),
        )
        .unwrap_err();
        assert!(
            e.contains("api.auth.jwt") && e.contains("default_role"),
            "{e}"
        );
        let e = Config::parse(
            &format!("{base}[api.auth.jwt]\nca = \"missing.pem\"\ndefault_role = \"read\"\n"),
            dir.path(),
        )
        .unwrap_err();
        assert!(
            e.contains("api.auth.jwt.ca") && e.contains("missing.pem"),
            "{e}"
        );
        let e = Config::parse(
            &format!("{base}[api.auth.jwt]\nca = \"ca.pem\"\ndefault_role = \"root\"\n"),
            dir.path(),
        )
        .unwrap_err();
        assert!(e.contains("root"), "{e}");
        // A static token of a JWT's shape would be checked as a JWT.
        std::fs::write(dir.path().join("tok"), "aaaaaaaa.bbbbbbbb.cccccccc").unwrap();
        let e = Config::parse(
            &format!(
                "{base}[[api.auth.tokens]]\nname = \"t\"\nrole = \"read\"\nfile = \"tok\"\n\
                 [api.auth.jwt]\nca = \"ca.pem\"\ndefault_role = \"read\"\n"
            ),
            dir.path(),
        )
        .unwrap_err();
        assert!(e.contains("api.auth.tokens[0]") && e.contains("JWT"), "{e}");

        // The REST client's identity: [conveyor]'s pair, else [events.tls]'s.
        let c = parse(
            "drivers_dir = \"d\"\ndata_dir = \"x\"\n[events]\nsource = \"nats\"\n\
             [events.tls]\ncert = \"n.crt\"\nkey = \"n.key\"\n",
        )
        .unwrap();
        let (cert, key) = c.conveyor.identity(&c.events).unwrap();
        assert_eq!(
            (cert, key),
            (
                Path::new("/etc/conveyor/n.crt"),
                Path::new("/etc/conveyor/n.key")
            )
        );
        let c = parse(
            "drivers_dir = \"d\"\ndata_dir = \"x\"\n[events]\nsource = \"nats\"\n\
             [events.tls]\ncert = \"n.crt\"\nkey = \"n.key\"\n\
             [conveyor]\ncert = \"api.crt\"\nkey = \"api.key\"\n",
        )
        .unwrap();
        assert_eq!(
            c.conveyor.identity(&c.events).unwrap().0,
            Path::new("/etc/conveyor/api.crt")
        );
        assert!(
            parse("drivers_dir = \"d\"\ndata_dir = \"x\"\n")
                .unwrap()
                .conveyor
                .identity(&EventsConfig::default())
                .is_none()
        );
        let e =
            parse("drivers_dir = \"d\"\ndata_dir = \"x\"\n[conveyor]\ncert = \"c\"\n").unwrap_err();
        assert!(e.contains("conveyor.key"), "{e}");
    }

    #[test]
    fn missing_required_key_is_named() {
        let e = parse("data_dir = \"x\"\n").unwrap_err();
        assert!(e.contains("drivers_dir"), "{e}");
    }
}
