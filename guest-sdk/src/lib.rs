//! Write Conveyor CI drivers as WebAssembly components for conveyor-host.
//!
//! A driver is a type that implements [`Driver`] plus one [`export!`] line. Build it with
//! `cargo build --release --target wasm32-wasip2` and drop the `.wasm` from
//! `target/wasm32-wasip2/release/` into the host's drivers directory.
//!
//! ```ignore
//! use conveyor_driver::{Driver, DriverResult, Logger};
//!
//! struct SampleDriver;
//!
//! impl Driver for SampleDriver {
//!     const NAME: &'static str = "sample-driver";
//!     const RESOURCES: &'static [&'static str] = &["resource-1"];
//!
//!     fn reconcile(payload: &str, event: &str, run_id: &str, logger: &Logger) -> DriverResult {
//!         logger.log([("step", "1")], "working");
//!         DriverResult::success("Sample Driver Reconciled Successfully")
//!     }
//! }
//!
//! conveyor_driver::export!(SampleDriver);
//! ```
//!
//! Each event runs in a fresh instance: statics do not survive from one event to the next.

// Lets the generated bindings name this crate by its public path, from inside and outside.
extern crate self as conveyor_driver;

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "driver",
        pub_export_macro: true,
        export_macro_name: "__export_driver",
        default_bindings_module: "::conveyor_driver::bindings",
        runtime_path: "::conveyor_driver::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

use bindings::conveyor::driver::{client as wit_client, log as wit_log, types as wit};

/// A Conveyor CI driver: a name, the resource types it listens to, and what it does for each
/// event. The Rust form of the Go runtime's `runtime.Driver{Name, Resources, Reconcile}`.
pub trait Driver {
    /// The driver's name: one NATS subject token (no `.`, `*`, `>` or whitespace).
    const NAME: &'static str;
    /// The resource types (resource definition names) whose events this driver receives.
    const RESOURCES: &'static [&'static str];
    /// The event names this driver wants (`create`, `update`, `delete`, `process`). Empty, the
    /// default, means every event.
    const EVENTS: &'static [&'static str] = &[];

    /// Handles one event. `payload` is the resource as JSON text (parse it with
    /// [`Resource::parse`]), `event` the event name, `run_id` the run's id, and `logger` the run's
    /// log, which also knows the rest of the event ([`Logger::attempt`], [`Logger::pipeline`],
    /// [`Logger::message_id`]).
    fn reconcile(payload: &str, event: &str, run_id: &str, logger: &Logger) -> DriverResult;
}

/// The run's log, and the context of the event being handled.
#[derive(Debug, Clone)]
pub struct Logger {
    run_id: String,
    message_id: String,
    pipeline: Option<String>,
    attempt: u32,
}

impl Logger {
    /// Records one log line with labels, like the Go runtime's `logger.Log(labels, message)`.
    /// Labels are any iterable of key/value pairs: an array of tuples, a `HashMap`, a `BTreeMap`.
    pub fn log<L, K, V>(&self, labels: L, message: impl AsRef<str>)
    where
        L: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let labels: Vec<(String, String)> = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        wit_log::log(&labels, message.as_ref());
    }

    /// Records one log line without labels.
    pub fn info(&self, message: impl AsRef<str>) {
        wit_log::log(&[], message.as_ref());
    }

    /// The run id, also passed to `reconcile`.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The id of the message that carried the event; it is the same on every redelivery.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// The pipeline this run belongs to, if any.
    pub fn pipeline(&self) -> Option<&str> {
        self.pipeline.as_deref()
    }

    /// Which delivery this is: 1 for the first, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// What `reconcile` returns: Conveyor's `DriverResult` (`success`, `message`, `data`) plus an
/// optional request to be retried.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DriverResult {
    /// Whether the work succeeded.
    pub success: bool,
    /// A human-readable summary.
    pub message: String,
    /// Optional structured output, stored and published as the result's `data`.
    pub data: Option<serde_json::Value>,
    /// For a failure: `Some` asks the host to deliver the event again (a transient failure),
    /// after at least the given delay if there is one. `None` means the failure is permanent.
    pub retry: Option<Retry>,
}

/// A request to deliver the event again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retry {
    /// The least delay before the next attempt; `None` leaves it to the host's backoff.
    pub after: Option<Duration>,
}

impl DriverResult {
    /// A successful result with a message.
    pub fn success(message: impl Into<String>) -> Self {
        DriverResult {
            success: true,
            message: message.into(),
            ..Default::default()
        }
    }

    /// A permanent failure: the event is not delivered again.
    pub fn failure(message: impl Into<String>) -> Self {
        DriverResult {
            success: false,
            message: message.into(),
            ..Default::default()
        }
    }

    /// A transient failure: the host delivers the event again with exponential backoff, until
    /// its attempt limit.
    pub fn retry(message: impl Into<String>) -> Self {
        DriverResult {
            retry: Some(Retry::default()),
            ..Self::failure(message)
        }
    }

    /// A transient failure to retry after at least `after`.
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        DriverResult {
            retry: Some(Retry { after: Some(after) }),
            ..Self::failure(message)
        }
    }

    /// Attaches structured output, anything that serialises to JSON.
    pub fn with_data(mut self, data: impl Serialize) -> Self {
        self.data = Some(serde_json::to_value(data).unwrap_or_else(
            |e| serde_json::json!({ "error": format!("data did not serialise: {e}") }),
        ));
        self
    }

    fn into_wit(self) -> wit::DriverResult {
        let outcome = match (self.success, self.retry) {
            (true, _) => wit::Outcome::Success,
            (false, None) => wit::Outcome::Failure,
            (false, Some(r)) => wit::Outcome::Retry(
                r.after
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ),
        };
        wit::DriverResult {
            outcome,
            message: self.message,
            data: self.data.map(|d| d.to_string()),
        }
    }
}

/// A Conveyor resource, as carried in an event's payload. `S` is the spec's type:
/// `serde_json::Value` by default, or any type of your own that deserialises from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: DeserializeOwned", serialize = "S: Serialize"))]
pub struct Resource<S = serde_json::Value> {
    /// The id the server assigned (a UUID).
    #[serde(default)]
    pub id: String,
    /// The resource's name, unique within its type.
    pub name: String,
    /// The resource's type: the name of its resource definition.
    pub resource: String,
    /// The pipeline it runs under, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// String-to-string metadata: `version`, and `driverresults.<driver>` entries holding
    /// earlier pipeline steps' results as JSON text.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The spec, validated by the host against the definition's JSON Schema.
    pub spec: S,
}

impl<S: DeserializeOwned> Resource<S> {
    /// Parses an event payload (or any resource JSON text).
    pub fn parse(payload: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(payload)
    }

    /// The resource's version, from `metadata["version"]`.
    pub fn version(&self) -> Option<&str> {
        self.metadata.get("version").map(String::as_str)
    }

    /// The result an earlier pipeline step's driver left in `metadata["driverresults.<driver>"]`.
    pub fn driver_result(&self, driver: &str) -> Option<StepResult> {
        self.metadata
            .get(&format!("driverresults.{driver}"))
            .and_then(|s| serde_json::from_str(s).ok())
    }
}

/// A driver's result as Conveyor stores it in a resource's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// Whether that driver succeeded.
    pub success: bool,
    /// Its message.
    #[serde(default)]
    pub message: String,
    /// Its data.
    #[serde(default)]
    pub data: serde_json::Value,
    /// The driver's name.
    #[serde(default)]
    pub driver: String,
}

/// A resource definition: a resource type and the JSON Schema of its spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceDefinition {
    /// Its id.
    #[serde(default)]
    pub id: String,
    /// The type name that resources use in their `resource` field.
    pub name: String,
    /// A description.
    #[serde(default)]
    pub description: String,
    /// The definition's own version.
    #[serde(default)]
    pub version: String,
    /// The JSON Schema that resources' specs must satisfy.
    #[serde(default)]
    pub schema: serde_json::Value,
}

/// The Conveyor API client: read and write resources through the host.
pub mod client {
    use super::*;

    /// Why a client call failed.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum ClientError {
        /// The resource or definition does not exist.
        NotFound(String),
        /// The request was refused as invalid (for example a spec that fails validation).
        Invalid(String),
        /// The resource already exists.
        Conflict(String),
        /// The host does not grant this driver the API client.
        Denied(String),
        /// The API could not be reached or failed; usually worth a retry.
        Unavailable(String),
        /// The host's answer could not be decoded.
        Decode(String),
    }

    impl std::fmt::Display for ClientError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                ClientError::NotFound(m) => write!(f, "not found: {m}"),
                ClientError::Invalid(m) => write!(f, "invalid: {m}"),
                ClientError::Conflict(m) => write!(f, "conflict: {m}"),
                ClientError::Denied(m) => write!(f, "denied: {m}"),
                ClientError::Unavailable(m) => write!(f, "unavailable: {m}"),
                ClientError::Decode(m) => write!(f, "could not decode the answer: {m}"),
            }
        }
    }

    impl std::error::Error for ClientError {}

    impl ClientError {
        /// Whether retrying the event later may help.
        pub fn is_transient(&self) -> bool {
            matches!(self, ClientError::Unavailable(_))
        }
    }

    impl From<wit_client::ClientError> for ClientError {
        fn from(e: wit_client::ClientError) -> Self {
            match e {
                wit_client::ClientError::NotFound(m) => ClientError::NotFound(m),
                wit_client::ClientError::Invalid(m) => ClientError::Invalid(m),
                wit_client::ClientError::Conflict(m) => ClientError::Conflict(m),
                wit_client::ClientError::Denied(m) => ClientError::Denied(m),
                wit_client::ClientError::Unavailable(m) => ClientError::Unavailable(m),
            }
        }
    }

    fn decode<T: DeserializeOwned>(json: &str) -> Result<T, ClientError> {
        serde_json::from_str(json).map_err(|e| ClientError::Decode(e.to_string()))
    }

    fn encode<T: Serialize>(value: &T) -> Result<String, ClientError> {
        serde_json::to_string(value).map_err(|e| ClientError::Invalid(e.to_string()))
    }

    /// What creating a resource returns.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Created {
        /// The resource's name.
        pub name: String,
        /// The run id of the `create` event it started.
        pub run_id: String,
        /// Its version, `"1"`.
        pub version: String,
    }

    /// Reads the current version of a resource.
    pub fn get_resource<S: DeserializeOwned>(
        resource_type: &str,
        name: &str,
    ) -> Result<Resource<S>, ClientError> {
        decode(&wit_client::get_resource(resource_type, name)?)
    }

    /// Creates a resource; drivers listening to its type receive a `create` event.
    pub fn create_resource<S: Serialize>(resource: &Resource<S>) -> Result<Created, ClientError> {
        let c = wit_client::create_resource(&encode(resource)?)?;
        Ok(Created {
            name: c.name,
            run_id: c.run_id,
            version: c.version,
        })
    }

    /// Replaces a resource's state (its version is bumped and an `update` event sent) and
    /// returns what was stored.
    pub fn update_resource<S: Serialize + DeserializeOwned>(
        resource: &Resource<S>,
    ) -> Result<Resource<S>, ClientError> {
        decode(&wit_client::update_resource(
            &resource.resource,
            &resource.name,
            &encode(resource)?,
        )?)
    }

    /// Reads a resource definition.
    pub fn get_resource_definition(name: &str) -> Result<ResourceDefinition, ClientError> {
        decode(&wit_client::get_resource_definition(name)?)
    }
}

#[doc(hidden)]
pub struct Adapter<D>(PhantomData<D>);

impl<D: Driver> bindings::Guest for Adapter<D> {
    fn info() -> wit::DriverInfo {
        wit::DriverInfo {
            name: D::NAME.to_string(),
            resources: D::RESOURCES.iter().map(|s| s.to_string()).collect(),
            events: D::EVENTS.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn reconcile(ev: wit::Event) -> wit::DriverResult {
        let logger = Logger {
            run_id: ev.run_id,
            message_id: ev.message_id,
            pipeline: ev.pipeline,
            attempt: ev.attempt,
        };
        D::reconcile(&ev.payload, &ev.name, &logger.run_id, &logger).into_wit()
    }
}

/// Exports a [`Driver`] as the component's `info` and `reconcile`. Use it once, at the top
/// level of the driver crate: `conveyor_driver::export!(MyDriver);`.
#[macro_export]
macro_rules! export {
    ($driver:ty) => {
        type __ConveyorDriverAdapter = $crate::Adapter<$driver>;
        $crate::bindings::__export_driver!(__ConveyorDriverAdapter with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_map_to_the_wit_outcome() {
        let w = DriverResult::success("ok")
            .with_data(serde_json::json!({"k": 1}))
            .into_wit();
        assert!(matches!(w.outcome, wit::Outcome::Success));
        assert_eq!(w.data.as_deref(), Some(r#"{"k":1}"#));
        assert!(matches!(
            DriverResult::failure("no").into_wit().outcome,
            wit::Outcome::Failure
        ));
        assert!(matches!(
            DriverResult::retry("later").into_wit().outcome,
            wit::Outcome::Retry(None)
        ));
        let w = DriverResult::retry_after("later", Duration::from_secs(2)).into_wit();
        assert!(matches!(w.outcome, wit::Outcome::Retry(Some(2000))));
    }

    #[test]
    fn payloads_parse_into_resources() {
        #[derive(serde::Deserialize)]
        struct Spec {
            image: String,
        }
        let payload = r#"{"id":"u","name":"app","resource":"pipe","metadata":{"version":"2",
            "driverresults.builder":"{\"success\":true,\"message\":\"ok\",\"data\":{\"k\":\"v\"},\"driver\":\"builder\"}"},
            "spec":{"image":"alpine"}}"#;
        let r = Resource::<Spec>::parse(payload).unwrap();
        assert_eq!(r.spec.image, "alpine");
        assert_eq!(r.version(), Some("2"));
        assert_eq!(r.pipeline, None);
        let step = r.driver_result("builder").unwrap();
        assert!(step.success);
        assert_eq!(step.data["k"], "v");
        assert!(r.driver_result("other").is_none());
    }
}
