//! `GET /drivers`: the loaded drivers and the files that failed to load.

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::routing::get;
use axum::{Json, Router};

use crate::registry::Registry;

pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Registry>: FromRef<S>,
{
    Router::new().route("/drivers", get(list))
}

async fn list(State(registry): State<Arc<Registry>>) -> Json<Vec<serde_json::Value>> {
    let mut out: Vec<serde_json::Value> = registry
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
        registry
            .failures()
            .into_iter()
            .map(|f| serde_json::json!({ "file": f.file, "state": "failed", "error": f.error })),
    );
    Json(out)
}
