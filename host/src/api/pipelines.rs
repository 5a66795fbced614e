//! `/pipelines`: upstream's shapes, with GET, PUT and DELETE routed (upstream leaves them
//! unrouted), 404 and 409 where upstream answers 500.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use super::{ApiError, Body, EmbeddedState as AppState};
use crate::conveyor::Pipeline;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/pipelines", get(list).post(create))
        .route("/pipelines/{name}", get(read).put(replace).delete(remove))
}

async fn create(
    State(s): State<AppState>,
    Body(p): Body<Pipeline>,
) -> Result<(StatusCode, Json<Pipeline>), ApiError> {
    Ok((StatusCode::CREATED, Json(s.resources.create_pipeline(p)?)))
}

async fn list(State(s): State<AppState>) -> Result<Json<Vec<Pipeline>>, ApiError> {
    Ok(Json(s.resources.pipelines()?))
}

async fn read(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Pipeline>, ApiError> {
    Ok(Json(s.resources.pipeline(&name)?))
}

async fn replace(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Body(p): Body<Pipeline>,
) -> Result<Json<Pipeline>, ApiError> {
    Ok(Json(s.resources.replace_pipeline(&name, p)?))
}

async fn remove(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.resources.delete_pipeline(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
