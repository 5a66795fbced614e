//! The HTTP API: the routes both modes serve ([`health`], [`drivers`], [`metrics`]), and the
//! Conveyor-compatible API of embedded mode, one module per resource.
//!
//! Every error is `{"error": "..."}` with a 4xx or 5xx status; unknown routes get a 404 in the
//! same shape.

mod auth;
mod definitions;
mod drivers;
mod health;
mod logs;
mod metrics;
mod operator;
mod pipelines;
mod resources;
mod runs;
mod serve;
mod tls;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

pub use auth::{Auth, Role, Token};
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

/// The embedded mode's Conveyor-compatible routes.
pub fn embedded_routes(state: EmbeddedState) -> Router {
    Router::new()
        .merge(definitions::routes())
        .merge(resources::routes())
        .merge(logs::routes())
        .merge(runs::routes())
        .merge(pipelines::routes())
        .merge(operator::routes())
        .with_state(state)
}

/// The whole API: the routes both modes serve, the backend's own, and a JSON 404 for the rest,
/// behind [`auth`]; request bodies over `max_body` bytes are refused with 413.
pub fn app(ops: OpsState, backend: Router, auth: Arc<Auth>, max_body: usize) -> Router {
    Router::new()
        .merge(metrics::routes())
        .merge(drivers::routes())
        .merge(health::routes())
        .with_state(ops)
        .merge(backend)
        .merge(auth::routes(auth.clone()))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(auth, auth::check))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
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

/// A JSON body whose rejections (no JSON content type, malformed JSON, wrong field types)
/// become 400 `{"error": "Invalid request payload: ..."}`, as upstream answers.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large"),
            ),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Invalid request payload: {}", describe(&rejection)),
            )),
        }
    }
}

fn describe(rejection: &JsonRejection) -> String {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a Content-Type of application/json".to_string()
        }
        other => other.body_text(),
    }
}
