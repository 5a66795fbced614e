//! `GET /health` and `GET /`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::OpsState;

pub fn routes() -> Router<OpsState> {
    Router::new()
        .route("/health", get(health))
        .route("/", get(root))
}

/// Conveyor's health answer (`status`, `time`), plus the drivers: the API serves while large
/// components compile, so `drivers.loading` lists the files not ready yet.
async fn health(State(OpsState { registry, .. }): State<OpsState>) -> Json<serde_json::Value> {
    let time = time::OffsetDateTime::now_utc().unix_timestamp();
    let loading: Vec<_> = registry.loading().into_iter().map(|l| l.file).collect();
    Json(serde_json::json!({
        "status": "healthy",
        "time": time,
        "drivers": {
            "ready": registry.all().len(),
            "loading": loading,
            "failed": registry.failures().len(),
        },
    }))
}

async fn root() -> &'static str {
    "CONVEYOR API SERVER (conveyor-host). See the README for documentation"
}
