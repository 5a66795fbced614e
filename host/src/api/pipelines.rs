//! `/pipelines`: upstream's shapes, with GET, PUT and DELETE routed (upstream leaves them
//! unrouted), 404 and 409 where upstream answers 500.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, Body, EmbeddedState as AppState};
use crate::conveyor::{ErrorBody, Pipeline};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, replace, remove))
}

#[utoipa::path(operation_id = "pipelines_create", post, path = "/pipelines", tag = "pipelines", request_body = Pipeline,
    responses((status = 201, description = "Created", body = Pipeline), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn create(
    State(s): State<AppState>,
    Body(p): Body<Pipeline>,
) -> Result<(StatusCode, Json<Pipeline>), ApiError> {
    Ok((StatusCode::CREATED, Json(s.resources.create_pipeline(p)?)))
}

#[utoipa::path(operation_id = "pipelines_list", get, path = "/pipelines", tag = "pipelines",
    responses((status = 200, description = "Every pipeline", body = Vec<Pipeline>), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn list(State(s): State<AppState>) -> Result<Json<Vec<Pipeline>>, ApiError> {
    Ok(Json(s.resources.pipelines()?))
}

#[utoipa::path(operation_id = "pipelines_read", get, path = "/pipelines/{name}", tag = "pipelines", params(("name" = String, Path, description = "The pipeline's name")),
    responses((status = 200, description = "The pipeline", body = Pipeline), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn read(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Pipeline>, ApiError> {
    Ok(Json(s.resources.pipeline(&name)?))
}

#[utoipa::path(operation_id = "pipelines_replace", put, path = "/pipelines/{name}", tag = "pipelines", params(("name" = String, Path, description = "The pipeline's name")), request_body = Pipeline,
    responses((status = 200, description = "Replaced", body = Pipeline), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn replace(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Body(p): Body<Pipeline>,
) -> Result<Json<Pipeline>, ApiError> {
    Ok(Json(s.resources.replace_pipeline(&name, p)?))
}

#[utoipa::path(operation_id = "pipelines_remove", delete, path = "/pipelines/{name}", tag = "pipelines", params(("name" = String, Path, description = "The pipeline's name")),
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn remove(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.resources.delete_pipeline(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
