//! `GET /openapi.json`, the OpenAPI 3.1 document of the routes this host serves, and
//! `GET /swagger/`, Swagger UI reading it.
//!
//! The document is not written by hand: each route module lists its handlers with
//! `utoipa_axum::routes!`, which registers a handler with the router and its `#[utoipa::path]`
//! with the document in one step, so a route cannot be served without being documented (see
//! [`super::app`]). Swagger UI's files are compiled into the binary (`utoipa-swagger-ui`'s
//! `vendored` feature): the page works with no network.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref};
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::conveyor::ErrorBody;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";
/// Where Swagger UI is served (`/swagger` redirects to `/swagger/`).
pub const SWAGGER_PATH: &str = "/swagger";

/// The document's parts that no route adds: its title, the security scheme every route but
/// `/health` needs when `[api.auth]` is configured, and the error body.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "conveyor-host",
        description = "The HTTP API of conveyor-host: Conveyor CI's API (embedded mode) and the \
                       host's own routes. When [api.auth] is configured every route but \
                       /health (and /metrics with open_metrics) needs a bearer token or JWT: \
                       GET needs the read role, writes to resources, definitions and \
                       pipelines write, the rest admin. Every error is {\"error\": \"...\"}."
    ),
    modifiers(&BearerScheme),
    components(schemas(ErrorBody)),
    security(("bearer" = [])),
)]
struct Base;

/// Adds the `bearer` scheme the document's `security` names.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "A token of [api.auth] (`read`, `write` or `admin` role), or a JWT bound to a \
                 certificate (upstream's scheme)",
            ))
            .build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document of the routes every mode serves besides its own: the base and
/// `/openapi.json`, with the router serving the latter (it reads the finished document
/// from an extension, see [`finish`]).
pub fn routes() -> OpenApiRouter {
    OpenApiRouter::with_openapi(Base::openapi()).routes(routes!(document))
}

/// The finished document, as served.
#[derive(Clone)]
struct Document(Arc<serde_json::Value>);

#[utoipa::path(operation_id = "openapi_document", get, path = "/openapi.json", tag = "host",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object),
    (status = "4XX", description = "Refused", body = ErrorBody)))]
async fn document(Extension(Document(doc)): Extension<Document>) -> Response {
    axum::Json(doc.as_ref()).into_response()
}

/// Completes `doc` with the Swagger UI page ([`swagger`], served outside the router whose
/// document this is) and gives `router` the finished document to serve.
pub fn finish(router: Router, mut doc: OpenApi) -> Router {
    let page = OperationBuilder::new()
        .operation_id(Some("openapi_swagger"))
        .tag("host")
        .summary(Some("Swagger UI, reading /openapi.json"))
        .description(Some(
            "Its scripts and styles are served below it, from files compiled into the binary",
        ))
        .response(
            "200",
            ResponseBuilder::new()
                .description("The page")
                .content("text/html", Content::new(None::<Ref>))
                .build(),
        )
        .build();
    doc.paths.paths.insert(
        format!("{SWAGGER_PATH}/"),
        PathItem::new(HttpMethod::Get, page),
    );
    // The document is a tree of plain data: serializing it cannot fail.
    let json = serde_json::to_value(&doc).unwrap_or_default();
    router.layer(Extension(Document(Arc::new(json))))
}

/// Swagger UI at [`SWAGGER_PATH`]`/`, reading [`DOCUMENT_PATH`].
pub fn swagger() -> Router {
    utoipa_swagger_ui::SwaggerUi::new(SWAGGER_PATH)
        .config(utoipa_swagger_ui::Config::from(DOCUMENT_PATH))
        .into()
}
