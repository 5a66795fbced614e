//! `POST /drivers/broadcast-message`: upstream publishes the body as a DriverMessage on a
//! subject nothing reads; here it is delivered, as a run like any other (its steps, logs and
//! results), to every loaded driver that wants its event name.

use super::{Resources, Result, ServiceError};
use crate::conveyor::{self, DriverMessage, Resource};
use crate::store::{NewRun, NewStep};

impl Resources {
    /// Starts a run delivering `message` to every loaded driver that wants its event, one
    /// step each, whatever the resource types they list; returns its run id. The payload
    /// must be a resource's JSON text (what every driver SDK parses), read as upstream's
    /// decoder reads it; it goes to the drivers as sent unless that reading differs from a strict one. The caller's `id` and `run_id` are replaced: the run is this host's.
    pub async fn broadcast(&self, message: DriverMessage) -> Result<String> {
        self.drivers_settled().await;
        if message.event.is_empty() {
            return Err(ServiceError::Invalid(
                "could not parse request body: event is required".into(),
            ));
        }
        let resource: Resource = conveyor::decode(message.payload.as_bytes()).map_err(|e| {
            ServiceError::Invalid(format!(
                "could not parse request body: payload is not a Conveyor resource's JSON: {e}"
            ))
        })?;
        let run_id = conveyor::new_run_id();
        let steps = self
            .registry
            .admitting(&message.event)
            .into_iter()
            .map(|driver| NewStep {
                name: driver.clone(),
                driver,
            })
            .collect();
        let run = NewRun {
            run_id: run_id.clone(),
            resource_type: resource.resource.clone(),
            resource_name: resource.name.clone(),
            pipeline: None,
            event: message.event,
            payload: conveyor::payload_for_drivers(message.payload, &resource),
            steps,
            // `failure` and anything a later version adds: a broadcast has none.
            ..Default::default()
        };
        self.store
            .write(|tx| super::pipeline::start_run(tx, &run))?;
        Ok(run_id)
    }
}
