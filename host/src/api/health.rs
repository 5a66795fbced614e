//! `GET /health` and `GET /`.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::OpsState;

pub fn routes() -> OpenApiRouter<OpsState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(root))
}

/// `GET /health`'s body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    /// Always `healthy`.
    status: &'static str,
    /// The host's clock, in Unix seconds.
    time: i64,
    drivers: DriverCounts,
}

/// How many drivers are ready, which files are loading, how many failed.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct DriverCounts {
    ready: usize,
    #[schema(value_type = Vec<String>)]
    loading: Vec<std::path::PathBuf>,
    failed: usize,
}

/// Conveyor's health answer (`status`, `time`), plus the drivers: the API serves while large
/// components compile, so `drivers.loading` lists the files not ready yet.
#[utoipa::path(operation_id = "health_health", get, path = "/health", tag = "host", security(()),
    responses((status = 200, description = "The host serves", body = Health)))]
async fn health(State(OpsState { registry, .. }): State<OpsState>) -> Json<Health> {
    let time = time::OffsetDateTime::now_utc().unix_timestamp();
    let loading: Vec<_> = registry.loading().into_iter().map(|l| l.file).collect();
    Json(Health {
        status: "healthy",
        time,
        drivers: DriverCounts {
            ready: registry.all().len(),
            loading,
            failed: registry.failures().len(),
        },
    })
}

/// `GET /`: upstream's banner.
#[utoipa::path(operation_id = "health_root", get, path = "/", tag = "host",
    responses((status = 200, description = "A banner", body = String, content_type = "text/plain")))]
async fn root() -> &'static str {
    "CONVEYOR API SERVER (conveyor-host). See the README for documentation"
}
