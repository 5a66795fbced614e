//! `GET /metrics`: Prometheus' text format (see `crate::metrics` for the series).

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use super::{ApiError, AppState};
use crate::metrics::{self, METRICS};

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let drivers: Vec<String> = s
        .registry
        .all()
        .iter()
        .map(|d| d.info.name.clone())
        .collect();
    let text = METRICS.render(&s.store, &drivers)?;
    Ok(([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text))
}
