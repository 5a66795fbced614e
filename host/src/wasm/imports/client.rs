//! The `client` import: the Conveyor API client, answered by whatever [`ApiClient`] the
//! backend provides (the embedded control plane, or the Conveyor server's REST API).
//!
//! What a driver writes through it (a resource to create, a resource's new state, the type
//! and name it names) is masked with the driver's redactor before the backend sees it, as
//! its log lines and result are: a resource is stored, sent to other drivers and served by
//! the API, so a secret in it would leave the sandbox in clear. When something was masked,
//! the host says so in the run's log (`source=host`).

use std::sync::Arc;

use crate::wasm::bindings::conveyor::driver::client::{ClientError, Created, Host};
use crate::wasm::imports::log::RunLogger;
use crate::wasm::redact::Redactor;

/// How many client calls of one run get a note that secrets were masked in them; the last
/// note says that later ones are not noted. Host lines are outside the driver's log budget,
/// so a driver calling in a loop must not be able to flood the log through them.
const MASK_NOTES: u32 = 10;

/// The `client` capability of one run: the API client it may call, the driver's redactor
/// for what it writes, and the run's logger for the host's notes.
#[derive(Clone)]
pub struct ClientCtx {
    client: Arc<dyn ApiClient>,
    redactor: Redactor,
    logger: RunLogger,
    notes: u32,
}

impl ClientCtx {
    /// A run's client capability: calls go to `client`, what the driver writes is masked
    /// with `redactor` (the driver's), and `logger` (the run's) gets the host's notes.
    pub fn new(client: Arc<dyn ApiClient>, redactor: Redactor, logger: RunLogger) -> Self {
        ClientCtx {
            client,
            redactor,
            logger,
            notes: 0,
        }
    }

    /// Masks a resource's JSON as a JSON value, so that a secret written with escapes
    /// (`\u0068unter2`) or as a number is masked too; text that is not JSON is masked as
    /// text (the backend refuses it anyway). `true` when something was masked.
    fn mask_json(&self, json: &mut String) -> bool {
        if self.redactor.is_empty() {
            return false;
        }
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(json) else {
            return self.redactor.string(json);
        };
        if !self.redactor.json(&mut value) {
            return false;
        }
        match serde_json::to_string(&value) {
            Ok(masked) => *json = masked,
            // A parsed value always serialises; should it not, the text is masked as text.
            Err(_) => {
                self.redactor.string(json);
            }
        }
        true
    }

    /// Notes in the run's log that secrets were masked in what the driver wrote.
    fn note_masked(&mut self, call: &str) {
        if self.notes >= MASK_NOTES {
            return;
        }
        self.notes += 1;
        let more = if self.notes == MASK_NOTES {
            "; this is the last such note of this run"
        } else {
            ""
        };
        self.logger.host_line(format!(
            "the host masked secrets in what the driver wrote through {call}: the backend got \
             {} in their place{more}",
            crate::wasm::redact::MASK
        ));
    }
}

/// The API a driver can call. Implementations must apply the same validation and emit the
/// same events as the HTTP API.
#[async_trait::async_trait]
pub trait ApiClient: Send + Sync {
    /// A resource's current state, as JSON.
    async fn get_resource(&self, kind: &str, name: &str) -> Result<String, ClientError>;
    /// Creates a resource from JSON.
    async fn create_resource(&self, json: &str) -> Result<Created, ClientError>;
    /// Replaces a resource's state from JSON; returns the stored resource.
    async fn update_resource(
        &self,
        kind: &str,
        name: &str,
        json: &str,
    ) -> Result<String, ClientError>;
    /// A resource definition, as JSON.
    async fn get_resource_definition(&self, name: &str) -> Result<String, ClientError>;

    /// This client acting for one driver, for a backend that accounts for each driver's
    /// writes: the embedded one refuses a write once the events that driver's earlier writes
    /// queued reach `max_queued`. `None`: this client serves every driver alike.
    fn acting_for(self: Arc<Self>, driver: &str, max_queued: u32) -> Option<Arc<dyn ApiClient>> {
        let _ = (driver, max_queued);
        None
    }
}

impl From<crate::conveyor::CreatedResponse> for Created {
    fn from(c: crate::conveyor::CreatedResponse) -> Self {
        Created {
            name: c.name,
            run_id: c.runid,
            version: c.version,
        }
    }
}

/// The client given to a guest when none is available, for example during `info()`.
pub struct NoClient(pub &'static str);

#[async_trait::async_trait]
impl ApiClient for NoClient {
    async fn get_resource(&self, _: &str, _: &str) -> Result<String, ClientError> {
        Err(ClientError::Denied(self.0.to_string()))
    }
    async fn create_resource(&self, _: &str) -> Result<Created, ClientError> {
        Err(ClientError::Denied(self.0.to_string()))
    }
    async fn update_resource(&self, _: &str, _: &str, _: &str) -> Result<String, ClientError> {
        Err(ClientError::Denied(self.0.to_string()))
    }
    async fn get_resource_definition(&self, _: &str) -> Result<String, ClientError> {
        Err(ClientError::Denied(self.0.to_string()))
    }
}

impl Host for ClientCtx {
    async fn get_resource(
        &mut self,
        resource_type: String,
        name: String,
    ) -> wasmtime::Result<Result<String, ClientError>> {
        Ok(self.client.get_resource(&resource_type, &name).await)
    }

    async fn create_resource(
        &mut self,
        mut json: String,
    ) -> wasmtime::Result<Result<Created, ClientError>> {
        if self.mask_json(&mut json) {
            self.note_masked("create_resource");
        }
        Ok(self.client.create_resource(&json).await)
    }

    async fn update_resource(
        &mut self,
        mut resource_type: String,
        mut name: String,
        mut json: String,
    ) -> wasmtime::Result<Result<String, ClientError>> {
        let masked = self.redactor.string(&mut resource_type)
            | self.redactor.string(&mut name)
            | self.mask_json(&mut json);
        if masked {
            self.note_masked(&format!("update_resource ({resource_type}/{name})"));
        }
        Ok(self
            .client
            .update_resource(&resource_type, &name, &json)
            .await)
    }

    async fn get_resource_definition(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<String, ClientError>> {
        Ok(self.client.get_resource_definition(&name).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::imports::log::Collect;

    /// Keeps what the backend was asked to write.
    #[derive(Default)]
    struct Recording(std::sync::Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl ApiClient for Recording {
        async fn get_resource(&self, kind: &str, name: &str) -> Result<String, ClientError> {
            Ok(format!("{kind}/{name}"))
        }
        async fn create_resource(&self, json: &str) -> Result<Created, ClientError> {
            self.0.lock().unwrap().push(json.to_string());
            Ok(Created {
                name: "n".into(),
                run_id: "r".into(),
                version: "1".into(),
            })
        }
        async fn update_resource(
            &self,
            kind: &str,
            name: &str,
            json: &str,
        ) -> Result<String, ClientError> {
            self.0.lock().unwrap().push(format!("{kind} {name} {json}"));
            Ok(json.to_string())
        }
        async fn get_resource_definition(&self, name: &str) -> Result<String, ClientError> {
            Ok(name.to_string())
        }
    }

    fn ctx(secrets: &[&str]) -> (ClientCtx, Arc<Recording>, Arc<Collect>) {
        let backend = Arc::new(Recording::default());
        let sink = Arc::new(Collect::default());
        let redactor = Redactor::new(secrets.iter().map(|s| s.to_string()));
        let logger = RunLogger::new(sink.clone(), "d", "R", None).with_redactor(redactor.clone());
        (
            ClientCtx::new(backend.clone(), redactor, logger),
            backend,
            sink,
        )
    }

    fn host_lines(sink: &Collect) -> Vec<String> {
        let lines = sink.0.lock().unwrap();
        assert!(lines.iter().all(|l| l.labels["source"] == "host"));
        lines.iter().map(|l| l.message.clone()).collect()
    }

    #[tokio::test]
    async fn calls_reach_the_backend_client() {
        let (mut ctx, _, _) = ctx(&[]);
        ctx.client = Arc::new(NoClient("not here"));
        let answer = ctx.get_resource("pipe".into(), "p1".into()).await.unwrap();
        assert!(matches!(answer, Err(ClientError::Denied(m)) if m == "not here"));
    }

    #[tokio::test]
    async fn what_a_driver_writes_is_masked_and_the_host_says_so() {
        let (mut ctx, backend, sink) = ctx(&["hunter2", "31337"]);
        // In a value, in a key, written with a JSON escape, and as a number.
        let json = r#"{"name":"a","resource":"t","spec":{"pw":"x hunter2","hunter2":1,"esc":"\u0068unter2","port":31337}}"#;
        ctx.create_resource(json.into()).await.unwrap().unwrap();
        let sent: serde_json::Value = serde_json::from_str(&backend.0.lock().unwrap()[0]).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"name": "a", "resource": "t",
                "spec": {"pw": "x ***", "***": 1, "esc": "***", "port": "***"}})
        );
        let notes = host_lines(&sink);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("masked secrets"), "{notes:?}");
        assert!(notes[0].contains("create_resource"), "{notes:?}");

        ctx.update_resource("t".into(), "hunter2".into(), r#"{"spec":{}}"#.into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(backend.0.lock().unwrap()[1], r#"t *** {"spec":{}}"#);
        let notes = host_lines(&sink);
        assert!(notes[1].contains("update_resource (t/***)"), "{notes:?}");
        assert!(!notes.concat().contains("hunter2"));
    }

    #[tokio::test]
    async fn clean_writes_pass_unchanged_and_unnoted() {
        let (mut ctx, backend, sink) = ctx(&["hunter2"]);
        let json = r#"{ "name": "a",  "spec": {"n": 1} }"#;
        ctx.create_resource(json.into()).await.unwrap().unwrap();
        ctx.update_resource("t".into(), "a".into(), "not json".into())
            .await
            .unwrap()
            .unwrap();
        ctx.update_resource("t".into(), "a".into(), "not json hunter2".into())
            .await
            .unwrap()
            .unwrap();
        let sent = backend.0.lock().unwrap().clone();
        assert_eq!(sent, [json, "t a not json", "t a not json ***"]);
        assert_eq!(host_lines(&sink).len(), 1);
    }

    #[tokio::test]
    async fn the_notes_are_bounded() {
        let (mut ctx, _, sink) = ctx(&["hunter2"]);
        for _ in 0..MASK_NOTES + 5 {
            ctx.create_resource(r#"{"pw":"hunter2"}"#.into())
                .await
                .unwrap()
                .unwrap();
        }
        let notes = host_lines(&sink);
        assert_eq!(notes.len(), MASK_NOTES as usize);
        assert!(
            notes.last().unwrap().contains("last such note"),
            "{notes:?}"
        );
    }
}
