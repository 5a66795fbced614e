//! `GET /metrics`: Prometheus' text format (see [`crate::metrics`] for the series), in both
//! modes.

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use super::{ApiError, OpsState};
use crate::metrics;

pub fn routes() -> Router<OpsState> {
    Router::new().route("/metrics", get(scrape))
}

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
