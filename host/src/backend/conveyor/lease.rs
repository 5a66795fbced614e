//! One reconcile per (driver, resource) across every host that serves a driver: a lease in a
//! JetStream key-value bucket of the host's own, [`BUCKET`], never a change to the Conveyor
//! server's streams.
//!
//! A lease is a key per (driver, resource type, resource name) whose value names the host and
//! the run. It is taken (`create`, which fails while the key exists) after the host's own
//! per-resource lock and before the reconcile, renewed with the message's in-progress acks,
//! and deleted after the ack, only if it is still the revision this host wrote. A lease this
//! host still holds for a finished reconcile (its ack not yet confirmed) is taken over by the
//! next reconcile of the same resource here. The bucket's
//! `max_age` is the lease TTL: a key vanishes that long after its last write, so the leases
//! of a host that dies are free again one TTL after its last renewal.
//!
//! A message put back because its resource was leased elsewhere is delivered again by
//! JetStream, which counts that delivery. So that such waits do not use up the driver's
//! attempts, the host also notes them, under `wait.<consumer>.<stream sequence>` in a second
//! bucket, [`WAITS_BUCKET`], and subtracts them from JetStream's delivery count.

use std::time::Duration;

use async_nats::jetstream::{self, kv};

/// The lease bucket's name.
pub const BUCKET: &str = "conveyor_host_leases";
/// The bucket of lease waits. Its notes outlive a lease (a message may wait in the stream
/// longer than a TTL between two deliveries), are deleted once their message is settled, and
/// expire after [`WAITS_TTL`] otherwise; [`WAITS_BYTES`] bounds it.
pub const WAITS_BUCKET: &str = "conveyor_host_lease_waits";
/// How long a wait note outlives its last write.
pub const WAITS_TTL: Duration = Duration::from_secs(24 * 3600);
/// The most the waits bucket holds; the oldest notes go first past it.
pub const WAITS_BYTES: i64 = 64 << 20;

/// Creates a key-value bucket with history 1, `max_age` and `max_bytes` (-1: no bound), or
/// opens the existing one (and says so when its `max_age` differs).
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    max_age: Duration,
    max_bytes: i64,
) -> Result<kv::Store, LeaseError> {
    let config = kv::Config {
        bucket: name.to_string(),
        description: description.to_string(),
        history: 1,
        max_age,
        max_bytes,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(kv) => Ok(kv),
        Err(created) => {
            let kv = js
                .get_key_value(name)
                .await
                .map_err(|_| LeaseError::Bucket(created.into()))?;
            let status = kv
                .status()
                .await
                .map_err(|e| LeaseError::Bucket(e.into()))?;
            let theirs = status.info.config.max_age;
            if theirs != max_age {
                tracing::warn!(
                    bucket = name,
                    configured = %humantime::format_duration(max_age),
                    bucket_ttl = %humantime::format_duration(theirs),
                    "the bucket exists with another max_age; using the bucket's"
                );
            }
            Ok(kv)
        }
    }
}

/// Why a lease operation failed (the broker could not be asked, or said no for a reason
/// other than "held").
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The bucket could not be created or opened.
    #[error("cannot open the lease bucket {BUCKET}")]
    Bucket(#[source] async_nats::Error),
    /// The key could not be read or written.
    #[error("cannot take or read lease {key}")]
    Key {
        /// The key.
        key: String,
        /// What JetStream said.
        #[source]
        source: async_nats::Error,
    },
}

/// The lease bucket, opened once per host.
#[derive(Clone)]
pub struct Leases {
    kv: kv::Store,
    waits: kv::Store,
    /// Names this host in the leases it writes.
    holder: String,
    ttl: Duration,
}

/// A lease this host holds: the key and the revision it last wrote.
#[derive(Debug, Clone)]
pub struct Lease {
    key: String,
    revision: u64,
}

impl Leases {
    /// Opens the buckets, creating them when they do not exist: [`BUCKET`] with `ttl` as its
    /// `max_age`, and [`WAITS_BUCKET`]. A lease bucket made by another host with another TTL
    /// is used as it is (every host must agree on one TTL); the difference is logged.
    pub async fn open(js: &jetstream::Context, ttl: Duration) -> Result<Leases, LeaseError> {
        let kv = bucket(
            js,
            BUCKET,
            "conveyor-host: one reconcile per driver and resource across hosts",
            ttl,
            -1,
        )
        .await?;
        let waits = bucket(
            js,
            WAITS_BUCKET,
            "conveyor-host: deliveries that waited for a lease, not attempts",
            WAITS_TTL,
            WAITS_BYTES,
        )
        .await?;
        let holder = format!(
            "{}/{}",
            hostname(),
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..8)
                .unwrap_or("host")
        );
        Ok(Leases {
            kv,
            waits,
            holder,
            ttl,
        })
    }

    /// The lease TTL this host was configured with.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lease on `(driver, kind, name)` for `run_id`: `Ok(None)` when another host
    /// holds it.
    pub async fn take(
        &self,
        driver: &str,
        kind: &str,
        name: &str,
        run_id: &str,
    ) -> Result<Option<Lease>, LeaseError> {
        let key = lease_key(driver, kind, name);
        let value = format!("{} {run_id}", self.holder);
        let failed = |key: &str, e: async_nats::Error| LeaseError::Key {
            key: key.to_string(),
            source: e,
        };
        match self.kv.create(&key, value.clone().into()).await {
            Ok(revision) => return Ok(Some(Lease { key, revision })),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed(&key, e.into())),
        }
        // Held by this host: by a reconcile of this resource that has finished (this host
        // runs one at a time) and is only waiting for its ack to be confirmed before it
        // releases. Take it over rather than wait; that release then finds a newer revision
        // and leaves the lease alone.
        let Some(entry) = self
            .kv
            .entry(&key)
            .await
            .map_err(|e| failed(&key, e.into()))?
        else {
            return Ok(None);
        };
        let ours = entry.operation == kv::Operation::Put
            && entry.value.split(|b| *b == b' ').next() == Some(self.holder.as_bytes());
        if !ours {
            return Ok(None);
        }
        match self.kv.update(&key, value.into(), entry.revision).await {
            Ok(revision) => Ok(Some(Lease { key, revision })),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(failed(&key, e.into())),
        }
    }

    /// Renews a lease (its TTL counts again from now). `false` when it was lost: it expired
    /// and another host took it.
    pub async fn renew(&self, lease: &mut Lease) -> bool {
        let value = format!("{} renewed", self.holder);
        match self
            .kv
            .update(&lease.key, value.into(), lease.revision)
            .await
        {
            Ok(revision) => {
                lease.revision = revision;
                true
            }
            Err(e) => {
                tracing::warn!(key = %lease.key, error = %e, "could not renew a lease");
                e.kind() != kv::UpdateErrorKind::WrongLastRevision
            }
        }
    }

    /// Gives a lease back, unless another host has taken it since it expired.
    pub async fn release(&self, lease: Lease) {
        if let Err(e) = self
            .kv
            .delete_expect_revision(&lease.key, Some(lease.revision))
            .await
        {
            // Held by another host by now, or the broker is away: either way it expires.
            tracing::debug!(key = %lease.key, error = %e, "lease not released; it expires by its TTL");
        }
    }

    /// How often `message` (stream sequence `seq` of `consumer`) was put back because its
    /// resource was leased elsewhere. Zero when unknown: the delivery count then counts
    /// those waits as attempts, which errs towards giving up sooner, never later.
    pub async fn waits(&self, consumer: &str, seq: u64) -> u32 {
        match self.waits.get(wait_key(consumer, seq)).await {
            Ok(Some(v)) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            Ok(None) => 0,
            Err(e) => {
                tracing::warn!(error = %e, "could not read a message's lease waits; counting them as attempts");
                0
            }
        }
    }

    /// Notes that the message was put back for the `n`th time because its resource was
    /// leased elsewhere.
    pub async fn note_wait(&self, consumer: &str, seq: u64, n: u32) {
        if let Err(e) = self
            .waits
            .put(wait_key(consumer, seq), n.to_string().into())
            .await
        {
            tracing::warn!(error = %e, "could not note a lease wait; the next delivery counts it as an attempt");
        }
    }
}

impl Leases {
    /// Forgets a settled message's waits.
    pub async fn forget_waits(&self, consumer: &str, seq: u64) {
        if let Err(e) = self.waits.purge(wait_key(consumer, seq)).await {
            tracing::debug!(error = %e, "could not delete a settled message's lease waits; they expire");
        }
    }
}

/// A key part as NATS key-value keys allow (`[-_=.a-zA-Z0-9/]`): kept as it is when plain,
/// else `=` and its base64url, so two different names never share a key.
fn key_part(part: &str) -> String {
    use base64::Engine;
    let plain = !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        part.to_string()
    } else {
        format!(
            "={}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(part)
        )
    }
}

/// The key of the lease on one driver's reconciles of one resource.
pub fn lease_key(driver: &str, kind: &str, name: &str) -> String {
    format!(
        "lease.{}.{}.{}",
        key_part(driver),
        key_part(kind),
        key_part(name)
    )
}

fn wait_key(consumer: &str, seq: u64) -> String {
    format!("wait.{}.{seq}", key_part(consumer))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_distinct() {
        let valid = |k: &str| {
            k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=./".contains(&b))
        };
        let plain = lease_key("sample-driver", "app", "web_1");
        assert_eq!(plain, "lease.sample-driver.app.web_1");
        let odd = lease_key("d", "t", "a.b c/é");
        assert!(valid(&odd), "{odd}");
        // A name that looks like an encoded one is still a different key.
        assert_ne!(lease_key("d", "t", "a.b"), lease_key("d", "t", "=YS5i"));
        assert_ne!(lease_key("d", "t", "a.b"), lease_key("d", "t", "a_b"));
        assert!(valid(&wait_key("x y", 7)));
    }
}
