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
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;

use crate::backend::{Delivery, EventSource, Settlement};
use crate::config::EventsConfig;
use crate::conveyor::{MESSAGES_STREAM, RESULT_SUBJECT, Resource};
use crate::manager::DriverPolicy;
use crate::result::RunResult;
use crate::wasm::DriverInfo;

/// How long one pull request waits for a message before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

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
    /// JetStream did not confirm storing the result.
    #[error("JetStream did not store the result")]
    Stored(#[source] async_nats::jetstream::context::PublishError),
    /// The message could not be acknowledged.
    #[error("ack failed")]
    Ack(#[source] async_nats::Error),
}

/// A connection to a Conveyor deployment's NATS.
pub struct NatsSource {
    client: async_nats::Client,
    js: jetstream::Context,
    consumers: Mutex<HashMap<String, consumer::PullConsumer>>,
    ack_wait: Duration,
}

/// A delivery's handle: the message, and the task that keeps its lease alive.
pub struct NatsToken {
    message: jetstream::Message,
    progress: tokio::task::JoinHandle<()>,
}

impl Drop for NatsToken {
    fn drop(&mut self) {
        self.progress.abort();
    }
}

impl NatsSource {
    /// Connects to NATS (waiting for it if it is not up yet), with TLS when configured.
    /// Reconnection after an outage is automatic.
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
        Ok(NatsSource {
            js: jetstream::new(client.clone()),
            client,
            consumers: Mutex::new(HashMap::new()),
            ack_wait: config.ack_wait,
        })
    }

    /// The connected client, for the log publisher.
    pub fn client(&self) -> async_nats::Client {
        self.client.clone()
    }

    fn consumer(&self, driver: &str) -> Result<consumer::PullConsumer, JetStreamError> {
        self.consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(driver)
            .cloned()
            .ok_or_else(|| JetStreamError::NotAttached(driver.to_string()))
    }

    fn keep_alive(&self, message: &jetstream::Message) -> tokio::task::JoinHandle<()> {
        let message = message.clone();
        let every = self.ack_wait / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "in-progress ack failed");
                }
            }
        })
    }

    async fn publish_result(
        &self,
        delivery: &Delivery<NatsToken>,
        result: &RunResult,
    ) -> Result<(), JetStreamError> {
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
            .map_err(JetStreamError::Publish)?
            .await
            .map_err(JetStreamError::Stored)?;
        Ok(())
    }
}

impl NatsSource {
    /// Publishes the result and, once JetStream has stored it, acknowledges the message with
    /// `kind` and waits for the server to confirm the ack.
    async fn finish(
        &self,
        delivery: &Delivery<NatsToken>,
        result: &RunResult,
        kind: AckKind,
    ) -> Result<(), JetStreamError> {
        let message = &delivery.token.message;
        if let Err(e) = self.publish_result(delivery, result).await {
            // Try again soon rather than after ack_wait; the reconcile runs again.
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return Err(e);
        }
        message
            .double_ack_with(kind)
            .await
            .map_err(JetStreamError::Ack)
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
        let config = consumer::pull::Config {
            durable_name: Some(driver.name.clone()),
            name: Some(driver.name.clone()),
            description: Some(format!("conveyor-host driver {}", driver.name)),
            filter_subjects,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            deliver_policy: consumer::DeliverPolicy::All,
            // The host decides when to give up (max_attempts) and publishes a final result
            // then; this bound only stops a message that crashes every host from looping.
            max_deliver: i64::from(
                policy
                    .retry
                    .max_attempts
                    .saturating_mul(2)
                    .saturating_add(3),
            ),
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
        tracing::info!(driver = %driver.name, "attached to JetStream consumer");
        self.consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(driver.name.clone(), consumer);
        Ok(())
    }

    async fn next(&self, driver: &str) -> Result<Delivery<NatsToken>, JetStreamError> {
        let consumer = self.consumer(driver)?;
        loop {
            // One message per free slot: nothing waits in a local buffer while its ack timer
            // runs, so another host can take what this one cannot start.
            let mut batch = match consumer
                .fetch()
                .max_messages(1)
                .expires(PULL_EXPIRES)
                .messages()
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(%driver, error = %e, "pull request failed; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(message) = batch.next().await {
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(%driver, error = %e, "pull failed; retrying in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let attempt = message
                    .info()
                    .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
                    .unwrap_or(1);
                match parse(&message.payload) {
                    Ok(m) => {
                        let progress = self.keep_alive(&message);
                        return Ok(Delivery {
                            token: NatsToken { message, progress },
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
    }

    async fn settle(
        &self,
        delivery: Delivery<NatsToken>,
        settlement: Settlement,
    ) -> Result<(), JetStreamError> {
        let message = &delivery.token.message;
        let ack = |kind| async move { message.ack_with(kind).await.map_err(JetStreamError::Ack) };
        match settlement {
            // A transient failure that ran out of attempts is terminated, so JetStream
            // records that the host gave up on it.
            Settlement::Done(result) => self.finish(&delivery, &result, AckKind::Ack).await?,
            Settlement::GaveUp(result) => self.finish(&delivery, &result, AckKind::Term).await?,
            Settlement::Retry { delay } => ack(AckKind::Nak(Some(delay))).await?,
            Settlement::Skip => ack(AckKind::Ack).await?,
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
