//! `GET /drivers`: the loaded drivers and the files that failed to load.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/drivers", get(list))
}

async fn list(State(s): State<AppState>) -> Json<Vec<serde_json::Value>> {
    let mut out: Vec<serde_json::Value> = s
        .registry
        .all()
        .iter()
        .map(|d| {
            serde_json::json!({
                "name": d.info.name,
                "resources": d.info.resources,
                "events": d.info.events,
                "file": d.file,
                "sha256": d.sha256,
                "state": "ready",
                "loaded_at": d.loaded_at,
                "loaded_from": d.provenance,
                "load_ms": d.load_time.as_secs_f64() * 1e3,
            })
        })
        .collect();
    out.extend(
        s.registry
            .failures()
            .into_iter()
            .map(|f| serde_json::json!({ "file": f.file, "state": "failed", "error": f.error })),
    );
    Json(out)
}
