//! `GET /metrics`: Prometheus' text format (see [`crate::metrics`] for the series), in both
//! modes.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, OpsState};
use crate::conveyor::ErrorBody;
use crate::metrics;

pub fn routes() -> OpenApiRouter<OpsState> {
    OpenApiRouter::new().routes(routes!(scrape))
}

/// Open without credentials when `api.auth.open_metrics` is set.
#[utoipa::path(operation_id = "metrics_scrape", get, path = "/metrics", tag = "host",
    responses((status = 200, description = "Prometheus' text format", body = String, content_type = "text/plain; version=0.0.4"), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn scrape(State(s): State<OpsState>) -> Result<impl IntoResponse, ApiError> {
    let drivers: Vec<String> = s
        .registry
        .all()
        .iter()
        .map(|d| d.info.name.clone())
        .collect();
    let text = s.metrics.render(s.gauges.as_deref(), &drivers)?;
    Ok(([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text))
}
