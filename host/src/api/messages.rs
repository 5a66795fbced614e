//! `POST /drivers/broadcast-message` (`admin`): a DriverMessage delivered to every loaded
//! driver that wants its event, as a run (see
//! [`Resources::broadcast`](crate::backend::embedded::control::Resources::broadcast)).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::resources::run_header;
use super::{ApiError, Body, EmbeddedState as AppState};
use crate::conveyor::DriverMessage;

pub fn routes() -> Router<AppState> {
    Router::new().route("/drivers/broadcast-message", post(broadcast))
}

/// The 200 body, upstream's.
#[derive(serde::Serialize)]
pub(super) struct Published {
    message: &'static str,
}

/// 200 `{"message":"message published"}` with the run in `X-Conveyor-Run-Id`; 400
/// `could not parse request body` (upstream's words) for a body that is not a DriverMessage.
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
