//! `/resource-definitions`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, Body, EmbeddedState as AppState, page};
use crate::conveyor::{ErrorBody, ResourceDefinition};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
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

/// A page of a list by name: at most `limit` (1 to 1,000, default 100) names after `after`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct NamePage {
    limit: Option<u32>,
    /// Only names after this one (the `X-Conveyor-Next-After` of the last page).
    after: Option<String>,
}

impl NamePage {
    /// The page asked for: (limit, cursor), or a 400.
    pub(super) fn parse(
        query: Result<Query<NamePage>, QueryRejection>,
    ) -> Result<(u32, String), ApiError> {
        let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        Ok((page::ITEMS.limit(q.limit)?, q.after.unwrap_or_default()))
    }
}

/// `GET /resource-definitions`: the definitions by name, a page at a time (upstream has no
/// list route; the dashboard browses with this one).
#[utoipa::path(operation_id = "definitions_list", get, path = "/resource-definitions", tag = "resource-definitions", params(NamePage),
    responses((status = 200, description = "Definitions by name", body = Vec<ResourceDefinition>, headers(("X-Conveyor-Next-After" = String, description = "The cursor of the next page, on a full page"))), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn list(
    State(s): State<AppState>,
    query: Result<Query<NamePage>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (limit, after) = NamePage::parse(query)?;
    let defs = s.resources.definitions(limit, &after)?;
    Ok(page::respond(defs, limit, |d| d.name.clone()))
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
