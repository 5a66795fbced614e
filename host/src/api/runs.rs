//! `GET /runs/{runid}`: the results stored for a run, one per driver that handled it.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};

use super::{ApiError, AppState};
use crate::store::StoredResult;

pub fn routes() -> Router<AppState> {
    Router::new().route("/runs/{runid}", get(read))
}

#[derive(serde::Serialize)]
struct Run {
    runid: String,
    results: Vec<StoredResult>,
}

async fn read(State(s): State<AppState>, Path(runid): Path<String>) -> Result<Json<Run>, ApiError> {
    let results = s.store.results(&runid)?;
    Ok(Json(Run { runid, results }))
}
