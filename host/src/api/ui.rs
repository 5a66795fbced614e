//! `/ui/`: the dashboard. Three files compiled into the binary (no build step, no CDN, no
//! font from elsewhere: it works offline) and no data in them: the page fetches everything
//! from the JSON API with the user's token, so it shows nothing the API cannot give and is
//! refused what the API refuses. The files themselves need no token (the sign-in form is
//! one of them); see [`super::auth`].

use axum::Router;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

/// Where the dashboard is served (a trailing slash is trimmed before routing).
pub const PATH: &str = "/ui";

/// The paths of the dashboard's files (the only paths under it).
const ASSETS: [&str; 3] = [PATH, "/ui/app.js", "/ui/app.css"];

/// Whether `path` is one of the dashboard's files.
pub fn is_asset(path: &str) -> bool {
    ASSETS.contains(&path)
}

/// What the page may load and talk to: only this origin, no inline script, no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The dashboard's routes (both modes; NATS mode's page shows only the drivers, the one part
/// of the API that mode serves).
pub fn routes() -> Router {
    Router::new()
        .route(
            ASSETS[0],
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            ASSETS[1],
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            ASSETS[2],
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // Small files that change with the binary: revalidated, never stale.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
