//! The drivers' API client in NATS mode: Conveyor's REST routes on `[conveyor] api_url`,
//! called with `Content-Type: application/json` (which upstream's Fiber requires) and, with a
//! client certificate configured, `Authorization: Bearer <JWT>`: a fresh token bound to the
//! certificate for every request, as upstream's Go runtime sends (see [`crate::jwt::sign`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use crate::jwt::Signer;
use crate::wasm::ApiClient;
use crate::wasm::bindings::{ClientError, Created};

/// A client for a Conveyor server's REST API.
pub struct RestClient {
    http: reqwest::Client,
    base: reqwest::Url,
    signer: Option<Arc<Signer>>,
}

impl RestClient {
    /// A client for `api_url` (for example `http://localhost:8080`), whose requests carry
    /// JWTs from `signer` when given.
    pub fn new(api_url: &str, signer: Option<Arc<Signer>>) -> anyhow::Result<RestClient> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("conveyor-host/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = reqwest::Url::parse(api_url)
            .map_err(|e| anyhow::anyhow!("conveyor.api_url {api_url:?} is not a URL: {e}"))?;
        if base.cannot_be_a_base() {
            anyhow::bail!("conveyor.api_url {api_url:?} cannot have paths appended");
        }
        Ok(RestClient { http, base, signer })
    }

    /// The URL of a route. Each segment is percent-encoded, so a name a driver passes (with
    /// `/`, `?` or `#` in it) can never reach another route.
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<String, ClientError> {
        let mut request = request.header("Content-Type", "application/json");
        if let Some(signer) = &self.signer {
            let token = signer.token(SystemTime::now()).map_err(|e| {
                ClientError::Unavailable(format!(
                    "cannot sign the Conveyor API token: {}",
                    crate::error_chain(&e)
                ))
            })?;
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            ClientError::Unavailable(format!("the Conveyor API cannot be reached: {e}"))
        })?;
        let status = response.status();
        let body = response.text().await.map_err(|e| {
            ClientError::Unavailable(format!("the Conveyor API's answer was cut: {e}"))
        })?;
        if status.is_success() {
            return Ok(body);
        }
        Err(error_for(status, &body))
    }
}

/// Maps an error answer to a client error. Upstream answers 500 for a missing or duplicate
/// object, so its message decides those cases.
fn error_for(status: StatusCode, body: &str) -> ClientError {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    let message = format!("{message} (HTTP {})", status.as_u16());
    match status {
        StatusCode::NOT_FOUND => ClientError::NotFound(message),
        StatusCode::CONFLICT => ClientError::Conflict(message),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ClientError::Denied(message),
        s if s.is_client_error() => ClientError::Invalid(message),
        _ if message.contains("not found") => ClientError::NotFound(message),
        _ if message.contains("already exists") => ClientError::Conflict(message),
        _ => ClientError::Unavailable(message),
    }
}

#[async_trait::async_trait]
impl ApiClient for RestClient {
    async fn get_resource(&self, kind: &str, name: &str) -> Result<String, ClientError> {
        self.call(self.http.get(self.url(&["resources", kind, name])))
            .await
    }

    async fn create_resource(&self, json: &str) -> Result<Created, ClientError> {
        let body = self
            .call(
                self.http
                    .post(self.url(&["resources", ""]))
                    .body(json.to_string()),
            )
            .await?;
        let created: crate::conveyor::CreatedResponse = serde_json::from_str(&body)
            .map_err(|e| ClientError::Unavailable(format!("unexpected create answer: {e}")))?;
        Ok(created.into())
    }

    async fn update_resource(
        &self,
        kind: &str,
        name: &str,
        json: &str,
    ) -> Result<String, ClientError> {
        self.call(
            self.http
                .put(self.url(&["resources", kind, name]))
                .body(json.to_string()),
        )
        .await
    }

    async fn get_resource_definition(&self, name: &str) -> Result<String, ClientError> {
        self.call(self.http.get(self.url(&["resource-definitions", name])))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_their_route() {
        let c = RestClient::new("http://h:8080/api/", None).unwrap();
        assert_eq!(
            c.url(&["resources", "pipe", "a/b?x#y"]).as_str(),
            "http://h:8080/api/resources/pipe/a%2Fb%3Fx%23y"
        );
        assert_eq!(
            c.url(&["resources", ""]).as_str(),
            "http://h:8080/api/resources/"
        );
        assert!(RestClient::new("not a url", None).is_err());
    }

    #[test]
    fn upstream_500s_map_by_message() {
        let e = error_for(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"Failed to find resource: resource with name x and type t not found"}"#,
        );
        assert!(matches!(e, ClientError::NotFound(_)));
        let e = error_for(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"... already exists"}"#,
        );
        assert!(matches!(e, ClientError::Conflict(_)));
        let e = error_for(
            StatusCode::BAD_REQUEST,
            r#"{"error":"Resource validation failed: x"}"#,
        );
        assert!(matches!(e, ClientError::Invalid(m) if m.contains("validation")));
        assert!(matches!(
            error_for(StatusCode::BAD_GATEWAY, "oops"),
            ClientError::Unavailable(_)
        ));
    }
}
