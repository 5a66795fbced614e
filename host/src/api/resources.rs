//! `/resources`. Update and delete answer with an `X-Conveyor-Run-Id` header naming the run of
//! the event they sent, so a client can follow its logs; update also names it as `runid` in
//! its body.

use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{ApiError, Body, EmbeddedState as AppState};
use crate::conveyor::{CreatedResponse, Resource};

/// The header carrying the run id of an update or delete.
pub const RUN_ID_HEADER: HeaderName = HeaderName::from_static("x-conveyor-run-id");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/resources", post(create).get(list_without_type))
        .route(
            "/resources/{kind}/{name}",
            get(read).put(update).delete(remove),
        )
        .route("/resources/{kind}/{name}/{version}", get(read_version))
}

async fn create(
    State(s): State<AppState>,
    Body(res): Body<Resource>,
) -> Result<(StatusCode, Json<CreatedResponse>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.resources.create_resource(res).await?),
    ))
}

async fn list_without_type() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "Resource type is required")
}

async fn read(
    State(s): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<Resource>, ApiError> {
    Ok(Json(s.resources.resource(&kind, &name)?))
}

async fn read_version(
    State(s): State<AppState>,
    Path((kind, name, version)): Path<(String, String, String)>,
) -> Result<Json<Resource>, ApiError> {
    Ok(Json(s.resources.resource_version(&kind, &name, &version)?))
}

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
#[derive(serde::Serialize)]
pub(super) struct Updated {
    #[serde(flatten)]
    resource: Resource,
    runid: String,
}

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
