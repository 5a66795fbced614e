//! The embedded control plane: resource definitions, pipelines and resources, validated and
//! stored, and the run each resource change starts: its pipeline's steps in order, or one
//! step per driver that listens. The HTTP API and the drivers' API
//! client both go through here, so they validate and emit events the same way.
//!
//! Messages follow upstream Conveyor's wording; where upstream answers 500 for a missing or
//! duplicate object, this answers 404 or 409 (see the README).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod broadcast;

use super::pipeline;
use super::schema::{self, ValidationError, Validator};
use crate::conveyor::{self, CreatedResponse, Pipeline, Resource, ResourceDefinition};
use crate::registry::Registry;
use crate::store::{NewRun, NewStep, RunStatus, Store, StoreError, Tx, resources};
use crate::wasm::ApiClient;
use crate::wasm::bindings::{ClientError, Created};

/// Why a control-plane call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is invalid (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The object already exists (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The store failed (HTTP 500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A part of the host is not running (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// A driver's write past what its budget allows (its client gets a `denied` error).
    #[error("{0}")]
    Denied(String),
}

type Result<T> = std::result::Result<T, ServiceError>;

/// A change that was stored, with the run its events started.
#[derive(Debug, Clone)]
pub struct Change<T> {
    /// The stored object.
    pub value: T,
    /// The run it started (also when no driver listens).
    pub run_id: String,
}

/// Resource definitions, pipelines and resources.
pub struct Resources {
    store: Arc<Store>,
    registry: Arc<Registry>,
    load_wait: Duration,
    validator: Validator,
}

impl Resources {
    /// The control plane over a store, sending events to the drivers in `registry`. Changes
    /// made while the drivers found at start are still loading wait for them, up to
    /// `load_wait` (see [`Resources::drivers_settled`]).
    pub fn new(store: Arc<Store>, registry: Arc<Registry>, load_wait: Duration) -> Self {
        Resources {
            store,
            registry,
            load_wait,
            validator: Validator::new(),
        }
    }

    /// Waits, at most `load_wait`, until the drivers found at start are loaded. A change's
    /// event goes to the drivers loaded when it is made; a first compile of a Python or
    /// JavaScript driver takes seconds, and without this wait a resource created meanwhile
    /// would never reach it. Every resource change starts here; it costs nothing once loaded.
    async fn drivers_settled(&self) {
        if !self.registry.startup_settled(self.load_wait).await {
            tracing::warn!(
                files = ?self.registry.loading().iter().map(|l| l.file.display().to_string()).collect::<Vec<_>>(),
                "drivers are still loading after {}; the change goes to the drivers loaded so far",
                humantime::format_duration(self.load_wait)
            );
        }
    }

    // ---- definitions ----

    /// `POST /resource-definitions`.
    pub fn create_definition(&self, mut def: ResourceDefinition) -> Result<ResourceDefinition> {
        require_name(&def.name, "Resource definition name is required")?;
        check_schema(&def.schema)?;
        def.id = uuid::Uuid::new_v4().to_string();
        if !self.store.insert_definition(&def)? {
            return Err(ServiceError::Conflict(format!(
                "Failed to insert resource definition: resource definition with name {} already exists",
                def.name
            )));
        }
        Ok(def)
    }

    /// `POST /resource-definitions/apply`: create or replace, keeping the id of an existing
    /// definition (upstream stores an empty id here; that is a bug).
    pub fn apply_definition(&self, mut def: ResourceDefinition) -> Result<ResourceDefinition> {
        require_name(&def.name, "Resource name is required")?;
        check_schema(&def.schema)?;
        def.id = match self.store.definition(&def.name)? {
            Some(old) if !old.id.is_empty() => old.id,
            _ => uuid::Uuid::new_v4().to_string(),
        };
        self.store.upsert_definition(&def)?;
        Ok(def)
    }

    /// `GET /resource-definitions/{name}`.
    pub fn definition(&self, name: &str) -> Result<ResourceDefinition> {
        self.store
            .definition(name)?
            .ok_or_else(|| definition_not_found(name))
    }

    /// `GET /resource-definitions`: a page of definitions by name.
    pub fn definitions(&self, limit: u32, after: &str) -> Result<Vec<ResourceDefinition>> {
        Ok(self.store.definitions(limit, after)?)
    }

    /// `PUT /resource-definitions/{name}`: replaces the definition; the name comes from the
    /// path and the id is kept.
    pub fn replace_definition(
        &self,
        name: &str,
        mut def: ResourceDefinition,
    ) -> Result<ResourceDefinition> {
        check_schema(&def.schema)?;
        let old = self.definition(name)?;
        def.id = old.id;
        def.name = name.to_string();
        if !self.store.replace_definition(name, &def)? {
            return Err(definition_not_found(name));
        }
        Ok(def)
    }

    /// `DELETE /resource-definitions/{name}`.
    pub fn delete_definition(&self, name: &str) -> Result<()> {
        if self.store.delete_definition(name)? {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!(
                "Failed to delete resource definition: resource definition with name {name} not found"
            )))
        }
    }

    // ---- resources ----

    /// `POST /resources`: validates the spec, stores version 1, and sends `create` to every
    /// driver listening to the type, in one transaction.
    pub async fn create_resource(&self, res: Resource) -> Result<CreatedResponse> {
        self.create_resource_as(res, None).await
    }

    /// [`Resources::create_resource`], for a driver's client when `origin` is given.
    async fn create_resource_as(
        &self,
        mut res: Resource,
        origin: Option<&Origin>,
    ) -> Result<CreatedResponse> {
        self.drivers_settled().await;
        if res.resource.is_empty() {
            return Err(ServiceError::Invalid("Resource type is required".into()));
        }
        require_name(&res.name, "Resource name is required")?;
        if res.name.contains('/') {
            return Err(ServiceError::Invalid(format!(
                "Resource name {:?} must not contain '/'",
                res.name
            )));
        }
        self.validate_spec(&res.resource, &res.spec).await?;
        let pipeline = if res.pipeline.is_empty() {
            None
        } else {
            let pipeline = self.store.pipeline(&res.pipeline)?.ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "Failed to get pipeline: pipeline {} not found",
                    res.pipeline
                ))
            })?;
            if pipeline.resource != res.resource {
                return Err(ServiceError::Invalid(format!(
                    "Resource type {} does not match pipeline resource type {}",
                    res.resource, pipeline.resource
                )));
            }
            Some(pipeline)
        };
        res.id = uuid::Uuid::new_v4().to_string();
        res.metadata = BTreeMap::from([("version".to_string(), "1".to_string())]);
        let run_id = conveyor::new_run_id();
        let mut run = self.run_for(&res, "create", &run_id, pipeline.as_ref());
        run.origin = origin.map(|o| o.driver.clone());
        let origin = origin.cloned();
        let (inserted, res) = self
            .store
            .write_off(move |tx| {
                if let Some(refusal) = over_queued(tx, origin.as_ref())? {
                    return Ok((Err(refusal), res));
                }
                if !resources::insert(tx, &res)? {
                    return Ok((Ok(false), res));
                }
                pipeline::start_run(tx, &run)?;
                Ok((Ok(true), res))
            })
            .await?;
        let inserted = inserted?;
        if !inserted {
            return Err(ServiceError::Conflict(format!(
                "Failed to insert resource: resource with name {} and type {} already exists",
                res.name, res.resource
            )));
        }
        Ok(CreatedResponse {
            message: "Resource created successfully".into(),
            name: res.name,
            runid: run_id,
            version: "1".into(),
        })
    }

    /// `GET /resources/{type}/{name}`.
    pub fn resource(&self, kind: &str, name: &str) -> Result<Resource> {
        self.store
            .resource(kind, name)?
            .ok_or_else(|| resource_not_found(kind, name))
    }

    /// `GET /resources/{type}`: a page of the type's resources by name (an unknown type has
    /// none).
    pub fn resources_of(&self, kind: &str, limit: u32, after: &str) -> Result<Vec<Resource>> {
        Ok(self.store.resources_of(kind, limit, after)?)
    }

    /// `GET /resources/{type}/{name}/{version}`.
    pub fn resource_version(&self, kind: &str, name: &str, version: &str) -> Result<Resource> {
        self.store
            .resource_version(kind, name, version)?
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "Failed to find resource: resource with name {name}, type {kind} and version {version} not found"
                ))
            })
    }

    /// `PUT /resources/{type}/{name}`: validates the new spec against the type's definition,
    /// stores it as the next version (keeping the id) and sends `update`.
    pub async fn update_resource(
        &self,
        kind: &str,
        name: &str,
        body: Resource,
    ) -> Result<Change<Resource>> {
        self.update_resource_as(kind, name, body, None).await
    }

    /// [`Resources::update_resource`], for a driver's client when `origin` is given.
    async fn update_resource_as(
        &self,
        kind: &str,
        name: &str,
        body: Resource,
        origin: Option<&Origin>,
    ) -> Result<Change<Resource>> {
        self.drivers_settled().await;
        if !body.resource.is_empty() && body.resource != kind {
            return Err(ServiceError::Invalid(format!(
                "Resource type {} in the body does not match {kind} in the path",
                body.resource
            )));
        }
        if !body.name.is_empty() && body.name != name {
            return Err(ServiceError::Invalid(format!(
                "Resource name {} in the body does not match {name} in the path",
                body.name
            )));
        }
        self.validate_spec(kind, &body.spec).await?;
        let run_id = conveyor::new_run_id();
        let pipeline = self.pipeline_of(kind, name)?;
        let updated = self.store.write(|tx| {
            if let Some(refusal) = over_queued(tx, origin)? {
                return Ok(Err(refusal));
            }
            let Some(current) = resources::read(tx, kind, name)? else {
                return Ok(Ok(None));
            };
            let mut metadata = body.metadata;
            metadata.insert("version".into(), (current.version() + 1).to_string());
            let new = Resource {
                id: current.id,
                name: name.to_string(),
                pipeline: current.pipeline,
                resource: kind.to_string(),
                metadata,
                spec: body.spec,
            };
            resources::replace(tx, &new)?;
            let mut run = self.run_for(&new, "update", &run_id, pipeline.as_ref());
            run.origin = origin.map(|o| o.driver.clone());
            pipeline::start_run(tx, &run)?;
            Ok(Ok(Some(new)))
        })??;
        let value = updated.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "Failed to update resource: resource with name {name} and type {kind} not found"
            ))
        })?;
        Ok(Change { value, run_id })
    }

    /// `DELETE /resources/{type}/{name}`: removes the current state (version snapshots stay)
    /// and sends `delete` with the last state as payload.
    pub async fn delete_resource(&self, kind: &str, name: &str) -> Result<Change<Resource>> {
        self.drivers_settled().await;
        let run_id = conveyor::new_run_id();
        let pipeline = self.pipeline_of(kind, name)?;
        let deleted = self.store.write(|tx| {
            let Some(current) = resources::read(tx, kind, name)? else {
                return Ok(None);
            };
            resources::delete(tx, kind, name)?;
            pipeline::start_run(
                tx,
                &self.run_for(&current, "delete", &run_id, pipeline.as_ref()),
            )?;
            Ok(Some(current))
        })?;
        let value = deleted.ok_or_else(|| resource_not_found(kind, name))?;
        Ok(Change { value, run_id })
    }

    async fn validate_spec(&self, kind: &str, spec: &serde_json::Value) -> Result<()> {
        let def = self.store.shared_definition(kind)?.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "Failed to find resource definition: {}",
                definition_missing(kind)
            ))
        })?;
        if def.schema.is_null() {
            return Err(ServiceError::Invalid(
                "Resource definition schema is required".into(),
            ));
        }
        match self.validator.validate(def, spec.clone()).await {
            Ok(()) => Ok(()),
            Err(ValidationError::Stopped) => Err(ServiceError::Unavailable(
                "Resource validation failed: the validator is not running".into(),
            )),
            Err(e) => Err(ServiceError::Invalid(format!(
                "Resource validation failed: {e}"
            ))),
        }
    }

    /// The pipeline of a stored resource, read before the change's transaction so that the
    /// transaction does no more than write. `None` when it has none, or it is gone.
    fn pipeline_of(&self, kind: &str, name: &str) -> Result<Option<Pipeline>> {
        match self.store.resource(kind, name)? {
            Some(r) if !r.pipeline.is_empty() => Ok(self.store.pipeline(&r.pipeline)?),
            _ => Ok(None),
        }
    }

    /// The run a change starts: the resource's pipeline's steps (the first gets `event`, the
    /// later ones `process`), or one step per driver listening to `event` on the type, as one
    /// NATS message on `resources.<type>` reaches every driver's consumer. A pipeline that is
    /// gone, or no longer for this type, makes a run that is stored as failed.
    fn run_for(
        &self,
        res: &Resource,
        event: &str,
        run_id: &str,
        pipeline: Option<&Pipeline>,
    ) -> NewRun {
        // A Resource is strings, string maps and a JSON value: it always serialises.
        let payload = serde_json::to_string(res).unwrap_or_default();
        let mut failure = None;
        let (pipeline_name, steps) = if res.pipeline.is_empty() {
            let steps = self
                .registry
                .wanting(&res.resource, event)
                .into_iter()
                .map(|driver| NewStep {
                    name: driver.clone(),
                    driver,
                })
                .collect();
            (None, steps)
        } else {
            let steps = match pipeline.filter(|p| p.name == res.pipeline) {
                Some(p) if p.resource == res.resource => p
                    .steps
                    .iter()
                    .map(|s| NewStep {
                        name: if s.name.is_empty() {
                            s.driver.clone()
                        } else {
                            s.name.clone()
                        },
                        driver: s.driver.clone(),
                    })
                    .collect(),
                Some(p) => {
                    failure = Some(format!(
                        "pipeline {} is now for resources of type {}, not {}",
                        p.name, p.resource, res.resource
                    ));
                    Vec::new()
                }
                None => {
                    failure = Some(format!("pipeline {} not found", res.pipeline));
                    Vec::new()
                }
            };
            (Some(res.pipeline.clone()), steps)
        };
        NewRun {
            run_id: run_id.to_string(),
            resource_type: res.resource.clone(),
            resource_name: res.name.clone(),
            pipeline: pipeline_name,
            event: event.to_string(),
            payload,
            steps,
            failure,
            origin: None,
            replay_of: None,
        }
    }

    // ---- replay ----

    /// `POST /runs/{runid}/replay`: a new run of a failed run's first event (its stored
    /// event name and payload, not the resource as it is now), linked to it by `replay_of`,
    /// on the driver versions loaded now. A pipeline run replays its steps; any other run
    /// goes to the drivers that listen now. With `driver`, only that driver gets the event,
    /// as a run of one step. The resource itself is not changed.
    pub async fn replay(&self, run_id: &str, driver: Option<&str>) -> Result<String> {
        self.drivers_settled().await;
        let original = self
            .store
            .run(run_id)?
            .ok_or_else(|| ServiceError::NotFound(format!("run {run_id} not found")))?;
        // Replay, like retry, is for the dead letters: a failed run. One still going has its
        // own events in flight, which a replay would race.
        if original.status != RunStatus::Failed {
            return Err(ServiceError::Conflict(format!(
                "run {run_id} is {}: only a failed run is replayed",
                original.status.as_str()
            )));
        }
        let payload = self.store.run_payload(run_id)?.ok_or_else(|| {
            ServiceError::Conflict(format!(
                "run {run_id} was stored without its payload (by an older version of the \
                 host), so it cannot be replayed"
            ))
        })?;
        let step = |name: &str, driver: &str| NewStep {
            name: name.to_string(),
            driver: driver.to_string(),
        };
        let (pipeline, steps) = match (driver, &original.pipeline) {
            (Some(d), _) => (None, vec![step(d, d)]),
            (None, Some(p)) => (
                Some(p.clone()),
                original
                    .steps
                    .iter()
                    .map(|s| step(&s.name, &s.driver))
                    .collect(),
            ),
            (None, None) => (
                None,
                self.registry
                    .wanting(&original.resource_type, &original.event)
                    .into_iter()
                    .map(|d| step(&d, &d))
                    .collect(),
            ),
        };
        let new = NewRun {
            run_id: conveyor::new_run_id(),
            resource_type: original.resource_type,
            resource_name: original.resource_name,
            pipeline,
            event: original.event,
            payload,
            steps,
            failure: None,
            origin: None,
            replay_of: Some(run_id.to_string()),
        };
        self.store.write(|tx| pipeline::start_run(tx, &new))?;
        Ok(new.run_id)
    }

    // ---- pipelines ----

    /// `POST /pipelines`: the definition named by `resource` must exist; a duplicate name is
    /// a conflict (upstream silently overwrites).
    pub fn create_pipeline(&self, p: Pipeline) -> Result<Pipeline> {
        self.check_pipeline(&p)?;
        if !self.store.insert_pipeline(&p)? {
            return Err(ServiceError::Conflict(format!(
                "Failed to create pipeline: pipeline with name {} already exists",
                p.name
            )));
        }
        Ok(p)
    }

    /// `GET /pipelines`.
    pub fn pipelines(&self) -> Result<Vec<Pipeline>> {
        Ok(self.store.pipelines()?)
    }

    /// `GET /pipelines/{name}`.
    pub fn pipeline(&self, name: &str) -> Result<Pipeline> {
        self.store
            .pipeline(name)?
            .ok_or_else(|| pipeline_not_found(name))
    }

    /// `PUT /pipelines/{name}`: replaces the pipeline; a body `name` must match the path.
    /// Runs already started keep their steps.
    pub fn replace_pipeline(&self, name: &str, mut p: Pipeline) -> Result<Pipeline> {
        if !p.name.is_empty() && p.name != name {
            return Err(ServiceError::Invalid(
                "Pipeline name in URL and body do not match".into(),
            ));
        }
        p.name = name.to_string();
        self.check_pipeline(&p)?;
        if !self.store.replace_pipeline(&p)? {
            return Err(pipeline_not_found(name));
        }
        Ok(p)
    }

    /// `DELETE /pipelines/{name}`.
    pub fn delete_pipeline(&self, name: &str) -> Result<()> {
        if self.store.delete_pipeline(name)? {
            Ok(())
        } else {
            Err(pipeline_not_found(name))
        }
    }

    fn check_pipeline(&self, p: &Pipeline) -> Result<()> {
        require_name(&p.name, "Pipeline name is required")?;
        if p.name.contains('/') {
            return Err(ServiceError::Invalid(format!(
                "Pipeline name {:?} must not contain '/'",
                p.name
            )));
        }
        if self.store.definition(&p.resource)?.is_none() {
            return Err(ServiceError::NotFound(format!(
                "Failed to find resource definition: {}",
                definition_not_found(&p.resource)
            )));
        }
        for (i, step) in p.steps.iter().enumerate() {
            if step.driver.trim().is_empty() {
                return Err(ServiceError::Invalid(format!(
                    "Pipeline step {} has no driver",
                    i + 1
                )));
            }
        }
        Ok(())
    }
}

fn pipeline_not_found(name: &str) -> ServiceError {
    ServiceError::NotFound(format!("pipeline with name {name} not found"))
}

fn require_name(name: &str, message: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(ServiceError::Invalid(message.to_string()));
    }
    Ok(())
}

/// Upstream stores any schema and fails at the first resource; refusing a schema that does not
/// compile, or that could not be validated safely (see [`schema::check`]), when it is stored
/// points at the real mistake.
fn check_schema(schema: &serde_json::Value) -> Result<()> {
    if schema.is_null() {
        return Ok(());
    }
    schema::check(schema).map_err(|e| ServiceError::Invalid(format!("Invalid schema: {e}")))?;
    jsonschema::validator_for(schema)
        .map(drop)
        .map_err(|e| ServiceError::Invalid(format!("Invalid schema: {e}")))
}

fn definition_not_found(name: &str) -> ServiceError {
    ServiceError::NotFound(definition_missing(name))
}

fn definition_missing(name: &str) -> String {
    format!("resource definition with name {name} not found")
}

fn resource_not_found(kind: &str, name: &str) -> ServiceError {
    ServiceError::NotFound(format!(
        "Failed to find resource: resource with name {name} and type {kind} not found"
    ))
}

impl From<ServiceError> for ClientError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => ClientError::Invalid(m),
            ServiceError::NotFound(m) => ClientError::NotFound(m),
            ServiceError::Conflict(m) => ClientError::Conflict(m),
            ServiceError::Store(e) => ClientError::Unavailable(e.to_string()),
            ServiceError::Unavailable(m) => ClientError::Unavailable(m),
            ServiceError::Denied(m) => ClientError::Denied(m),
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> std::result::Result<T, ClientError> {
    crate::conveyor::decode(json.as_bytes())
        .map_err(|e| ClientError::Invalid(format!("Invalid request payload: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> std::result::Result<String, ClientError> {
    serde_json::to_string(value).map_err(|e| ClientError::Unavailable(e.to_string()))
}

/// The drivers' API client in embedded mode: the same calls as the HTTP API, in process.
#[async_trait::async_trait]
impl ApiClient for Resources {
    async fn get_resource(
        &self,
        kind: &str,
        name: &str,
    ) -> std::result::Result<String, ClientError> {
        encode(&self.resource(kind, name)?)
    }

    async fn create_resource(&self, json: &str) -> std::result::Result<Created, ClientError> {
        client_create(self, json, None).await
    }

    async fn update_resource(
        &self,
        kind: &str,
        name: &str,
        json: &str,
    ) -> std::result::Result<String, ClientError> {
        client_update(self, kind, name, json, None).await
    }

    async fn get_resource_definition(
        &self,
        name: &str,
    ) -> std::result::Result<String, ClientError> {
        encode(&self.definition(name)?)
    }

    fn acting_for(self: Arc<Self>, driver: &str, max_queued: u32) -> Option<Arc<dyn ApiClient>> {
        Some(Arc::new(DriverWrites {
            resources: self,
            origin: Origin {
                driver: driver.to_string(),
                max_queued,
            },
        }))
    }
}

/// The driver whose write through the API client makes a change, and how many events its
/// writes may have queued at once (`queued_writes`).
#[derive(Debug, Clone)]
struct Origin {
    driver: String,
    max_queued: u32,
}

/// Refuses a write when the events of the runs that `origin`'s earlier writes started fill
/// its share of the queue. A driver whose writes feed its own events (a resource of its own
/// type per event, say) would otherwise grow the queue and the store without end.
fn over_queued(tx: &Tx<'_>, origin: Option<&Origin>) -> crate::store::Result<Option<ServiceError>> {
    let Some(o) = origin else {
        return Ok(None);
    };
    let queued = crate::store::queue::queued_by(tx, &o.driver)?;
    Ok((queued >= u64::from(o.max_queued)).then(|| {
        ServiceError::Denied(format!(
            "driver {} has {queued} events queued by its own writes, its limit (queued_writes)",
            o.driver
        ))
    }))
}

/// A client's `create_resource`: the JSON read as upstream reads it, then the control plane.
async fn client_create(
    r: &Resources,
    json: &str,
    origin: Option<&Origin>,
) -> std::result::Result<Created, ClientError> {
    Ok(r.create_resource_as(parse(json)?, origin).await?.into())
}

/// A client's `update_resource`: returns the stored resource as JSON.
async fn client_update(
    r: &Resources,
    kind: &str,
    name: &str,
    json: &str,
    origin: Option<&Origin>,
) -> std::result::Result<String, ClientError> {
    encode(
        &r.update_resource_as(kind, name, parse(json)?, origin)
            .await?
            .value,
    )
}

/// The embedded client acting for one driver: reads as [`Resources`]; its writes carry the
/// driver as their origin and are refused past its `queued_writes`.
struct DriverWrites {
    resources: Arc<Resources>,
    origin: Origin,
}

#[async_trait::async_trait]
impl ApiClient for DriverWrites {
    async fn get_resource(
        &self,
        kind: &str,
        name: &str,
    ) -> std::result::Result<String, ClientError> {
        self.resources.get_resource(kind, name).await
    }

    async fn create_resource(&self, json: &str) -> std::result::Result<Created, ClientError> {
        client_create(&self.resources, json, Some(&self.origin)).await
    }

    async fn update_resource(
        &self,
        kind: &str,
        name: &str,
        json: &str,
    ) -> std::result::Result<String, ClientError> {
        client_update(&self.resources, kind, name, json, Some(&self.origin)).await
    }

    async fn get_resource_definition(
        &self,
        name: &str,
    ) -> std::result::Result<String, ClientError> {
        self.resources.get_resource_definition(name).await
    }
}
