//! The store a fixture's driver reads from and writes to: the host's own control plane
//! ([`Resources`], the embedded backend's), over an in-memory SQLite store, behind the same
//! [`ApiClient`] seam the host's `client` import uses. Definitions, resources and what the
//! driver writes are validated by the code that validates them in the host, so a fixture
//! cannot pass on a write the host would refuse.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::fixture::Fixture;
use crate::backend::embedded::control::{Resources, ServiceError};
use crate::conveyor::{Resource, ResourceDefinition};
use crate::registry::Registry;
use crate::store::Store;
use crate::wasm::ApiClient;
use crate::wasm::Sandbox;
use crate::wasm::bindings::{ClientError, Created};
use crate::wasm::cache::ComponentCache;
use crate::wasm::imports::log::TracingSink;

/// The schema of the definition added for the event's resource type when the fixture gives
/// none: any spec (a resource without one included), so the event's resource can be stored
/// and read back.
const ANY_SPEC: &str = "{}";

/// A fixture's store and the control plane over it.
pub struct FixtureStore {
    resources: Arc<Resources>,
}

/// Why the fixture's store could not be set up: a definition or resource the host would
/// refuse.
#[derive(Debug, thiserror::Error)]
pub enum StoreSetupError {
    /// The in-memory store did not open.
    #[error("cannot open an in-memory store: {0}")]
    Open(#[from] crate::store::StoreError),
    /// An entry is not what the host accepts.
    #[error("{what}: {why}")]
    Refused {
        /// Which entry.
        what: String,
        /// The host's answer.
        why: String,
    },
}

impl FixtureStore {
    /// A store holding the fixture's definitions and resources, and the event's resource;
    /// returns it and the event's payload (the fixture's resource, with the id and version
    /// the store gave it where the fixture has none).
    pub async fn load(
        fixture: &Fixture,
        sandbox: Arc<Sandbox>,
    ) -> Result<(FixtureStore, String), StoreSetupError> {
        let store = Arc::new(Store::open(std::path::Path::new(":memory:"))?);
        // No driver is loaded: the runs that the fixture's changes (and the driver's writes)
        // start have no step, and nothing but this one reconcile ever runs.
        let cache = ComponentCache::new(sandbox.engine(), &std::env::temp_dir()).map_err(|e| {
            StoreSetupError::Refused {
                what: "the compile cache".into(),
                why: e.to_string(),
            }
        })?;
        let registry = Arc::new(Registry::without_drivers(
            sandbox,
            cache,
            Arc::new(TracingSink),
        ));
        let resources = Arc::new(Resources::new(store, registry, Duration::ZERO));
        let refused = |what: String| {
            move |e: ServiceError| StoreSetupError::Refused {
                what,
                why: e.to_string(),
            }
        };
        let event: Resource = decode("resource", &fixture.resource)?;
        let mut defined_event_type = false;
        for (i, d) in fixture.definitions.iter().enumerate() {
            let what = format!("definition {}", i + 1);
            let def: ResourceDefinition = decode(&what, d)?;
            defined_event_type |= def.name == event.resource;
            resources.create_definition(def).map_err(refused(what))?;
        }
        if !defined_event_type {
            let schema: Value = serde_json::from_str(ANY_SPEC).unwrap_or_default();
            let def: ResourceDefinition = decode(
                "the event's resource type",
                &serde_json::json!({"name": event.resource, "schema": schema}),
            )?;
            resources
                .create_definition(def)
                .map_err(refused("the event's resource type".into()))?;
        }
        for (i, r) in fixture.resources.iter().enumerate() {
            let what = format!("resources[{}]", i + 1);
            let res: Resource = decode(&what, r)?;
            resources
                .create_resource(res)
                .await
                .map_err(refused(what))?;
        }
        resources
            .create_resource(event.clone())
            .await
            .map_err(refused("resource".into()))?;
        let stored = resources
            .resource(&event.resource, &event.name)
            .map_err(refused("resource".into()))?;
        let mut payload = event;
        if payload.id.is_empty() {
            payload.id = stored.id.clone();
        }
        if !payload.metadata.contains_key("version") {
            payload
                .metadata
                .insert("version".into(), stored.version().to_string());
        }
        let payload = serde_json::to_string(&payload).map_err(|e| StoreSetupError::Refused {
            what: "resource".into(),
            why: e.to_string(),
        })?;
        Ok((FixtureStore { resources }, payload))
    }

    /// The client for `driver`'s run, as the host's: the control plane acting for the driver
    /// (its writes held to `queued_writes`), recording what it wrote.
    pub fn client(&self, driver: &str, queued_writes: u32) -> Arc<Recording> {
        let inner = self
            .resources
            .clone()
            .acting_for(driver, queued_writes)
            .unwrap_or_else(|| self.resources.clone());
        Arc::new(Recording {
            inner,
            written: Mutex::default(),
        })
    }

    /// A resource as stored now.
    pub fn resource(&self, kind: &str, name: &str) -> Option<Resource> {
        self.resources.resource(kind, name).ok()
    }
}

/// A fixture's JSON entry as the host's API reads a request body.
fn decode<T: serde::de::DeserializeOwned>(what: &str, v: &Value) -> Result<T, StoreSetupError> {
    crate::conveyor::decode(v.to_string().as_bytes()).map_err(|e| StoreSetupError::Refused {
        what: what.to_string(),
        why: e.to_string(),
    })
}

/// A client that records the resources its writes reached, by (type, name), in order.
pub struct Recording {
    inner: Arc<dyn ApiClient>,
    written: Mutex<Vec<(String, String)>>,
}

impl Recording {
    /// The resources written through this client, each once, in the order first written.
    pub fn written(&self) -> Vec<(String, String)> {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn note(&self, kind: &str, name: &str) {
        let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if !w.iter().any(|(k, n)| k == kind && n == name) {
            w.push((kind.to_string(), name.to_string()));
        }
    }
}

#[async_trait::async_trait]
impl ApiClient for Recording {
    async fn get_resource(&self, kind: &str, name: &str) -> Result<String, ClientError> {
        self.inner.get_resource(kind, name).await
    }

    async fn create_resource(&self, json: &str) -> Result<Created, ClientError> {
        let created = self.inner.create_resource(json).await?;
        // The control plane accepted it, so it is JSON with a type.
        let kind = serde_json::from_str::<Value>(json)
            .ok()
            .and_then(|v| {
                v.get("resource")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default();
        self.note(&kind, &created.name);
        Ok(created)
    }

    async fn update_resource(
        &self,
        kind: &str,
        name: &str,
        json: &str,
    ) -> Result<String, ClientError> {
        let updated = self.inner.update_resource(kind, name, json).await?;
        self.note(kind, name);
        Ok(updated)
    }

    async fn get_resource_definition(&self, name: &str) -> Result<String, ClientError> {
        self.inner.get_resource_definition(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::author::fixture::Fixture;

    fn sandbox() -> Arc<Sandbox> {
        let engine = crate::wasm::engine::build(&crate::wasm::engine::EngineSettings {
            pool_instances: 1,
            max_memory: 16 << 20,
        })
        .unwrap();
        Arc::new(Sandbox::new(engine).unwrap())
    }

    fn fixture(text: &str) -> Fixture {
        Fixture::parse(text, std::path::Path::new("/nowhere/f.toml")).unwrap()
    }

    #[tokio::test]
    async fn the_client_reads_and_writes_the_fixtures_store_with_the_hosts_validation() {
        let f = fixture(
            r#"
resource = { resource = "t", name = "a", spec = { n = 1 } }
[[definitions]]
name = "t"
schema = { type = "object", properties = { n = { type = "integer", maximum = 5 } } }
[[resources]]
resource = "t"
name = "other"
spec = { n = 2 }
"#,
        );
        let (store, payload) = FixtureStore::load(&f, sandbox()).await.unwrap();
        let sent: Resource = serde_json::from_str(&payload).unwrap();
        assert_eq!(sent.version(), 1, "the stored copy's version");
        assert!(!sent.id.is_empty());
        let client = store.client("d", 10);
        let other = client.get_resource("t", "other").await.unwrap();
        assert!(other.contains("\"n\":2"), "{other}");
        let refused = client
            .create_resource(r#"{"resource":"t","name":"big","spec":{"n":9}}"#)
            .await;
        assert!(
            matches!(&refused, Err(ClientError::Invalid(m)) if m.contains("Resource validation failed")),
            "{refused:?}"
        );
        client
            .update_resource("t", "other", r#"{"spec":{"n":3}}"#)
            .await
            .unwrap();
        assert_eq!(client.written(), [("t".to_string(), "other".to_string())]);
        assert_eq!(store.resource("t", "other").unwrap().version(), 2);
    }

    #[tokio::test]
    async fn a_resource_the_host_would_refuse_is_named() {
        let f = fixture(
            "resource = { resource = \"t\", name = \"a\", spec = { n = \"x\" } }\n\
             [[definitions]]\nname = \"t\"\n\
             schema = { type = \"object\", properties = { n = { type = \"integer\" } } }\n",
        );
        let e = FixtureStore::load(&f, sandbox()).await.err().unwrap();
        assert!(
            e.to_string()
                .starts_with("resource: Resource validation failed"),
            "{e}"
        );
    }
}
