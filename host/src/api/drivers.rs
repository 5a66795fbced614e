//! `GET /drivers`: the loaded drivers (with their run counters), the files being loaded and
//! the files that failed to load. Loaded and failed files carry `loads`: how many times the
//! host read the file, which an idle host does not do.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::OpsState;
use crate::conveyor::ErrorBody;

pub fn routes() -> OpenApiRouter<OpsState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// `GET /drivers`: one entry per file, whose `state` is `ready`, `loading` or `failed`.
#[utoipa::path(operation_id = "drivers_list", get, path = "/drivers", tag = "host",
    responses((status = 200, description = "The driver files and their state", body = Vec<serde_json::Value>), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn list(
    State(OpsState {
        registry, metrics, ..
    }): State<OpsState>,
) -> Json<Vec<serde_json::Value>> {
    let failures = registry.failures();
    let mut out: Vec<serde_json::Value> = registry
        .all()
        .iter()
        .map(|d| {
            let mut entry = serde_json::json!({
                "name": d.info.name,
                "resources": d.info.resources,
                "events": d.info.events,
                "file": d.file,
                "sha256": d.sha256,
                "state": "ready",
                "loaded_at": d.loaded_at,
                "loaded_from": d.provenance,
                "load_ms": d.load_time.as_secs_f64() * 1e3,
                "runs": metrics.runs(&d.info.name),
                "loads": registry.loads(&d.file),
            });
            // A replacement that failed to load: the version above keeps serving.
            if let Some(f) = failures.iter().find(|f| f.file == d.file) {
                entry["reload_error"] = f.error.clone().into();
                entry["reload_failed_at"] = f.at.clone().into();
            }
            entry
        })
        .collect();
    let serving: Vec<_> = registry.all().iter().map(|d| d.file.clone()).collect();
    let loading = registry.loading();
    out.extend(
        failures
            .into_iter()
            // A failed file being tried again shows once, as loading.
            .filter(|f| !serving.contains(&f.file) && !loading.iter().any(|l| l.file == f.file))
            .map(|f| {
                serde_json::json!({
                    "loads": registry.loads(&f.file),
                    "file": f.file,
                    "state": "failed",
                    "error": f.error,
                    "failed_at": f.at,
                })
            }),
    );
    out.extend(
        loading
            .into_iter()
            .filter(|l| !serving.contains(&l.file))
            .map(|l| {
                serde_json::json!({
                    "file": l.file,
                    "state": "loading",
                    "since": l.since,
                })
            }),
    );
    Json(out)
}
