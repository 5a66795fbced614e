//! The API client one run gets: the backend's client within the run's [`ClientBudget`]. A
//! driver that loops over its client (creating resources, say) is refused with a `denied`
//! client error once past its budget, and the run's log says so once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::ClientBudget;
use crate::wasm::bindings::{ClientError, Created};
use crate::wasm::{ApiClient, RunLogger};

/// The backend's client, counted for one run.
pub struct RunClient {
    inner: Arc<dyn ApiClient>,
    budget: ClientBudget,
    calls: AtomicU32,
    creates: AtomicU32,
    noted: AtomicBool,
    logger: RunLogger,
}

impl RunClient {
    /// `inner` within `budget`, noting a breach in `logger`'s run.
    pub fn new(inner: Arc<dyn ApiClient>, budget: ClientBudget, logger: RunLogger) -> Arc<Self> {
        Arc::new(RunClient {
            inner,
            budget,
            calls: AtomicU32::new(0),
            creates: AtomicU32::new(0),
            noted: AtomicBool::new(false),
            logger,
        })
    }

    fn call(&self) -> Result<(), ClientError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if n > self.budget.calls {
            return Err(self.refuse(format!(
                "the run made more than its {} client calls (client_calls)",
                self.budget.calls
            )));
        }
        Ok(())
    }

    fn create(&self) -> Result<(), ClientError> {
        self.call()?;
        let n = self
            .creates
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n > self.budget.creates {
            return Err(self.refuse(format!(
                "the run created more than its {} resources (creates_per_run)",
                self.budget.creates
            )));
        }
        Ok(())
    }

    fn refuse(&self, why: String) -> ClientError {
        if !self.noted.swap(true, Ordering::Relaxed) {
            self.logger
                .host_line(format!("denied: {why}; further client calls are refused"));
        }
        ClientError::Denied(why)
    }
}

#[async_trait::async_trait]
impl ApiClient for RunClient {
    async fn get_resource(&self, kind: &str, name: &str) -> Result<String, ClientError> {
        self.call()?;
        self.inner.get_resource(kind, name).await
    }

    async fn create_resource(&self, json: &str) -> Result<Created, ClientError> {
        self.create()?;
        self.inner.create_resource(json).await
    }

    async fn update_resource(
        &self,
        kind: &str,
        name: &str,
        json: &str,
    ) -> Result<String, ClientError> {
        self.call()?;
        self.inner.update_resource(kind, name, json).await
    }

    async fn get_resource_definition(&self, name: &str) -> Result<String, ClientError> {
        self.call()?;
        self.inner.get_resource_definition(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::imports::client::NoClient;
    use crate::wasm::imports::log::Collect;

    #[tokio::test]
    async fn calls_past_the_budget_are_denied_and_noted_once() {
        let sink = Arc::new(Collect::default());
        let logger = RunLogger::new(sink.clone(), "d", "R", None);
        let client = RunClient::new(
            Arc::new(NoClient("backend")),
            ClientBudget {
                calls: 3,
                creates: 1,
                queued_writes: 10,
            },
            logger,
        );
        // Within the budget the backend answers (here: its own refusal).
        assert!(
            matches!(client.get_resource("t", "n").await, Err(ClientError::Denied(m)) if m == "backend")
        );
        assert!(
            matches!(client.create_resource("{}").await, Err(ClientError::Denied(m)) if m == "backend")
        );
        let over = client.create_resource("{}").await;
        assert!(matches!(over, Err(ClientError::Denied(m)) if m.contains("creates_per_run")));
        let over = client.get_resource("t", "n").await;
        assert!(matches!(over, Err(ClientError::Denied(m)) if m.contains("client_calls")));
        let lines = sink.0.lock().unwrap();
        assert_eq!(lines.len(), 1, "one note per run");
        assert!(
            lines[0].message.starts_with("denied: "),
            "{}",
            lines[0].message
        );
    }
}
