//! `/resource-definitions`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, Body, EmbeddedState as AppState};
use crate::conveyor::{ErrorBody, ResourceDefinition};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(apply))
        .routes(routes!(read, replace, remove))
}

#[utoipa::path(operation_id = "definitions_create", post, path = "/resource-definitions", request_body = ResourceDefinition, tag = "resource-definitions", responses((status = 201, description = "Created", body = ResourceDefinition), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn create(
    State(s): State<AppState>,
    Body(def): Body<ResourceDefinition>,
) -> Result<(StatusCode, Json<ResourceDefinition>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.resources.create_definition(def)?),
    ))
}

#[utoipa::path(operation_id = "definitions_apply", post, path = "/resource-definitions/apply", request_body = ResourceDefinition, tag = "resource-definitions", responses((status = 201, description = "Created or updated", body = ResourceDefinition), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn apply(
    State(s): State<AppState>,
    Body(def): Body<ResourceDefinition>,
) -> Result<(StatusCode, Json<ResourceDefinition>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.resources.apply_definition(def)?),
    ))
}

#[utoipa::path(operation_id = "definitions_read", get, path = "/resource-definitions/{name}", params(("name" = String, Path, description = "The definition's name")), tag = "resource-definitions", responses((status = 200, description = "The definition", body = ResourceDefinition), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
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

#[utoipa::path(operation_id = "definitions_replace", put, path = "/resource-definitions/{name}", params(("name" = String, Path, description = "The definition's name")), request_body = ResourceDefinition, tag = "resource-definitions", responses((status = 200, description = "Replaced", body = ResourceDefinition), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn replace(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Body(def): Body<ResourceDefinition>,
) -> Result<Json<ResourceDefinition>, ApiError> {
    Ok(Json(s.resources.replace_definition(&name, def)?))
}

#[utoipa::path(operation_id = "definitions_remove", delete, path = "/resource-definitions/{name}", params(("name" = String, Path, description = "The definition's name")), tag = "resource-definitions", responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn remove(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.resources.delete_definition(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
