//! `/runs`: what became of each change: the run's status, its steps (driver, status,
//! attempts, timings) and their results.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, EmbeddedState as AppState, page};
use crate::conveyor::ErrorBody;
use crate::store::{RunFilter, RunRecord, StoredResult};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(read))
}

/// A run, with every result also listed flat under `results` (the shape before runs had
/// steps, which clients may already read).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct RunView {
    #[serde(flatten)]
    run: RunRecord,
    results: Vec<StoredResult>,
}

impl From<RunRecord> for RunView {
    fn from(run: RunRecord) -> Self {
        let results = run.steps.iter().filter_map(|s| s.result.clone()).collect();
        RunView { run, results }
    }
}

#[utoipa::path(operation_id = "runs_read", get, path = "/runs/{runid}", tag = "runs", params(("runid" = String, Path, description = "The run")),
    responses((status = 200, description = "The run", body = RunView), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn read(
    State(s): State<AppState>,
    Path(runid): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    match s.store.run(&runid)? {
        Some(run) => Ok(Json(run.into())),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("run {runid} not found"),
        )),
    }
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// The resource's name.
    resource: Option<String>,
    /// The resource's type.
    #[serde(rename = "type")]
    kind: Option<String>,
    pipeline: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    /// Only runs older than this run id (the `X-Conveyor-Next-After` of the last page).
    after: Option<String>,
}

/// `GET /runs`: newest first, a page at a time; a full page carries the cursor of the next
/// one in `X-Conveyor-Next-After`.
#[utoipa::path(operation_id = "runs_list", get, path = "/runs", tag = "runs", params(ListQuery),
    responses((status = 200, description = "Runs, newest first", body = Vec<RunView>, headers(("X-Conveyor-Next-After" = String, description = "The cursor of the next page, on a full page"))), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn list(
    State(s): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let status = non_empty(q.status)
        .map(|s| s.parse())
        .transpose()
        .map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let limit = page::ITEMS.limit(q.limit)?;
    let filter = RunFilter {
        resource_type: non_empty(q.kind),
        resource_name: non_empty(q.resource),
        pipeline: non_empty(q.pipeline),
        status,
        limit,
        after: non_empty(q.after),
    };
    let runs: Vec<RunView> = s
        .store
        .runs(&filter)?
        .into_iter()
        .map(RunView::from)
        .collect();
    Ok(page::respond(runs, limit, |r| r.run.runid.clone()))
}
