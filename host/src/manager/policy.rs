//! What the manager applies to each driver, resolved from the host config at the edge: the
//! sandbox's limits and grants, the retry policy and the concurrency.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::wasm::{Grants, Limits};

/// The longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// When a transient failure is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries of one event before a transient failure is final.
    pub max_attempts: u32,
    /// The first retry delay; it doubles on each further attempt, up to [`MAX_BACKOFF`].
    pub backoff: Duration,
}

impl RetryPolicy {
    /// `backoff * 2^(attempt-1)`, capped at [`MAX_BACKOFF`].
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }

    /// Whether an attempt may be followed by another.
    pub fn can_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

/// Everything that applies to one driver's runs.
#[derive(Clone)]
pub struct DriverPolicy {
    /// The sandbox's limits for one reconcile.
    pub limits: Limits,
    /// What the driver is granted.
    pub grants: Arc<Grants>,
    /// When failures are retried.
    pub retry: RetryPolicy,
    /// Events handled at the same time.
    pub concurrency: u32,
    /// What one run may ask of the API client.
    pub client: ClientBudget,
}

/// What one run may ask of the API client: enough for any reconcile that reads and writes a
/// few resources, and a stop for one that loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientBudget {
    /// Calls of any kind.
    pub calls: u32,
    /// Resources created.
    pub creates: u32,
    /// Events the driver's writes may have waiting in the queue at once (embedded mode).
    pub queued_writes: u32,
}

/// The policy of every driver: the configured ones by name, and the defaults for the rest.
#[derive(Clone)]
pub struct Policies {
    defaults: Arc<DriverPolicy>,
    drivers: BTreeMap<String, Arc<DriverPolicy>>,
}

impl Policies {
    /// Policies with `defaults` for every driver not in `drivers`.
    pub fn new(defaults: DriverPolicy, drivers: BTreeMap<String, DriverPolicy>) -> Self {
        Policies {
            defaults: Arc::new(defaults),
            drivers: drivers.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
        }
    }

    /// The policy of the driver named `name`.
    pub fn for_driver(&self, name: &str) -> Arc<DriverPolicy> {
        self.drivers.get(name).unwrap_or(&self.defaults).clone()
    }

    /// The names with a policy of their own.
    pub fn configured(&self) -> impl Iterator<Item = &str> {
        self.drivers.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_secs(1),
        };
        assert_eq!(p.delay(1), Duration::from_secs(1));
        assert_eq!(p.delay(3), Duration::from_secs(4));
        assert_eq!(p.delay(40), MAX_BACKOFF);
    }
}
