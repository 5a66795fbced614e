//! `/resources`. Update and delete answer with an `X-Conveyor-Run-Id` header naming the run of
//! the event they sent, so a client can follow its logs; update also names it as `runid` in
//! its body.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::definitions::NamePage;
use super::{ApiError, Body, EmbeddedState as AppState, page};
use crate::conveyor::{CreatedResponse, ErrorBody, Resource};

/// The header carrying the run id of an update or delete.
pub const RUN_ID_HEADER: HeaderName = HeaderName::from_static("x-conveyor-run-id");

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list_without_type))
        .routes(routes!(read, update, remove))
        .routes(routes!(read_version))
        .routes(routes!(list))
}

#[utoipa::path(operation_id = "resources_create", post, path = "/resources", tag = "resources", request_body = Resource,
    responses((status = 201, description = "Created; its run is `runid`", body = CreatedResponse), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn create(
    State(s): State<AppState>,
    Body(res): Body<Resource>,
) -> Result<(StatusCode, Json<CreatedResponse>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.resources.create_resource(res).await?),
    ))
}

#[utoipa::path(operation_id = "resources_list_without_type", get, path = "/resources", tag = "resources",
    responses((status = 400, description = "Upstream answers that a type is required", body = ErrorBody), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn list_without_type() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "Resource type is required")
}

/// `GET /resources/{type}`: the type's resources by name, a page at a time (in upstream's
/// swagger, though its server never registered it).
#[utoipa::path(operation_id = "resources_list", get, path = "/resources/{kind}", tag = "resources", params(("kind" = String, Path, description = "The resource type"), NamePage),
    responses((status = 200, description = "The type's resources by name", body = Vec<Resource>, headers(("X-Conveyor-Next-After" = String, description = "The cursor of the next page, on a full page"))), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn list(
    State(s): State<AppState>,
    Path(kind): Path<String>,
    query: Result<Query<NamePage>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (limit, after) = NamePage::parse(query)?;
    let list = s.resources.resources_of(&kind, limit, &after)?;
    Ok(page::respond(list, limit, |r| r.name.clone()))
}

#[utoipa::path(operation_id = "resources_read", get, path = "/resources/{kind}/{name}", tag = "resources", params(("kind" = String, Path, description = "The resource's type"), ("name" = String, Path, description = "The resource's name")),
    responses((status = 200, description = "The resource", body = Resource), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn read(
    State(s): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<Resource>, ApiError> {
    Ok(Json(s.resources.resource(&kind, &name)?))
}

#[utoipa::path(operation_id = "resources_read_version", get, path = "/resources/{kind}/{name}/{version}", tag = "resources", params(("kind" = String, Path, description = "The resource's type"), ("name" = String, Path, description = "The resource's name"), ("version" = String, Path, description = "A stored version")),
    responses((status = 200, description = "That version of the resource", body = Resource), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn read_version(
    State(s): State<AppState>,
    Path((kind, name, version)): Path<(String, String, String)>,
) -> Result<Json<Resource>, ApiError> {
    Ok(Json(s.resources.resource_version(&kind, &name, &version)?))
}

#[utoipa::path(operation_id = "resources_update", put, path = "/resources/{kind}/{name}", tag = "resources", params(("kind" = String, Path, description = "The resource's type"), ("name" = String, Path, description = "The resource's name")), request_body = Resource,
    responses((status = 200, description = "Updated; the run of its `update` is `runid`", body = Updated, headers(("X-Conveyor-Run-Id" = String, description = "The run of the event sent"))), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn update(
    State(s): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    Body(res): Body<Resource>,
) -> Result<Response, ApiError> {
    let change = s.resources.update_resource(&kind, &name, res).await?;
    let body = Updated {
        resource: change.value,
        runid: change.run_id.clone(),
    };
    Ok((run_header(&change.run_id), Json(body)).into_response())
}

/// The 200 body of `PUT`: the stored resource and the run of its `update` (upstream's PR
/// #268 added `runid` after the snapshot this follows).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Updated {
    #[serde(flatten)]
    resource: Resource,
    runid: String,
}

#[utoipa::path(operation_id = "resources_remove", delete, path = "/resources/{kind}/{name}", tag = "resources", params(("kind" = String, Path, description = "The resource's type"), ("name" = String, Path, description = "The resource's name")),
    responses((status = 204, description = "Deleted", headers(("X-Conveyor-Run-Id" = String, description = "The run of the event sent"))), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn remove(
    State(s): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let change = s.resources.delete_resource(&kind, &name).await?;
    Ok((StatusCode::NO_CONTENT, run_header(&change.run_id)).into_response())
}

pub(super) fn run_header(run_id: &str) -> [(HeaderName, HeaderValue); 1] {
    [(
        RUN_ID_HEADER,
        HeaderValue::from_str(run_id).unwrap_or(HeaderValue::from_static("")),
    )]
}
