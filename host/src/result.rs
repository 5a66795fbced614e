//! What one delivery ended as: the typed [`Outcome`] and the [`RunResult`] built from it once,
//! which the embedded backend stores (with its run's next step, in one transaction) and the
//! Conveyor backend publishes as upstream's `driver.result`. Metrics count the same outcome.

use serde::ser::SerializeStruct;

use crate::wasm::FailureKind;

/// How a delivery ended, as results, logs and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The driver succeeded.
    Success,
    /// The driver failed for good.
    Failure,
    /// The driver asked to be retried (final only when the attempts ran out).
    Retry,
    /// The sandbox stopped the call, or the call failed.
    Failed(FailureKind),
    /// No driver of that name was loaded within `runs.missing_driver_wait`.
    DriverNotLoaded,
}

impl Outcome {
    /// The outcome's name: `success`, `failure`, `retry`, `driver-not-loaded` or a failure
    /// kind such as `trap`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Retry => "retry",
            Outcome::Failed(kind) => kind.as_str(),
            Outcome::DriverNotLoaded => "driver-not-loaded",
        }
    }

    /// The outcome named `s` ([`Outcome::as_str`]).
    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "success" => Outcome::Success,
            "failure" => Outcome::Failure,
            "retry" => Outcome::Retry,
            "driver-not-loaded" => Outcome::DriverNotLoaded,
            other => Outcome::Failed(FailureKind::parse(other)?),
        })
    }

    /// Conveyor's `success`.
    pub fn is_success(self) -> bool {
        self == Outcome::Success
    }

    /// The sandbox failure, for [`Outcome::Failed`].
    pub fn failure_kind(self) -> Option<FailureKind> {
        match self {
            Outcome::Failed(kind) => Some(kind),
            _ => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A driver's final result for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// The run.
    pub run_id: String,
    /// The driver.
    pub driver: String,
    /// The message that carried the event.
    pub message_id: String,
    /// The event name.
    pub event: String,
    /// The resource's type.
    pub resource_type: String,
    /// The resource's name.
    pub resource_name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The result's message.
    pub message: String,
    /// The result's data, as JSON.
    pub data: serde_json::Value,
    /// Deliveries it took.
    pub attempts: u32,
    /// When the last attempt started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
}

impl RunResult {
    /// Conveyor's `success`.
    pub fn success(&self) -> bool {
        self.outcome.is_success()
    }

    /// Upstream's `DriverResult` for this result (what `driverresults.<driver>` and the
    /// `driver.result` message carry).
    pub fn driver_result(&self) -> crate::conveyor::DriverResult {
        crate::conveyor::DriverResult {
            success: self.success(),
            message: self.message.clone(),
            data: self.data.clone(),
            driver: self.driver.clone(),
        }
    }
}

/// The JSON shape of the API: `success` and `failure_kind` are shown beside `outcome`, from
/// which they follow.
impl serde::Serialize for RunResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut r = s.serialize_struct("RunResult", 13)?;
        r.serialize_field("run_id", &self.run_id)?;
        r.serialize_field("driver", &self.driver)?;
        r.serialize_field("message_id", &self.message_id)?;
        r.serialize_field("event", &self.event)?;
        r.serialize_field("resource_type", &self.resource_type)?;
        r.serialize_field("resource_name", &self.resource_name)?;
        r.serialize_field("success", &self.success())?;
        r.serialize_field("outcome", self.outcome.as_str())?;
        r.serialize_field("failure_kind", &self.outcome.failure_kind())?;
        r.serialize_field("message", &self.message)?;
        r.serialize_field("data", &self.data)?;
        r.serialize_field("attempts", &self.attempts)?;
        r.serialize_field("started_at", &self.started_at)?;
        r.serialize_field("finished_at", &self.finished_at)?;
        r.end()
    }
}

/// [`RunResult`]'s JSON shape for the OpenAPI document: its `Serialize` is written by hand
/// (`success` and `failure_kind` derived from `outcome`), so the schema is derived from this
/// mirror of what it writes; `run_result_schema_lists_what_serialize_writes` keeps them equal.
#[derive(utoipa::ToSchema)]
#[schema(as = RunResult)]
#[allow(dead_code)] // Read by the schema derive only.
struct RunResultShape {
    run_id: String,
    driver: String,
    message_id: String,
    event: String,
    resource_type: String,
    resource_name: String,
    /// Whether the outcome is a success.
    success: bool,
    /// `success`, `failure`, `retry`, `driver-not-loaded`, or the kind of failure the host
    /// saw (as `failure_kind`).
    outcome: String,
    /// The kind of failure the host saw (`trap`, `cpu-exceeded`, ...), when it failed the
    /// reconcile; `null` otherwise.
    failure_kind: Option<String>,
    message: String,
    data: serde_json::Value,
    attempts: u32,
    started_at: String,
    finished_at: String,
}

impl utoipa::PartialSchema for RunResult {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <RunResultShape as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for RunResult {
    fn name() -> std::borrow::Cow<'static, str> {
        <RunResultShape as utoipa::ToSchema>::name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_their_names() {
        for o in [
            Outcome::Success,
            Outcome::Failure,
            Outcome::Retry,
            Outcome::DriverNotLoaded,
            Outcome::Failed(FailureKind::Trap),
            Outcome::Failed(FailureKind::InvalidResult),
        ] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("nonsense"), None);
    }
    #[test]
    fn run_result_schema_lists_what_serialize_writes() {
        let result = RunResult {
            run_id: String::new(),
            driver: String::new(),
            message_id: String::new(),
            event: String::new(),
            resource_type: String::new(),
            resource_name: String::new(),
            outcome: Outcome::Success,
            message: String::new(),
            data: serde_json::Value::Null,
            attempts: 1,
            started_at: String::new(),
            finished_at: String::new(),
        };
        let written = serde_json::to_value(&result).expect("serializes");
        let schema = serde_json::to_value(<RunResult as utoipa::PartialSchema>::schema())
            .expect("serializes");
        let mut fields: Vec<_> = written.as_object().expect("an object").keys().collect();
        let mut documented: Vec<_> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .collect();
        fields.sort();
        documented.sort();
        assert_eq!(fields, documented);
    }
}
