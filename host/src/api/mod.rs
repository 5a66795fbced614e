//! The HTTP API: the routes both modes serve ([`health`], [`drivers`], [`metrics`]), and the
//! Conveyor-compatible API of embedded mode, one module per resource.
//!
//! Every error is `{"error": "..."}` with a 4xx or 5xx status; unknown routes get a 404 in the
//! same shape.

mod auth;
pub mod cors;
mod definitions;
mod drivers;
mod health;
mod logs;
mod messages;
mod metrics;
mod openapi;
mod operator;
mod page;
mod pipelines;
mod resources;
mod runs;
mod serve;
mod tls;
mod ui;

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tower::Layer;
use utoipa_axum::router::OpenApiRouter;

pub use auth::{Auth, Role, Token};
pub use cors::CorsOrigins;
pub use logs::StreamSlots;
pub use serve::{Limits as ServeLimits, serve};
pub use tls::acceptor as tls_acceptor;

use crate::backend::embedded::control::{Resources, ServiceError};
use crate::backend::embedded::logs::LogHub;
use crate::conveyor::ErrorBody;
use crate::metrics::{Gauges, Metrics};
use crate::registry::Registry;
use crate::store::Store;

/// What the routes of both modes read: the drivers and the host's metrics.
#[derive(Clone)]
pub struct OpsState {
    /// Loaded drivers.
    pub registry: Arc<Registry>,
    /// The host's metrics (and the drivers' run counters).
    pub metrics: Arc<Metrics>,
    /// The backend's gauges, where it keeps them.
    pub gauges: Option<Arc<dyn Gauges>>,
}

/// What the embedded API's handlers share.
#[derive(Clone)]
pub struct EmbeddedState {
    /// Definitions, pipelines and resources.
    pub resources: Arc<Resources>,
    /// The store, for runs and results.
    pub store: Arc<Store>,
    /// Log lines, stored and live.
    pub logs: Arc<LogHub>,
    /// The reconciles in flight, to cancel runs.
    pub cancellations: Arc<crate::manager::Cancellations>,
    /// Open log streams.
    pub streams: Arc<logs::StreamSlots>,
}

/// The embedded mode's Conveyor-compatible routes, each with its part of the OpenAPI
/// document: the one list both [`embedded_routes`] and [`embedded_openapi`] are built from.
fn embedded_api() -> OpenApiRouter<EmbeddedState> {
    OpenApiRouter::new()
        .merge(definitions::routes())
        .merge(resources::routes())
        .merge(logs::routes())
        .merge(runs::routes())
        .merge(pipelines::routes())
        .merge(operator::routes())
        .merge(messages::routes())
}

/// The embedded mode's Conveyor-compatible routes.
pub fn embedded_routes(state: EmbeddedState) -> Router {
    embedded_api().split_for_parts().0.with_state(state)
}

/// The OpenAPI document of [`embedded_routes`], to pass to [`app`] with them.
pub fn embedded_openapi() -> utoipa::openapi::OpenApi {
    embedded_api().split_for_parts().1
}

/// The whole API: the routes both modes serve, the backend's own (`backend`, documented by
/// `backend_doc`: [`embedded_openapi`], or an empty document for a backend serving none), the
/// OpenAPI document of all of them at [`DOCUMENT_PATH`] with Swagger UI at [`SWAGGER_PATH`],
/// and a JSON 404 for the rest, behind [`auth`]; request bodies over `max_body` bytes are
/// refused with 413.
///
/// Routing is upstream's (Fiber, not strict): a trailing slash is trimmed from every path
/// before the routes see it, so `/resources/` is `/resources` without a route of its own;
/// every `GET` route answers `HEAD` (axum's `get` does). CORS ([`cors`]) is outermost, so a
/// preflight is answered before authentication.
pub fn app(
    ops: OpsState,
    backend: Router,
    backend_doc: utoipa::openapi::OpenApi,
    auth: Arc<Auth>,
    max_body: usize,
    origins: &CorsOrigins,
) -> Router {
    let ops_routes = OpenApiRouter::new()
        .merge(metrics::routes())
        .merge(drivers::routes())
        .merge(health::routes())
        .with_state(ops);
    let (routes, mut doc) = openapi::routes()
        .merge(ops_routes)
        .merge(auth::routes().with_state(auth.clone()))
        .split_for_parts();
    doc.merge(backend_doc);
    let routes = openapi::finish(routes.merge(backend), doc)
        .merge(ui::routes())
        .fallback(not_found);
    // The normalization must run before routing, which a layer on a Router does not: it
    // wraps the whole router, served as the fallback of an outer one.
    let normalized =
        tower_http::normalize_path::NormalizePathLayer::trim_trailing_slash().layer(routes);
    // Swagger UI is outside the normalization: it redirects `/swagger` to `/swagger/`, which
    // trimming would turn back into `/swagger`, in a loop.
    Router::new()
        .merge(openapi::swagger())
        .fallback_service(normalized)
        .layer(axum::middleware::from_fn_with_state(auth, auth::check))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(cors::layer(origins))
        .layer(axum::middleware::from_fn(cors::preflight_no_content))
}

async fn not_found(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Cannot {method} {}", uri.path()),
    )
}

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with a status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.message, "request failed");
        }
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status = match &e {
            ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Conflict(_) => StatusCode::CONFLICT,
            ServiceError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::Denied(_) => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<crate::metrics::GaugesError> for ApiError {
    fn from(e: crate::metrics::GaugesError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, crate::error_chain(&e))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// A JSON body decoded as upstream's Go server decodes it ([`crate::conveyor::decode`]: field
/// names in any case, `null` as the empty value). Its rejections (no JSON content type,
/// malformed JSON, wrong field types) become 400 `{"error": "Invalid request payload: ..."}`,
/// as upstream answers; a body over `api.max_body` gets 413.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !is_json(content_type) {
            return Err(invalid_payload(
                "expected a Content-Type ending in json, such as application/json",
            ));
        }
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Request body is too large",
                ));
            }
            Err(rejection) => return Err(invalid_payload(&rejection.body_text())),
        };
        crate::conveyor::decode(&bytes)
            .map(Body)
            .map_err(|e| invalid_payload(&e.to_string()))
    }
}

fn invalid_payload(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("Invalid request payload: {why}"),
    )
}

/// Whether a `Content-Type` is JSON as upstream's framework (Fiber) takes it: a media type
/// ending in `json` (`application/json`, `text/json`, `application/vnd.x+json`). Parameters
/// are not part of the type: `text/plain; x=json` is text, and a browser sends it cross-origin
/// without asking (a CORS "simple" request), so it must not pass for JSON.
pub(crate) fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.contains('/') && essence.to_ascii_lowercase().ends_with("json")
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types_are_those_ending_in_json() {
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "text/json",
            "Application/JSON",
            "application/vnd.conveyor+json",
        ] {
            assert!(is_json(yes), "{yes}");
        }
        for no in [
            "",
            "text/plain",
            "text/plain; x=json",
            "json",
            "application/jsonx",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }
}
