//! The `client` import: the Conveyor API client, answered by whatever [`ApiClient`] the
//! backend provides (the embedded control plane, or the Conveyor server's REST API).

use std::sync::Arc;

use crate::wasm::bindings::conveyor::driver::client::{ClientError, Created, Host};

/// The `client` capability of one run: the API client it may call.
#[derive(Clone)]
pub struct ClientCtx {
    client: Arc<dyn ApiClient>,
}

impl ClientCtx {
    /// A run's client capability.
    pub fn new(client: Arc<dyn ApiClient>) -> Self {
        ClientCtx { client }
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
        json: String,
    ) -> wasmtime::Result<Result<Created, ClientError>> {
        Ok(self.client.create_resource(&json).await)
    }

    async fn update_resource(
        &mut self,
        resource_type: String,
        name: String,
        json: String,
    ) -> wasmtime::Result<Result<String, ClientError>> {
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

    #[tokio::test]
    async fn calls_reach_the_backend_client() {
        let mut ctx = ClientCtx::new(Arc::new(NoClient("not here")));
        let answer = ctx.get_resource("pipe".into(), "p1".into()).await.unwrap();
        assert!(matches!(answer, Err(ClientError::Denied(m)) if m == "not here"));
    }
}
