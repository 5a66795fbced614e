//! The NATS event source: a real Conveyor deployment's JetStream, with upstream's subjects
//! and JSON (`conveyor-protocol.md` §1, §2).
//!
//! Per driver, a durable pull consumer on stream `messages`, named after the driver, filtered
//! on the subjects [`crate::routing::filter_subjects`] gives (`resources.<r>` and
//! `drivers.<name>.resources.<r>` for each resource type it listens to), with explicit acks. Several hosts serving the same driver bind to the same durable consumer
//! and JetStream shares the messages between them.
//!
//! Unlike upstream's runtimes, which ack before the work, a message is acknowledged only after
//! the result has been published to `pipelines.driver.result` and JetStream confirmed it; while
//! a reconcile runs, in-progress acks keep the message from being redelivered. A host that
//! dies mid-run therefore loses nothing: its unacknowledged messages go to another host after
//! `ack_wait`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use tokio_util::task::TaskTracker;

use super::lease::{Lease, LeaseError, Leases};
use super::pull::Puller;
use crate::backend::{Delivery, EventSource, Hold, Settlement};
use crate::config::EventsConfig;
use crate::conveyor::{MESSAGES_STREAM, RESULT_SUBJECT, Resource};
use crate::manager::DriverPolicy;
use crate::result::RunResult;
use crate::wasm::DriverInfo;

/// Why the JetStream source failed.
#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    /// NATS could not be reached.
    #[error("cannot connect to NATS at {url} (events.url)")]
    Connect {
        /// The configured URL.
        url: String,
        /// What the client said.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The driver's durable consumer could not be created or bound.
    #[error("cannot create consumer {driver}")]
    Consumer {
        /// The driver.
        driver: String,
        /// What JetStream said.
        #[source]
        source: async_nats::jetstream::stream::ConsumerError,
    },
    /// `next` was called for a driver that was never attached.
    #[error("driver {0} is not attached")]
    NotAttached(String),
    /// The result could not be encoded.
    #[error("cannot encode the result")]
    Encode(#[source] serde_json::Error),
    /// The result could not be published.
    #[error("cannot publish the result")]
    Publish(#[source] async_nats::jetstream::context::PublishError),
    /// The resource's lease could not be taken or read.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// A connection to a Conveyor deployment's NATS.
pub struct NatsSource {
    client: async_nats::Client,
    js: jetstream::Context,
    drivers: Mutex<HashMap<String, Attached>>,
    ack_wait: Duration,
    /// The cross-host leases, unless `[events] leases = false`; shared with the tasks that
    /// renew and release them.
    leases: Option<Arc<Leases>>,
    /// Results and acks being confirmed (and leases released) after their slots moved on.
    confirming: TaskTracker,
    /// Bounds `confirming`.
    settling: Arc<tokio::sync::Semaphore>,
    /// The lease waits this host noted, by driver and stream sequence: the bucket's copy is
    /// what another host reads; this one keeps the count when the bucket cannot be read.
    waited: Mutex<HashMap<(String, u64), u32>>,
}

/// Entries `waited` keeps at most; past that it starts again (a count lost errs towards
/// giving up sooner).
const WAITED: usize = 100_000;

/// A driver attached to its consumer.
#[derive(Clone)]
struct Attached {
    puller: Arc<Puller>,
    /// Deliveries after which a message is terminated: one that crashes every host that
    /// takes it stops there. Waits for a lease are not counted.
    max_deliveries: u32,
}

/// A delivery's handle: the message, the lease on its resource once held, and the task that
/// keeps both alive.
pub struct NatsToken {
    message: jetstream::Message,
    /// Stream sequence, for the lease waits noted against it.
    seq: u64,
    /// Deliveries that were waits for a lease, not attempts.
    waits: u32,
    lease: Arc<tokio::sync::Mutex<Option<Lease>>>,
    progress: tokio::task::JoinHandle<()>,
}

impl Drop for NatsToken {
    fn drop(&mut self) {
        self.progress.abort();
    }
}

impl NatsSource {
    /// Connects to NATS (waiting for it if it is not up yet), with TLS when configured, and
    /// opens the lease bucket. Reconnection after an outage is automatic.
    pub async fn connect(config: &EventsConfig) -> Result<NatsSource, JetStreamError> {
        let mut options = async_nats::ConnectOptions::new()
            .name("conveyor-host")
            .retry_on_initial_connect()
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; reconnecting")
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            });
        if let Some(tls) = &config.tls {
            options = options.require_tls(true);
            if let Some(ca) = &tls.ca {
                options = options.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        let url = config.nats_url();
        let client = options
            .connect(url)
            .await
            .map_err(|source| JetStreamError::Connect {
                url: url.to_string(),
                source,
            })?;
        let js = jetstream::new(client.clone());
        let leases = if config.leases {
            let leases = loop {
                match Leases::open(&js, config.lease_ttl).await {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::warn!(error = %crate::error_chain(&e), "cannot open the lease bucket yet (is JetStream enabled?); retrying in 2s");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            };
            Some(Arc::new(leases))
        } else {
            None
        };
        Ok(NatsSource {
            js,
            client,
            drivers: Mutex::new(HashMap::new()),
            ack_wait: config.ack_wait,
            leases,
            confirming: TaskTracker::new(),
            settling: Arc::new(tokio::sync::Semaphore::new(SETTLING)),
            waited: Mutex::default(),
        })
    }

    /// The connected client, for the log publisher.
    pub fn client(&self) -> async_nats::Client {
        self.client.clone()
    }

    /// Waits until every ack sent so far is confirmed (or has failed) and its lease released:
    /// the last step of a shutdown.
    pub async fn drain(&self) {
        self.confirming.close();
        self.confirming.wait().await;
    }

    /// This host's count of a message's lease waits; with `set`, records it first.
    fn waited_here(&self, driver: &str, seq: u64, set: Option<u32>) -> u32 {
        let mut waited = self.waited.lock().unwrap_or_else(|p| p.into_inner());
        let key = (driver.to_string(), seq);
        if let Some(n) = set {
            if waited.len() >= WAITED {
                waited.clear();
            }
            waited.insert(key.clone(), n);
        }
        waited.get(&key).copied().unwrap_or(0)
    }

    fn attached(&self, driver: &str) -> Result<Attached, JetStreamError> {
        self.drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(driver)
            .cloned()
            .ok_or_else(|| JetStreamError::NotAttached(driver.to_string()))
    }

    /// Keeps the message from being redelivered, and its lease (once held) from expiring,
    /// while the reconcile runs.
    fn keep_alive(
        &self,
        message: &jetstream::Message,
        lease: Arc<tokio::sync::Mutex<Option<Lease>>>,
    ) -> tokio::task::JoinHandle<()> {
        let message = message.clone();
        let leases = self.leases.clone();
        let every = match &leases {
            Some(l) => self.ack_wait.min(l.ttl()) / 3,
            None => self.ack_wait / 3,
        };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "in-progress ack failed");
                }
                if let Some(leases) = &leases {
                    let mut held = lease.lock().await;
                    if let Some(l) = held.as_mut()
                        && !leases.renew(l).await
                    {
                        tracing::warn!(subject = %message.subject, "lost the resource's lease (it expired and another host took it) during a reconcile");
                        *held = None;
                    }
                }
            }
        })
    }

    /// Sends the result to `pipelines.driver.result`, returning the future of JetStream's
    /// confirmation that it stored it.
    async fn publish_result(
        &self,
        delivery: &Delivery<NatsToken>,
        result: &RunResult,
    ) -> Result<jetstream::context::PublishAckFuture, JetStreamError> {
        let event = serde_json::json!({
            "event": "driver.result",
            "run_id": delivery.run_id,
            "resource": delivery.resource,
            "driverresult": result.driver_result(),
        });
        let body = serde_json::to_vec(&event).map_err(JetStreamError::Encode)?;
        // The id makes JetStream drop a second copy published after a crash between the
        // publish and the ack (within the stream's duplicate window).
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!(
                "{}.{}.{}",
                delivery.run_id, delivery.driver, delivery.message_id
            )
            .as_str(),
        );
        self.js
            .publish_with_headers(RESULT_SUBJECT, headers, body.into())
            .await
            .map_err(JetStreamError::Publish)
    }

    /// Acks the message with `kind` and, off the slot, waits for the server to confirm the
    /// ack, then gives the resource's lease back.
    async fn ack_then_release(&self, token: NatsToken, kind: AckKind) {
        let Ok(permit) = self.settling.clone().acquire_owned().await else {
            return;
        };
        let leases = self.leases.clone();
        self.confirming.spawn(async move {
            let _permit = permit;
            confirm_and_release(token, kind, leases).await
        });
    }

    /// Publishes the result and returns: the slot moves on while JetStream stores it (the
    /// publishes of all slots are pipelined on the connection). Off the slot, once the
    /// result is confirmed, the message is acked with `kind`, the ack confirmed and the lease
    /// released; a result JetStream did not store has the message nak'ed instead, to run
    /// again. At most [`SETTLING`] settlements are open at once.
    async fn finish(
        &self,
        delivery: Delivery<NatsToken>,
        result: &RunResult,
        kind: AckKind,
    ) -> Result<(), JetStreamError> {
        let stored = match self.publish_result(&delivery, result).await {
            Ok(stored) => stored,
            Err(e) => {
                // Try again soon rather than after ack_wait; the reconcile runs again.
                self.ack_then_release(delivery.token, AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return Err(e);
            }
        };
        let Ok(permit) = self.settling.clone().acquire_owned().await else {
            return Ok(());
        };
        let (token, leases) = (delivery.token, self.leases.clone());
        self.confirming.spawn(async move {
            let _permit = permit;
            let kind = match stored.await {
                Ok(_) => kind,
                Err(e) => {
                    tracing::warn!(subject = %token.message.subject, error = %e, "JetStream did not store the result; the event runs again in 1s");
                    AckKind::Nak(Some(Duration::from_secs(1)))
                }
            };
            confirm_and_release(token, kind, leases).await;
        });
        Ok(())
    }
}

/// Settlements open at once (results sent and not yet confirmed, acks not yet confirmed):
/// past this, slots wait in `settle`.
const SETTLING: usize = 1024;

/// Acks with `kind`, waits for the server to confirm it, then releases the lease.
async fn confirm_and_release(token: NatsToken, kind: AckKind, leases: Option<Arc<Leases>>) {
    let NatsToken {
        ref message,
        ref lease,
        ..
    } = token;
    if let Err(e) = message.double_ack_with(kind).await {
        tracing::warn!(subject = %message.subject, error = %e, "the ack was not confirmed; the event may be delivered again");
    }
    if let (Some(leases), Some(l)) = (leases, lease.lock().await.take()) {
        leases.release(l).await;
    }
}

/// Upstream's DriverMessage, with `payload` as a JSON string (what the Go server sends) or an
/// object (what the design document specifies).
#[derive(serde::Deserialize)]
struct DriverMessage {
    #[serde(default)]
    event: String,
    #[serde(default)]
    payload: serde_json::Value,
    #[serde(default)]
    id: String,
    #[serde(default)]
    run_id: String,
}

#[derive(Debug)]
/// What a usable message carries: the event, the payload as text and parsed, the run id and
/// the message id.
pub(crate) struct Message {
    event: String,
    payload: String,
    resource: Resource,
    run_id: String,
    id: String,
}

/// Reads a message body, or says why it cannot be used.
pub(crate) fn parse(body: &[u8]) -> Result<Message, String> {
    // As upstream's Go runtime decodes: field names in any case, `null` as the empty value.
    let m: DriverMessage =
        crate::conveyor::decode(body).map_err(|e| format!("not a DriverMessage: {e}"))?;
    let payload = match m.payload {
        serde_json::Value::String(s) => s,
        object @ serde_json::Value::Object(_) => object.to_string(),
        other => {
            return Err(format!(
                "payload is neither a JSON string nor an object: {other}"
            ));
        }
    };
    let resource: Resource = crate::conveyor::decode(payload.as_bytes())
        .map_err(|e| format!("payload is not a Conveyor resource: {e}"))?;
    if resource.name.is_empty() || resource.resource.is_empty() {
        return Err("payload is not a Conveyor resource: it has no name or type".into());
    }
    if m.event.is_empty() {
        return Err("the message has no event".into());
    }
    let payload = crate::conveyor::payload_for_drivers(payload, &resource);
    Ok(Message {
        event: m.event,
        payload,
        resource,
        run_id: m.run_id,
        id: m.id,
    })
}

impl EventSource for NatsSource {
    type Token = NatsToken;
    type Error = JetStreamError;

    /// Creates the driver's durable consumer, or updates it to the driver's filter subjects
    /// and policy (a driver reloaded with other resources is attached again), and starts its
    /// puller.
    async fn attach(
        &self,
        driver: &DriverInfo,
        policy: &DriverPolicy,
    ) -> Result<(), JetStreamError> {
        let stream = loop {
            match self.js.get_stream(MESSAGES_STREAM).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(
                        driver = %driver.name,
                        error = %e,
                        "JetStream stream `messages` is not available yet (is the Conveyor server up?); retrying in 2s"
                    );
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        let filter_subjects = crate::routing::filter_subjects(driver);
        // The host decides when to give up (max_attempts) and publishes a final result then;
        // this bound only stops a message that crashes every host from looping.
        let max_deliveries = policy
            .retry
            .max_attempts
            .saturating_mul(2)
            .saturating_add(3);
        let config = consumer::pull::Config {
            durable_name: Some(driver.name.clone()),
            name: Some(driver.name.clone()),
            description: Some(format!("conveyor-host driver {}", driver.name)),
            filter_subjects: filter_subjects.clone(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            deliver_policy: consumer::DeliverPolicy::All,
            // With leases, JetStream's count includes the waits for a lease, so the host
            // applies the bound itself, without them.
            max_deliver: if self.leases.is_some() {
                -1
            } else {
                i64::from(max_deliveries)
            },
            max_ack_pending: 1000.max(i64::from(policy.concurrency) * 16),
            ..Default::default()
        };
        let consumer =
            stream
                .create_consumer(config)
                .await
                .map_err(|source| JetStreamError::Consumer {
                    driver: driver.name.clone(),
                    source,
                })?;
        tracing::info!(driver = %driver.name, subjects = ?filter_subjects, "attached to JetStream consumer");
        let attached = Attached {
            puller: Arc::new(Puller::start(
                self.js.clone(),
                self.client.clone(),
                consumer,
                driver.name.clone(),
            )),
            max_deliveries,
        };
        // A puller replaced here stops once its last waiting slot lets go of it.
        self.drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(driver.name.clone(), attached);
        Ok(())
    }

    async fn next(&self, driver: &str) -> Result<Delivery<NatsToken>, JetStreamError> {
        let attached = self.attached(driver)?;
        loop {
            let Some(message) = attached.puller.next().await else {
                return Err(JetStreamError::NotAttached(driver.to_string()));
            };
            let (delivered, seq) = message
                .info()
                .map(|i| (i.delivered, i.stream_sequence))
                .unwrap_or((1, 0));
            let delivered = u32::try_from(delivered).unwrap_or(u32::MAX).max(1);
            let waits = match &self.leases {
                Some(leases) if delivered > 1 => {
                    let here = self.waited_here(driver, seq, None);
                    leases.waits(driver, seq).await.max(here)
                }
                _ => 0,
            };
            let attempt = delivered.saturating_sub(waits).max(1);
            let usable = if attempt > attached.max_deliveries {
                Err(format!(
                    "delivered {attempt} times without a result (a host stopped during each attempt?); giving up"
                ))
            } else {
                parse(&message.payload)
            };
            match usable {
                Ok(m) => {
                    let lease = Arc::default();
                    let progress = self.keep_alive(&message, Arc::clone(&lease));
                    return Ok(Delivery {
                        token: NatsToken {
                            message,
                            seq,
                            waits,
                            lease,
                            progress,
                        },
                        driver: driver.to_string(),
                        event: m.event,
                        payload: m.payload,
                        resource: m.resource,
                        run_id: m.run_id,
                        message_id: m.id,
                        attempt,
                    });
                }
                Err(reason) => {
                    tracing::warn!(
                        %driver,
                        subject = %message.subject,
                        %reason,
                        "terminating an unusable message"
                    );
                    if let Err(e) = message.ack_with(AckKind::Term).await {
                        tracing::warn!(%driver, error = %e, "could not terminate the message");
                    }
                }
            }
        }
    }

    async fn hold(&self, delivery: &Delivery<NatsToken>) -> Result<Hold, JetStreamError> {
        let Some(leases) = &self.leases else {
            return Ok(Hold::Held);
        };
        let taken = leases
            .take(
                &delivery.driver,
                &delivery.resource.resource,
                &delivery.resource.name,
                &delivery.run_id,
            )
            .await?;
        Ok(match taken {
            Some(lease) => {
                *delivery.token.lease.lock().await = Some(lease);
                Hold::Held
            }
            None => Hold::Elsewhere,
        })
    }

    async fn settle(
        &self,
        delivery: Delivery<NatsToken>,
        settlement: Settlement,
    ) -> Result<(), JetStreamError> {
        // A message delivered again (put back to retry, or held elsewhere) keeps its waits.
        let again = matches!(
            settlement,
            Settlement::Elsewhere { .. } | Settlement::Retry { .. }
        );
        if !again && delivery.token.waits > 0 {
            self.waited
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(delivery.driver.clone(), delivery.token.seq));
            if let Some(leases) = &self.leases {
                leases
                    .forget_waits(&delivery.driver, delivery.token.seq)
                    .await;
            }
        }
        match settlement {
            // A transient failure that ran out of attempts is terminated, so JetStream
            // records that the host gave up on it.
            Settlement::Done(result) => self.finish(delivery, &result, AckKind::Ack).await?,
            Settlement::GaveUp(result) => self.finish(delivery, &result, AckKind::Term).await?,
            Settlement::Retry { delay } => {
                self.ack_then_release(delivery.token, AckKind::Nak(Some(delay)))
                    .await
            }
            Settlement::Skip => self.ack_then_release(delivery.token, AckKind::Ack).await,
            Settlement::Elsewhere { delay } => {
                // Noted first, so the next delivery does not count this one as an attempt.
                if let Some(leases) = &self.leases {
                    let (seq, waits) = (delivery.token.seq, delivery.token.waits.saturating_add(1));
                    self.waited_here(&delivery.driver, seq, Some(waits));
                    leases.note_wait(&delivery.driver, seq, waits).await;
                }
                self.ack_then_release(delivery.token, AckKind::Nak(Some(delay)))
                    .await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn accepts_string_and_object_payloads() {
        let go = br#"{"event":"create","payload":"{\"id\":\"u\",\"name\":\"p1\",\"resource\":\"pipe\",\"metadata\":{\"version\":\"1\"},\"spec\":{}}","id":"abc","run_id":"R"}"#;
        let m = parse(go).unwrap();
        assert_eq!(
            (m.event.as_str(), m.run_id.as_str(), m.id.as_str()),
            ("create", "R", "abc")
        );
        assert!(m.payload.contains("\"name\":\"p1\""));
        assert_eq!(m.resource.name, "p1");
        let sdd = br#"{"event":"process","payload":{"name":"p1","resource":"pipe","spec":{}},"id":"abc","run_id":"R"}"#;
        assert_eq!(parse(sdd).unwrap().event, "process");
    }

    #[test]
    fn refuses_unusable_messages() {
        assert!(
            parse(b"not json")
                .unwrap_err()
                .contains("not a DriverMessage")
        );
        assert!(
            parse(br#"{"event":"create","payload":"{bad","id":"x","run_id":"R"}"#)
                .unwrap_err()
                .contains("not a Conveyor resource")
        );
        assert!(parse(br#"{"event":"create","payload":42,"id":"x","run_id":"R"}"#).is_err());
        assert!(parse(br#"{"event":"create","payload":"{}","id":"x","run_id":"R"}"#).is_err());
    }

    /// Go's decoder: field names in any case, `null` as the empty value.
    #[test]
    fn reads_messages_as_gos_decoder() {
        let m = parse(
            br#"{"Event":"create","Payload":"{\"Name\":\"p1\",\"RESOURCE\":\"pipe\",\"pipeline\":null,\"metadata\":null,\"spec\":{}}","ID":null,"Run_ID":"R"}"#,
        )
        .unwrap();
        assert_eq!((m.event.as_str(), m.run_id.as_str()), ("create", "R"));
        assert_eq!(m.resource.name, "p1");
        assert_eq!(m.resource.resource, "pipe");
        assert!(m.resource.pipeline.is_empty() && m.resource.metadata.is_empty());
        // The driver reads the payload as the host did.
        let sent: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        assert_eq!(sent["name"], "p1");
        assert_eq!(sent["metadata"], serde_json::json!({}));
    }
}
