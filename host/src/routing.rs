//! Which drivers get an event: one rule, read from each driver's `info()` (the resource types
//! it listens to and the events it wants), used wherever events are routed:
//!
//! - the embedded fan-out sends a resource change to every driver that [`wants`] it;
//! - a NATS consumer receives exactly the subjects of [`filter_subjects`], the same resource
//!   types in upstream's subject scheme;
//! - the manager [`admits`] a delivery by its event name: the delivery was routed to the
//!   driver by resource type (a fan-out, a subject, or a pipeline step naming the driver), and
//!   an event the driver does not want is settled as skipped.

use crate::wasm::DriverInfo;

/// Whether the driver wants `event` for resources of type `kind`.
pub fn wants(info: &DriverInfo, kind: &str, event: &str) -> bool {
    info.resources.iter().any(|r| r == kind) && admits(info, event)
}

/// Whether the driver wants events named `event` (an empty list, or `*`, means all).
pub fn admits(info: &DriverInfo, event: &str) -> bool {
    info.events.is_empty() || info.events.iter().any(|e| e == event || e == "*")
}

/// The NATS subjects that carry the driver's events: upstream's broadcast subject
/// `resources.<type>` and its pipeline-step subject `drivers.<name>.resources.<type>`, for
/// each resource type the driver listens to.
pub fn filter_subjects(info: &DriverInfo) -> Vec<String> {
    info.resources
        .iter()
        .flat_map(|r| {
            [
                format!("resources.{r}"),
                format!("drivers.{}.resources.{r}", info.name),
            ]
        })
        .collect()
}

/// Whether a name can be a NATS subject token (and a consumer name), as driver names and
/// resource types must: non-empty, without `.`, `*`, `>` or whitespace.
pub fn is_subject_token(s: &str) -> bool {
    !s.is_empty() && !s.contains(['.', '*', '>']) && !s.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::driver::info;

    #[test]
    fn event_filter() {
        let all = info("d", &["pipe"], &[]);
        assert!(wants(&all, "pipe", "delete"));
        assert!(!wants(&all, "other", "create"));
        let some = info("d", &["pipe"], &["create"]);
        assert!(wants(&some, "pipe", "create"));
        assert!(!wants(&some, "pipe", "update"));
        assert!(admits(&info("d", &["pipe"], &["*"]), "process"));
    }

    #[test]
    fn subjects_follow_the_resource_types() {
        let d = info("builder", &["pipe", "job"], &["create"]);
        assert_eq!(
            filter_subjects(&d),
            [
                "resources.pipe",
                "drivers.builder.resources.pipe",
                "resources.job",
                "drivers.builder.resources.job"
            ]
        );
    }
}
