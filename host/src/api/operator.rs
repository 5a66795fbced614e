//! Operator controls (embedded mode, `admin`): cancel a run, drain a driver's queue, replay a
//! run, and deliver a failed run's failed steps again (failed runs are the dead letters:
//! `GET /runs?status=failed` lists them).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::runs::RunView;
use super::{ApiError, EmbeddedState as AppState};
use crate::backend::embedded::pipeline;
use crate::conveyor::ErrorBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(cancel))
        .routes(routes!(drain))
        .routes(routes!(replay))
        .routes(routes!(retry))
}

/// `POST /runs/{runid}/replay`'s query.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ReplayQuery {
    /// Only this driver gets the event (a run of one step).
    driver: Option<String>,
}

/// `POST /runs/{runid}/replay`: a new run of the run's first event (its stored event name and
/// payload) on the driver versions loaded now, with `replay_of` naming the original; only for
/// `driver` when given. 201 with the new run, 404 for an unknown run.
#[utoipa::path(operation_id = "operator_replay", post, path = "/runs/{runid}/replay", tag = "operator", params(("runid" = String, Path, description = "The run to replay"), ReplayQuery),
    responses((status = 201, description = "The new run", body = RunView), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn replay(
    State(s): State<AppState>,
    Path(runid): Path<String>,
    query: Result<Query<ReplayQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let driver = q.driver.filter(|d| !d.is_empty());
    let new = s.resources.replay(&runid, driver.as_deref()).await?;
    tracing::info!(%runid, replay = %new, "run replayed");
    let run = s
        .store
        .run(&new)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("run {new} not found")))?;
    Ok((StatusCode::CREATED, Json(run.into())))
}

/// `POST /runs/{runid}/retry`: delivers a failed run's failed steps again, as the next
/// attempt of each in the same run (on the driver version loaded now); the run is `running`
/// again. 200 with the run, 404 for an unknown run, 409 for a run that is not failed.
#[utoipa::path(operation_id = "operator_retry", post, path = "/runs/{runid}/retry", tag = "operator", params(("runid" = String, Path, description = "The failed run")),
    responses((status = 200, description = "The run, running again", body = RunView), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn retry(
    State(s): State<AppState>,
    Path(runid): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let retried = s.store.write(|tx| pipeline::retry_run(tx, &runid))?;
    match retried {
        pipeline::Retried::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("run {runid} not found"),
        )),
        pipeline::Retried::NotFailed(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "run {runid} is {}: only failed runs are delivered again",
                status.as_str()
            ),
        )),
        pipeline::Retried::NoFailedStep => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {runid} failed before any step ran: there is nothing to deliver again"),
        )),
        pipeline::Retried::Queued(steps) => {
            tracing::info!(%runid, ?steps, "failed steps delivered again");
            s.store.run(&runid)?.map(|r| Json(r.into())).ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, format!("run {runid} not found"))
            })
        }
    }
}

/// `POST /drivers/{name}/drain`'s body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Drained {
    /// The driver.
    driver: String,
    /// How many events were removed.
    drained: usize,
}

/// `POST /runs/{runid}/cancel`: its queued steps are dropped and a reconcile it has running
/// is stopped at once (its result says `cancelled`); the run ends `cancelled`. 409 for a run
/// that is already over.
#[utoipa::path(operation_id = "operator_cancel", post, path = "/runs/{runid}/cancel", tag = "operator", params(("runid" = String, Path, description = "The run")),
    responses((status = 200, description = "The cancelled run", body = RunView), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn cancel(
    State(s): State<AppState>,
    Path(runid): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let why = "cancelled by an operator";
    let cancelled = s.store.write(|tx| pipeline::cancel_run(tx, &runid, why))?;
    match cancelled {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("run {runid} not found"),
        )),
        Some(false) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {runid} is already over"),
        )),
        Some(true) => {
            let running = s.cancellations.cancel(&runid);
            tracing::info!(%runid, running, "run cancelled");
            match s.store.run(&runid)? {
                Some(run) => Ok(Json(run.into())),
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("run {runid} not found"),
                )),
            }
        }
    }
}

/// `POST /drivers/{name}/drain`: the driver's events that no reconcile has taken are removed;
/// their steps fail (`drained by an operator`), which ends pipeline runs; reconciles in flight
/// finish. Answers how many events were drained.
#[utoipa::path(operation_id = "operator_drain", post, path = "/drivers/{name}/drain", tag = "operator", params(("name" = String, Path, description = "The driver")),
    responses((status = 200, description = "How many events were drained", body = Drained), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn drain(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Drained>, ApiError> {
    let why = format!("drained by an operator: the events of driver {name} were removed");
    let ids = s.store.waiting_since(&name, i64::MAX)?;
    let mut drained = 0;
    for id in ids {
        let removed =
            s.store.write(
                |tx| match crate::store::queue::row(tx, id)?.filter(|r| !r.claimed) {
                    Some(_) => pipeline::settle(tx, id, pipeline::StepEnd::Rejected(&why)),
                    None => Ok(false),
                },
            )?;
        drained += usize::from(removed);
    }
    tracing::warn!(driver = %name, drained, "driver queue drained");
    Ok(Json(Drained {
        driver: name,
        drained,
    }))
}
