//! Operator controls (embedded mode, `admin`): cancel a run, drain a driver's queue.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};

use super::runs::RunView;
use super::{ApiError, EmbeddedState as AppState};
use crate::backend::embedded::pipeline;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runs/{runid}/cancel", post(cancel))
        .route("/drivers/{name}/drain", post(drain))
}

/// `POST /runs/{runid}/cancel`: its queued steps are dropped and a reconcile it has running
/// is stopped at once (its result says `cancelled`); the run ends `cancelled`. 409 for a run
/// that is already over.
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
async fn drain(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
    Ok(Json(
        serde_json::json!({ "driver": name, "drained": drained }),
    ))
}
