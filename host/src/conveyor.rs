//! Upstream Conveyor CI's JSON shapes, in one place so the HTTP API and the event sources
//! cannot drift apart (see `conveyor-protocol.md` §2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod decode;
pub use decode::decode;

/// The JetStream stream upstream's server creates for resource and pipeline-step messages.
pub const MESSAGES_STREAM: &str = "messages";
/// Where driver results go, for the server's pipeline engine.
pub const RESULT_SUBJECT: &str = "pipelines.driver.result";

/// A resource: `pkg/types/resources.go` `Resource`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resource {
    /// The server-assigned UUID.
    #[serde(default)]
    pub id: String,
    /// The name, unique within the type.
    #[serde(default)]
    pub name: String,
    /// The pipeline, omitted when empty (as Go's `omitempty`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pipeline: String,
    /// The type: a resource definition's name.
    #[serde(default)]
    pub resource: String,
    /// String-to-string metadata (`version`, `driverresults.<driver>`).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The spec, validated against the definition's schema.
    #[serde(default)]
    pub spec: serde_json::Value,
}

impl Resource {
    /// The resource's version number from `metadata.version`.
    pub fn version(&self) -> u64 {
        self.metadata
            .get("version")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// A resource definition: `pkg/types/resources.go` `ResourceDefinition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceDefinition {
    /// The id (a UUID on create).
    #[serde(default)]
    pub id: String,
    /// The type name resources refer to.
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The definition's own version string.
    #[serde(default)]
    pub version: String,
    /// The JSON Schema for resources' `spec`.
    #[serde(default)]
    pub schema: serde_json::Value,
}

/// A pipeline: `pkg/types/pipelines.go` `Pipeline`. Steps run in array order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pipeline {
    /// The name resources refer to in their `pipeline` field.
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The pipeline's own version string.
    #[serde(default)]
    pub version: String,
    /// The resource type (a definition's name) the pipeline runs for.
    #[serde(default)]
    pub resource: String,
    /// The steps, in order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub steps: Vec<Step>,
    /// String-to-string metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
}

/// A pipeline step: `pkg/types/pipelines.go` `Step`. `id` is informational.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Step {
    /// Free-form id.
    #[serde(default)]
    pub id: String,
    /// The step's name.
    #[serde(default)]
    pub name: String,
    /// The driver that runs it.
    #[serde(default)]
    pub driver: String,
}

/// Go encodes an absent slice or map as `null`; read it as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A driver's result: `DriverResult` plus the driver name (`DriverResultEvent`), as stored in
/// `metadata["driverresults.<driver>"]` and published in `PipelineEvent.driverresult`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriverResult {
    /// Whether the driver succeeded.
    pub success: bool,
    /// Its message.
    pub message: String,
    /// Its structured output, `null` when none.
    pub data: serde_json::Value,
    /// The driver's name.
    pub driver: String,
}

/// A driver log line: `pkg/types/logs.go` `Log`, the shape of `GET /logs` and `logs.<runid>`.
/// Labels ride along as extra top-level fields, as the Python runtime does, so a client that
/// knows only `types.Log` still decodes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Log {
    /// The run id (no underscore, as upstream).
    pub runid: String,
    /// The driver's name.
    pub driver: String,
    /// The pipeline, `""` when none.
    pub pipeline: String,
    /// RFC 3339 with sub-second precision, UTC.
    pub timestamp: String,
    /// The text.
    pub message: String,
    /// The line's labels, flattened into the object.
    #[serde(flatten)]
    pub labels: BTreeMap<String, String>,
}

/// A message to drivers: `pkg/types/message.go` `DriverMessage`, as
/// `POST /drivers/broadcast-message` takes it (`payload` a JSON string: the resource's JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriverMessage {
    /// The event name (`create`, `update`, `delete`, `process`, or anything a driver wants).
    #[serde(default)]
    pub event: String,
    /// The payload, a string (upstream's drivers get the resource's JSON text).
    #[serde(default)]
    pub payload: String,
    /// The message id (24 hex characters), assigned by the server.
    #[serde(default)]
    pub id: String,
    /// The run id.
    #[serde(default)]
    pub run_id: String,
}

/// The `{"error": "..."}` body of every failed API call.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// The 201 body of `POST /resources`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedResponse {
    /// Always `Resource created successfully`.
    pub message: String,
    /// The resource name.
    pub name: String,
    /// The run id of the create event.
    pub runid: String,
    /// `"1"`.
    pub version: String,
}

/// The payload a driver gets for a resource decoded (with [`decode`]) from `raw`: `raw` itself
/// when a strict reading gives the same resource, else the resource re-encoded, so that a
/// driver's SDK, which reads field names exactly and refuses `null` for a map, sees what
/// the host saw (`"Name"` as `name`, `"metadata": null` as `{}`).
pub fn payload_for_drivers(raw: String, resource: &Resource) -> String {
    if serde_json::from_str::<Resource>(&raw).ok().as_ref() == Some(resource) {
        return raw;
    }
    // A Resource is strings, string maps and a JSON value: it always serialises.
    serde_json::to_string(resource).unwrap_or(raw)
}

/// Conveyor's message id: 24 lowercase hex characters (12 random bytes).
pub fn new_message_id() -> String {
    let bytes: [u8; 12] = rand::random();
    hex::encode(bytes)
}

/// A run id: a UUID, as upstream's, but version 7 (time-ordered: a millisecond timestamp, a
/// counter, then random bits) where upstream's is version 4 (all random). The text has the
/// same shape and clients treat it as opaque. The store keys a run's row, its log lines and
/// results by it: ids that grow with time land next to each other in those indexes (at their
/// end, in a store that never held version 4 ids), while random ones landed at a random page
/// of trees that grow with the store, so each event's write touched pages the cache no longer
/// held (docs/performance.md, "Run ids in time order").
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_omits_empty_pipeline_like_go() {
        let r: Resource = serde_json::from_str(
            r#"{"id":"1","name":"a","resource":"pipe","metadata":{"version":"1"},"spec":{}}"#,
        )
        .unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("pipeline").is_none());
        assert_eq!(r.version(), 1);
    }

    #[test]
    fn log_flattens_labels() {
        let log = Log {
            runid: "R".into(),
            driver: "d".into(),
            pipeline: String::new(),
            timestamp: "t".into(),
            message: "m".into(),
            labels: BTreeMap::from([("step".to_string(), "1".to_string())]),
        };
        let v = serde_json::to_value(&log).unwrap();
        assert_eq!(v["runid"], "R");
        assert_eq!(v["step"], "1");
        let back: Log = serde_json::from_value(v).unwrap();
        assert_eq!(back, log);
    }

    #[test]
    fn pipeline_reads_go_nulls_as_empty() {
        let p: Pipeline =
            serde_json::from_str(r#"{"name":"p","resource":"pipe","steps":null,"metadata":null}"#)
                .unwrap();
        assert!(p.steps.is_empty() && p.metadata.is_empty());
        let p: Pipeline = serde_json::from_str(
            r#"{"name":"p","resource":"pipe","steps":[{"id":"1","name":"build","driver":"builder"}]}"#,
        )
        .unwrap();
        assert_eq!(p.steps[0].driver, "builder");
    }

    #[test]
    fn ids_have_conveyor_shapes() {
        let m = new_message_id();
        assert_eq!(m.len(), 24);
        assert!(
            m.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(uuid::Uuid::parse_str(&new_run_id()).is_ok());
    }

    #[test]
    fn run_ids_grow_in_the_order_they_are_made() {
        let ids: Vec<String> = (0..1000).map(|_| new_run_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_eq!(ids[0].len(), 36);
    }
}
