//! `POST /drivers/broadcast-message` (`admin`): a DriverMessage delivered to every loaded
//! driver that wants its event, as a run (see
//! [`Resources::broadcast`](crate::backend::embedded::control::Resources::broadcast)).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::resources::run_header;
use super::{ApiError, Body, EmbeddedState as AppState};
use crate::conveyor::{DriverMessage, ErrorBody};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(broadcast))
}

/// The 200 body, upstream's.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Published {
    message: &'static str,
}

/// 200 `{"message":"message published"}` with the run in `X-Conveyor-Run-Id`; 400
/// `could not parse request body` (upstream's words) for a body that is not a DriverMessage.
#[utoipa::path(operation_id = "messages_broadcast", post, path = "/drivers/broadcast-message", tag = "drivers", request_body = DriverMessage,
    responses((status = 200, description = "Published", body = Published, headers(("X-Conveyor-Run-Id" = String, description = "The run of the broadcast"))), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn broadcast(
    State(s): State<AppState>,
    body: Result<Body<DriverMessage>, ApiError>,
) -> Result<Response, ApiError> {
    let Body(message) = body.map_err(|e| {
        if e.status == StatusCode::BAD_REQUEST {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                e.message
                    .replacen("Invalid request payload", "could not parse request body", 1),
            )
        } else {
            e
        }
    })?;
    let run_id = s.resources.broadcast(message).await?;
    tracing::info!(%run_id, "message broadcast");
    Ok((
        run_header(&run_id),
        Json(Published {
            message: "message published",
        }),
    )
        .into_response())
}
