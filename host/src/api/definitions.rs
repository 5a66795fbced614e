//! `/resource-definitions`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{ApiError, Body, EmbeddedState as AppState};
use crate::conveyor::ResourceDefinition;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/resource-definitions", post(create))
        .route("/resource-definitions/apply", post(apply))
        .route(
            "/resource-definitions/{name}",
            get(read).put(replace).delete(remove),
        )
}

async fn create(
    State(s): State<AppState>,
    Body(def): Body<ResourceDefinition>,
) -> Result<(StatusCode, Json<ResourceDefinition>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.resources.create_definition(def)?),
    ))
}

async fn apply(
    State(s): State<AppState>,
    Body(def): Body<ResourceDefinition>,
) -> Result<(StatusCode, Json<ResourceDefinition>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.resources.apply_definition(def)?),
    ))
}

async fn read(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ResourceDefinition>, ApiError> {
    Ok(Json(s.resources.definition(&name).map_err(
        |e| match e {
            crate::backend::embedded::control::ServiceError::NotFound(m) => {
                crate::backend::embedded::control::ServiceError::NotFound(format!(
                    "Failed to find resource definition: {m}"
                ))
            }
            other => other,
        },
    )?))
}

async fn replace(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Body(def): Body<ResourceDefinition>,
) -> Result<Json<ResourceDefinition>, ApiError> {
    Ok(Json(s.resources.replace_definition(&name, def)?))
}

async fn remove(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.resources.delete_definition(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
