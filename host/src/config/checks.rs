//! The checks a config must pass beyond its types, each naming the key at fault. The budget
//! checks are written once and applied to `[defaults]` and to every `[drivers.<name>]`.

use std::time::Duration;

use super::{Config, DriverConfig, EventSourceKind};
use crate::wasm::imports::http::HostPattern;

/// The budget keys, as `[defaults]` sets them and `[drivers.<name>]` may override them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct BudgetKeys {
    pub timeout: Option<Duration>,
    pub cpu: Option<Duration>,
    pub memory: Option<u64>,
    pub log_lines: Option<u32>,
    pub log_bytes: Option<u64>,
    pub result_size: Option<u64>,
    pub client_calls: Option<u32>,
    pub concurrency: Option<u32>,
    pub max_attempts: Option<u32>,
}

/// Checks the budget keys under `prefix` (`defaults` or `drivers.<name>`).
pub(super) fn budget(prefix: &str, b: &BudgetKeys) -> Result<(), String> {
    let checks = [
        (
            b.timeout.is_some_and(|d| d.is_zero()),
            "timeout: must be more than zero",
        ),
        (
            b.cpu.is_some_and(|d| d.is_zero()),
            "cpu: must be more than zero",
        ),
        (
            b.memory.is_some_and(|m| m < 1 << 20),
            "memory: must be at least 1MiB",
        ),
        (b.log_lines == Some(0), "log_lines: must be at least 1"),
        (b.log_bytes == Some(0), "log_bytes: must be more than zero"),
        (
            b.result_size == Some(0),
            "result_size: must be more than zero",
        ),
        (
            b.client_calls == Some(0),
            "client_calls: must be at least 1",
        ),
        (b.concurrency == Some(0), "concurrency: must be at least 1"),
        (
            b.max_attempts == Some(0),
            "max_attempts: must be at least 1",
        ),
    ];
    match checks.iter().find(|(bad, _)| *bad) {
        Some((_, message)) => Err(format!("{prefix}.{message}")),
        None => Ok(()),
    }
}

/// Checks the whole file, `[drivers.*]` budgets and capabilities included. Directory paths
/// must already be resolved against the config file's directory.
pub(super) fn config(c: &Config) -> Result<(), String> {
    budget("defaults", &c.defaults.keys())?;
    if c.engine.pool_instances == 0 {
        return Err("engine.pool_instances: must be at least 1".to_string());
    }
    let a = &c.api;
    let api = [
        (
            a.max_connections == 0,
            "api.max_connections: must be at least 1",
        ),
        (
            a.max_connections_per_client == 0,
            "api.max_connections_per_client: must be at least 1",
        ),
        (
            a.header_timeout.is_zero(),
            "api.header_timeout: must be more than zero",
        ),
        (
            a.idle_timeout.is_zero(),
            "api.idle_timeout: must be more than zero",
        ),
        (a.max_body == 0, "api.max_body: must be more than zero"),
        (a.max_streams == 0, "api.max_streams: must be at least 1"),
        (
            a.max_streams_per_client == 0,
            "api.max_streams_per_client: must be at least 1",
        ),
    ];
    if let Some((_, message)) = api.iter().find(|(bad, _)| *bad) {
        return Err(message.to_string());
    }
    if let Some(origins) = &a.cors_origins {
        crate::api::cors::check_origins(origins).map_err(|e| format!("api.cors_origins: {e}"))?;
    }
    let e = &c.events;
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
    if e.lease_ttl < Duration::from_secs(1) {
        return Err("events.lease_ttl: must be at least 1s".to_string());
    }
    if c.conveyor.cert.is_some() != c.conveyor.key.is_some() {
        return Err("conveyor.cert and conveyor.key must be given together".to_string());
    }
    if let Some(jwt) = &c.api.auth.jwt
        && jwt.default_role.is_none()
        && jwt.subjects.is_empty()
    {
        return Err(
            "api.auth.jwt: give default_role, or map certificate subjects to roles in \
             [api.auth.jwt.subjects]; as it is every token would be refused"
                .to_string(),
        );
    }
    if let Some(url) = &c.conveyor.api_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(format!(
            "conveyor.api_url: {url:?} must start with http:// or https://"
        ));
    }
    for (name, driver) in &c.drivers {
        self::driver(&format!("drivers.{name}"), driver)?;
    }
    Ok(())
}

/// Checks one `[drivers.<name>]`: its budget, its directories and its HTTP allow-list.
fn driver(key: &str, d: &DriverConfig) -> Result<(), String> {
    budget(key, &d.keys())?;
    for (i, dir) in d.dirs.iter().enumerate() {
        if !dir.host.is_dir() {
            return Err(format!(
                "{key}.dirs[{i}].host: {} is not a directory",
                dir.host.display()
            ));
        }
        if !dir.guest.starts_with('/') {
            return Err(format!(
                "{key}.dirs[{i}].guest: {:?} must be an absolute path such as \"/workspace\"",
                dir.guest
            ));
        }
    }
    for (i, pattern) in d.http.allow.iter().enumerate() {
        HostPattern::parse(pattern)
            .map_err(|e| format!("{key}.http.allow[{i}]: {pattern:?}: {e}"))?;
    }
    Ok(())
}
