//! `GET /health` and `GET /`.

use axum::routing::get;
use axum::{Json, Router};

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/health", get(health))
        .route("/", get(root))
}

async fn health() -> Json<serde_json::Value> {
    let time = time::OffsetDateTime::now_utc().unix_timestamp();
    Json(serde_json::json!({ "status": "healthy", "time": time }))
}

async fn root() -> &'static str {
    "CONVEYOR API SERVER (conveyor-host). See the README for documentation"
}
