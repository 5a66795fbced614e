//! The config resolved at the edge: `[drivers.<name>]` over `[defaults]` as one driver's
//! [`DriverSettings`], and from those the values the rest of the host takes (the sandbox's
//! [`Limits`] and [`Grants`], the manager's [`Policies`]), so that no other module reads the
//! config file's model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Config, DirGrant, DirMode, DriverConfig, HttpGrant, Secret};
use crate::manager::{ClientBudget, DriverPolicy, Policies, RetryPolicy};
use crate::wasm::imports::http::{HostPattern, HttpPolicy};
use crate::wasm::imports::wasi::{self, WasiGrants};
use crate::wasm::redact::Redactor;
use crate::wasm::{Grants, Limits};

/// Per-driver settings: `[drivers.<name>]` over `[defaults]`, with the capabilities granted.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// Wall-clock limit for one reconcile.
    pub timeout: Duration,
    /// CPU budget for one reconcile.
    pub cpu: Duration,
    /// Memory limit for one instance, in bytes.
    pub memory: u64,
    /// Events in flight at once.
    pub concurrency: u32,
    /// Log lines per run.
    pub log_lines: u32,
    /// Log bytes per run.
    pub log_bytes: u64,
    /// Largest result, in bytes.
    pub result_size: u64,
    /// Client calls per run.
    pub client_calls: u32,
    /// Resources created per run.
    pub creates_per_run: u32,
    /// Events the driver's client writes may have queued at once.
    pub queued_writes: u32,
    /// Deliveries before a transient failure is final.
    pub max_attempts: u32,
    /// The first retry delay.
    pub backoff: Duration,
    /// Directories granted.
    pub dirs: Vec<DirGrant>,
    /// Plain environment variables, resolved.
    pub env: Vec<(String, String)>,
    /// Secrets, resolved.
    pub secrets: Vec<(String, Secret)>,
    /// The HTTP allow-list.
    pub http: HttpGrant,
}

impl Config {
    /// The settings that apply to a driver.
    pub fn driver_settings(&self, driver: &str) -> DriverSettings {
        let d = &self.defaults;
        let empty = DriverConfig::default();
        let o = self.drivers.get(driver).unwrap_or(&empty);
        DriverSettings {
            timeout: o.timeout.unwrap_or(d.timeout),
            cpu: o.cpu.unwrap_or(d.cpu),
            memory: o.memory.unwrap_or(d.memory),
            concurrency: o.concurrency.unwrap_or(d.concurrency),
            log_lines: o.log_lines.unwrap_or(d.log_lines),
            log_bytes: o.log_bytes.unwrap_or(d.log_bytes),
            result_size: o.result_size.unwrap_or(d.result_size),
            client_calls: o.client_calls.unwrap_or(d.client_calls),
            creates_per_run: o.creates_per_run.unwrap_or(d.creates_per_run),
            queued_writes: o.queued_writes.unwrap_or(d.queued_writes),
            max_attempts: o.max_attempts.unwrap_or(d.max_attempts),
            backoff: o.backoff.unwrap_or(d.backoff),
            dirs: o.dirs.clone(),
            env: o.resolved.env.clone(),
            secrets: o.resolved.secrets.clone(),
            http: o.http.clone(),
        }
    }

    /// The largest memory limit of any driver: the size of the engine's memory slots.
    pub fn max_memory(&self) -> u64 {
        self.drivers
            .values()
            .filter_map(|d| d.memory)
            .fold(self.defaults.memory, u64::max)
    }

    /// Every driver's policy, for the manager.
    pub fn policies(&self) -> Policies {
        let drivers = self
            .drivers
            .keys()
            .map(|name| (name.clone(), self.driver_settings(name).policy()))
            .collect::<BTreeMap<_, _>>();
        // A name that is not configured gets [defaults] and no grants.
        Policies::new(self.driver_settings("").policy(), drivers)
    }
}

impl DriverSettings {
    /// The sandbox's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: self.timeout,
            cpu: self.cpu,
            memory: self.memory,
            result_size: self.result_size,
            log_lines: self.log_lines,
            log_bytes: self.log_bytes,
        }
    }

    /// What the driver is granted. The allow-list was checked when the config was loaded.
    pub fn grants(&self) -> Arc<Grants> {
        let dirs = self
            .dirs
            .iter()
            .map(|d| wasi::DirGrant {
                host: d.host.clone(),
                guest: d.guest.clone(),
                writable: d.mode == DirMode::ReadWrite,
            })
            .collect();
        let mut env = self.env.clone();
        env.extend(self.secrets.iter().map(|(k, v)| (k.clone(), v.0.clone())));
        let allow = self
            .http
            .allow
            .iter()
            .filter_map(|p| HostPattern::parse(p).ok())
            .collect();
        Arc::new(Grants {
            wasi: WasiGrants { dirs, env },
            http: Arc::new(HttpPolicy::new(allow, self.http.allow_private)),
            redactor: Redactor::new(self.secrets.iter().map(|(_, v)| v.0.clone())),
        })
    }

    /// The manager's policy for the driver.
    pub fn policy(&self) -> DriverPolicy {
        DriverPolicy {
            limits: self.limits(),
            grants: self.grants(),
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                backoff: self.backoff,
            },
            concurrency: self.concurrency,
            client: ClientBudget {
                calls: self.client_calls,
                creates: self.creates_per_run,
                queued_writes: self.queued_writes,
            },
        }
    }
}
