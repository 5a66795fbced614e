//! Who may call which route. With `[api.auth]` tokens configured, every request but the open
//! ones (`/health`, and `/metrics` unless `api.auth.open_metrics = false`) must carry
//! `Authorization: Bearer <token>` of a role that covers the route:
//!
//! - `read`: `GET` and `HEAD` routes, log streams included;
//! - `write`: also creating, replacing and deleting resources, definitions and pipelines;
//! - `admin`: everything, such as `POST /logs`.
//!
//! With `[api.auth.jwt]`, a bearer value shaped like a JWT (three base64url parts) is checked
//! as upstream Conveyor checks its tokens instead: a JWT bound to an X.509 certificate of the
//! configured CA (see [`crate::jwt::verify`]), whose certificate subject maps to a role. Its
//! refusals answer as upstream's: 401 `invalid token`, or `token issued in the future`.
//!
//! Tokens are read when the config is loaded and kept only as SHA-256 digests. A browser's
//! `EventSource` and `WebSocket` cannot send headers, so a token holder may ask
//! `POST /auth/tickets` for a short-lived ticket that log streams accept as `?ticket=`; the
//! long-lived token never goes into a URL that could be logged.
//!
//! Without tokens or `[api.auth.jwt]` the API is open, and only to the machine itself: a
//! request whose `Host` header names anything but a loopback address or `localhost` is
//! refused, so a web page cannot reach the API through DNS rebinding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::conveyor::ErrorBody;
use crate::jwt::{Identity, Verifier};

/// How long a stream ticket is valid.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// The most tickets held at once (expired ones are dropped first).
const MAX_TICKETS: usize = 10_000;

/// What a credential may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `GET` and `HEAD` routes.
    Read,
    /// Also resources, definitions and pipelines.
    Write,
    /// Everything.
    Admin,
}

/// A configured token, as the host keeps it.
#[derive(Clone)]
pub struct Token {
    /// Its name, for the host's log.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// SHA-256 of the token.
    pub digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}, {:?})", self.name, self.role)
    }
}

/// The API's authentication.
pub struct Auth {
    tokens: Vec<Token>,
    jwt: Option<Arc<Verifier>>,
    open_metrics: bool,
    loopback_only: bool,
    tickets: Mutex<HashMap<[u8; 32], (Role, Instant)>>,
}

impl Auth {
    /// Authentication with these tokens and, when given, JWTs checked by `jwt`. With neither,
    /// the API is open, to loopback clients only unless `insecure` (the operator's
    /// `api.insecure`) says otherwise.
    pub fn new(
        tokens: Vec<Token>,
        jwt: Option<Arc<Verifier>>,
        open_metrics: bool,
        insecure: bool,
    ) -> Arc<Auth> {
        Arc::new(Auth {
            tokens,
            jwt,
            open_metrics,
            loopback_only: !insecure,
            tickets: Mutex::default(),
        })
    }

    /// Whether any credential is required.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some()
    }

    /// The role of a bearer value: a JWT when `[api.auth.jwt]` is configured and the value
    /// has a JWT's shape, else a configured token.
    fn bearer_role(&self, bearer: &str) -> Result<Role, Refusal> {
        let Some(jwt) = self
            .jwt
            .as_ref()
            .filter(|_| crate::jwt::looks_like_jwt(bearer))
        else {
            return self
                .token_role(bearer)
                .ok_or(Refusal::Unauthorized("invalid token"));
        };
        match jwt.verify(bearer, SystemTime::now()) {
            Ok(Identity {
                role: Some(role), ..
            }) => Ok(role),
            Ok(Identity {
                common_name,
                role: None,
            }) => {
                tracing::info!(
                    subject = ?common_name,
                    "a valid JWT's certificate has no role: not in api.auth.jwt.subjects, and no default_role"
                );
                Err(Refusal::NoRole(match common_name {
                    Some(cn) => {
                        format!("the certificate's subject CN {cn:?} has no role on this host")
                    }
                    None => "the certificate's subject has no role on this host".to_string(),
                }))
            }
            Err(e) => {
                // Debug: anyone can send tokens, and the log must not be theirs to fill.
                tracing::debug!(error = %e, "JWT refused");
                Err(Refusal::Unauthorized(e.public_message()))
            }
        }
    }

    fn token_role(&self, token: &str) -> Option<Role> {
        let digest = digest(token);
        // Every token is compared, whatever matches, so the time taken says nothing.
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(&t.digest, &digest) {
                found = Some(t.role);
            }
        }
        found
    }

    fn ticket_role(&self, ticket: &str) -> Option<Role> {
        let key = digest(ticket);
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let (role, expires) = *tickets.get(&key)?;
        if Instant::now() >= expires {
            tickets.remove(&key);
            return None;
        }
        Some(role)
    }

    fn issue_ticket(&self, role: Role) -> String {
        let ticket = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        tickets.retain(|_, (_, expires)| *expires > now);
        if tickets.len() >= MAX_TICKETS {
            // Full of live tickets: the oldest goes.
            if let Some(oldest) = tickets.iter().min_by_key(|(_, (_, e))| *e).map(|(k, _)| *k) {
                tickets.remove(&oldest);
            }
        }
        tickets.insert(digest(&ticket), (role, now + TICKET_TTL));
        ticket
    }
}

/// Why a bearer value gets no role.
enum Refusal {
    /// 401 with this message.
    Unauthorized(&'static str),
    /// 403: a valid JWT whose certificate maps to no role.
    NoRole(String),
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A path as the routes see it, so that every form of a route needs the same role: the
/// trailing slash trimmed as the router trims it (see [`super::app`]), and upstream's #93
/// alias `/drivers/streams/logs/…` read as the stream `/logs/streams/…` it serves.
fn canonical(path: &str) -> String {
    let trimmed = if path.ends_with('/') || path.starts_with("//") {
        format!("/{}", path.trim_matches('/'))
    } else {
        path.to_string()
    };
    match trimmed.strip_prefix(super::logs::STREAM_ALIAS) {
        Some(rest) => format!("/logs/streams/{rest}"),
        None => trimmed,
    }
}

/// The role a request needs; `None` for an open route.
fn required(auth: &Auth, method: &Method, path: &str) -> Option<Role> {
    let path = canonical(path);
    let path = path.as_str();
    // The dashboard's files hold no data: the page signs in, then asks the API like any client.
    if super::ui::is_asset(path)
        || path.starts_with("/health")
        || (auth.open_metrics && path.starts_with("/metrics"))
    {
        return None;
    }
    if method == Method::GET || method == Method::HEAD {
        return Some(Role::Read);
    }
    if path == "/auth/tickets" {
        return Some(Role::Read);
    }
    let writable = ["/resources", "/resource-definitions", "/pipelines"];
    if writable
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    {
        return Some(Role::Write);
    }
    Some(Role::Admin)
}

/// Whether a request may use a stream ticket instead of a token.
fn is_stream(path: &str) -> bool {
    let path = canonical(path);
    path.starts_with("/logs/streams/") || path.starts_with("/logs/pipeline/")
}

/// The role a request authenticated as, for handlers that need it.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated(pub Role);

/// The middleware: checks the credentials (or, without tokens, the `Host` header).
pub async fn check(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    if !auth.enabled() {
        if let Some(host) = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            && auth.loopback_only
            && !is_loopback_host(host)
        {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Host {host:?} is not this machine: without [api.auth] tokens or JWTs the \
                     API only serves requests addressed to localhost or a loopback address"
                ),
            )
            .into_response();
        }
        req.extensions_mut().insert(Authenticated(Role::Admin));
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    let Some(needed) = required(&auth, req.method(), &path) else {
        return next.run(req).await;
    };
    let role = match bearer(req.headers()) {
        Ok(Some(token)) => match auth.bearer_role(token) {
            Ok(role) => role,
            Err(Refusal::Unauthorized(message)) => return unauthorized(message),
            Err(Refusal::NoRole(message)) => {
                return ApiError::new(StatusCode::FORBIDDEN, message).into_response();
            }
        },
        Ok(None) => match ticket(req.uri().query()).filter(|_| is_stream(&path)) {
            Some(t) => match auth.ticket_role(t) {
                Some(role) => role,
                None => return unauthorized("invalid or expired ticket"),
            },
            None => return unauthorized("missing Authorization header"),
        },
        Err(()) => return unauthorized("invalid Authorization header format"),
    };
    if role < needed {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} {path} needs the {} role; this credential has {}",
                req.method(),
                role_name(needed),
                role_name(role)
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(Authenticated(role));
    next.run(req).await
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Read => "read",
        Role::Write => "write",
        Role::Admin => "admin",
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// The bearer token of a request: `Ok(None)` without an `Authorization` header, `Err` for one
/// that is not `Bearer <token>` (the scheme word in any case, as upstream).
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(drop)?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(()),
    }
}

fn ticket(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("ticket="))
        .filter(|t| !t.is_empty())
}

/// Whether a `Host` header names this machine: `localhost` (or a name under it), a loopback
/// IPv4 address or `[::1]`, with any port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `POST /auth/tickets`: a ticket for log streams, valid for [`TICKET_TTL`], with the role of
/// the token that asked.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<Arc<Auth>> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(issue))
}

/// `POST /auth/tickets`' 201 body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Ticket {
    /// Pass it as `?ticket=` to a log stream.
    ticket: String,
    /// The role of the token that asked: `read`, `write` or `admin`.
    #[schema(value_type = String)]
    role: Role,
    /// Seconds it stays valid.
    expires_in: u64,
}

#[utoipa::path(operation_id = "auth_issue", post, path = "/auth/tickets", tag = "auth",
    responses((status = 201, description = "A stream ticket, for a browser's EventSource or WebSocket (404 without [api.auth])", body = Ticket), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn issue(
    State(auth): State<Arc<Auth>>,
    role: Option<axum::Extension<Authenticated>>,
) -> Result<(StatusCode, Json<Ticket>), ApiError> {
    if !auth.enabled() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "tickets are only issued when [api.auth] is configured",
        ));
    }
    let Some(axum::Extension(Authenticated(role))) = role else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing Authorization header",
        ));
    };
    let ticket = auth.issue_ticket(role);
    Ok((
        StatusCode::CREATED,
        Json(Ticket {
            ticket,
            role,
            expires_in: TICKET_TTL.as_secs(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Arc<Auth> {
        Auth::new(
            vec![
                Token {
                    name: "r".into(),
                    role: Role::Read,
                    digest: digest("read-token-0123456789"),
                },
                Token {
                    name: "w".into(),
                    role: Role::Write,
                    digest: digest("write-token-0123456789"),
                },
            ],
            None,
            true,
            false,
        )
    }

    #[test]
    fn routes_need_their_role() {
        let a = auth();
        assert_eq!(required(&a, &Method::GET, "/health"), None);
        assert_eq!(required(&a, &Method::GET, "/metrics"), None);
        assert_eq!(
            required(&a, &Method::GET, "/resources/t/n"),
            Some(Role::Read)
        );
        assert_eq!(required(&a, &Method::POST, "/resources"), Some(Role::Write));
        assert_eq!(
            required(&a, &Method::DELETE, "/pipelines/p"),
            Some(Role::Write)
        );
        assert_eq!(required(&a, &Method::POST, "/logs"), Some(Role::Admin));
        assert_eq!(
            required(&a, &Method::POST, "/resourcesx"),
            Some(Role::Admin)
        );
        let closed = Auth::new(Vec::new(), None, false, false);
        assert_eq!(
            required(&closed, &Method::GET, "/metrics"),
            Some(Role::Read)
        );
    }

    /// The OpenAPI document and Swagger UI (its page and its assets) are read like any `GET`,
    /// including `/swagger` (which redirects) and the document with a trailing slash.
    #[test]
    fn the_document_and_swagger_ui_need_read() {
        let a = auth();
        for path in [
            "/openapi.json",
            "/openapi.json/",
            "/swagger",
            "/swagger/",
            "/swagger/swagger-ui-bundle.js",
        ] {
            assert_eq!(required(&a, &Method::GET, path), Some(Role::Read), "{path}");
            assert_eq!(
                required(&a, &Method::HEAD, path),
                Some(Role::Read),
                "{path}"
            );
        }
    }

    #[test]
    fn every_form_of_a_route_needs_the_same_role() {
        let a = auth();
        let methods = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
        ];
        let paths = [
            "/",
            "/health",
            "/metrics",
            "/resources",
            "/resources/t/n",
            "/resource-definitions/apply",
            "/pipelines/p",
            "/logs",
            "/logs/streams/d/r",
            "/runs/r/cancel",
            "/drivers/broadcast-message",
            "/auth/tickets",
            "/openapi.json",
        ];
        for path in paths {
            for method in &methods {
                let want = required(&a, method, path);
                for form in [format!("{path}/"), format!("{path}//"), format!("/{path}")] {
                    assert_eq!(required(&a, method, &form), want, "{method} {form}");
                }
            }
        }
        // Upstream's #93 alias is the stream it serves, ticket included.
        for method in &methods {
            assert_eq!(
                required(&a, method, "/drivers/streams/logs/d/r"),
                required(&a, method, "/logs/streams/d/r"),
            );
        }
        assert!(is_stream("/drivers/streams/logs/d/r"));
        assert!(is_stream("/logs/pipeline/r/"));
        assert!(!is_stream("/drivers/broadcast-message"));
        assert_eq!(
            required(&a, &Method::POST, "/drivers/broadcast-message/"),
            Some(Role::Admin)
        );
    }

    #[test]
    fn replaying_and_redelivering_a_run_need_admin() {
        // Both run drivers, with their secrets, on a stored spec: as much as cancelling.
        let a = auth();
        for path in ["/runs/r/replay", "/runs/r/retry", "/runs/r/cancel"] {
            assert_eq!(
                required(&a, &Method::POST, path),
                Some(Role::Admin),
                "{path}"
            );
            assert_eq!(required(&a, &Method::GET, path), Some(Role::Read), "{path}");
        }
    }

    #[test]
    fn tokens_and_tickets_map_to_roles() {
        let a = auth();
        assert_eq!(a.token_role("write-token-0123456789"), Some(Role::Write));
        assert_eq!(a.token_role("nope"), None);
        let t = a.issue_ticket(Role::Read);
        assert_eq!(a.ticket_role(&t), Some(Role::Read));
        assert_eq!(a.ticket_role("forged"), None);
    }

    #[test]
    fn bearer_header_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Ok(None));
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Ok(Some("abc")));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), Err(()));
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:80",
            "a.localhost",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:8080",
            "10.0.0.1",
            "localhost.evil.com",
            "[::2]",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    mod jwt {
        use std::collections::BTreeMap;
        use std::time::Duration;

        use axum::body::Body;
        use tower::ServiceExt;

        use super::*;
        use crate::jwt::testing::{self, Ca};
        use crate::jwt::{Signer, Verifier};
        use axum::Router;
        use axum::routing::post;

        fn jwt_auth(ca: &Ca, default_role: Option<Role>) -> Arc<Auth> {
            let verifier = Verifier::new(
                std::slice::from_ref(&ca.der),
                BTreeMap::from([("ci-bot".to_string(), Role::Write)]),
                default_role,
            )
            .unwrap();
            Auth::new(
                vec![Token {
                    name: "w".into(),
                    role: Role::Read,
                    digest: digest("read-token-0123456789"),
                }],
                Some(Arc::new(verifier)),
                true,
                false,
            )
        }

        fn signer(ca: &Ca, cn: &str) -> Signer {
            let leaf = ca.leaf(cn, &testing::both(), None);
            Signer::new(leaf.chain, &leaf.key).unwrap()
        }

        /// A `POST /resources` through the middleware, as `Host: ci.example.com`.
        async fn call(auth: Arc<Auth>, bearer: &str) -> (StatusCode, String) {
            let app = Router::new()
                .route("/resources", post(|| async { "created" }))
                .layer(axum::middleware::from_fn_with_state(auth, check));
            let request = Request::post("/resources")
                .header(header::HOST, "ci.example.com")
                .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
                .body(Body::empty())
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }

        #[tokio::test]
        async fn jwts_authenticate_with_their_subjects_role() {
            let ca = Ca::new("Test CA");
            let auth = jwt_auth(&ca, None);
            assert!(Auth::new(Vec::new(), auth.jwt.clone(), true, false).enabled());
            let token = signer(&ca, "ci-bot").token(SystemTime::now()).unwrap();
            // A non-loopback Host is served: authentication is configured.
            assert_eq!(
                call(auth.clone(), &token).await,
                (StatusCode::OK, "created".to_string())
            );
            // Static tokens still work beside JWTs, with their own role.
            let (status, _) = call(auth.clone(), "read-token-0123456789").await;
            assert_eq!(status, StatusCode::FORBIDDEN);
        }

        #[tokio::test]
        async fn refused_jwts_answer_as_upstream() {
            let ca = Ca::new("Test CA");
            let auth = jwt_auth(&ca, None);
            let unauthorized =
                |m: &str| (StatusCode::UNAUTHORIZED, format!("{{\"error\":\"{m}\"}}"));
            let stranger = signer(&Ca::new("Other CA"), "ci-bot");
            let token = stranger.token(SystemTime::now()).unwrap();
            assert_eq!(
                call(auth.clone(), &token).await,
                unauthorized("invalid token")
            );
            let ours = signer(&ca, "ci-bot");
            let future = SystemTime::now() + Duration::from_secs(3600);
            assert_eq!(
                call(auth.clone(), &ours.token(future).unwrap()).await,
                unauthorized("token issued in the future")
            );
            let old = SystemTime::now() - Duration::from_secs(3600);
            assert_eq!(
                call(auth.clone(), &ours.token(old).unwrap()).await,
                unauthorized("invalid token")
            );
            assert_eq!(
                call(auth.clone(), "not.a.jwt").await,
                unauthorized("invalid token")
            );
            // A valid token whose subject has no role: 403, unless there is a default.
            let nobody = signer(&ca, "nobody").token(SystemTime::now()).unwrap();
            let (status, body) = call(auth, &nobody).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            assert!(body.contains("nobody"), "{body}");
            let (status, _) = call(jwt_auth(&ca, Some(Role::Read)), &nobody).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            let (status, _) = call(jwt_auth(&ca, Some(Role::Admin)), &nobody).await;
            assert_eq!(status, StatusCode::OK);
        }

        /// NATS mode's REST client signs tokens this middleware accepts, over real HTTP.
        #[tokio::test]
        async fn the_rest_clients_tokens_are_accepted() {
            use crate::backend::conveyor::rest_client::RestClient;
            use crate::wasm::ApiClient;
            use crate::wasm::bindings::ClientError;

            let ca = Ca::new("Test CA");
            let app = Router::new()
                .route(
                    "/resource-definitions/{name}",
                    axum::routing::get(|| async { r#"{"name":"test"}"# }),
                )
                .layer(axum::middleware::from_fn_with_state(
                    jwt_auth(&ca, None),
                    check,
                ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let server = tokio::spawn(async move { axum::serve(listener, app).await });

            for key in [Some(testing::RSA_PK8), Some(testing::P384_PK8), None] {
                let leaf = ca.leaf("ci-bot", &testing::both(), key);
                let signer = Signer::new(leaf.chain, &leaf.key).unwrap();
                let client = RestClient::new(&url, Some(Arc::new(signer))).unwrap();
                let body = client.get_resource_definition("test").await.unwrap();
                assert_eq!(body, r#"{"name":"test"}"#);
            }
            let unsigned = RestClient::new(&url, None).unwrap();
            let e = unsigned.get_resource_definition("test").await.unwrap_err();
            assert!(
                matches!(&e, ClientError::Denied(m) if m.contains("missing Authorization")),
                "{e:?}"
            );
            let stranger = signer(&Ca::new("Other CA"), "ci-bot");
            let client = RestClient::new(&url, Some(Arc::new(stranger))).unwrap();
            let e = client.get_resource_definition("test").await.unwrap_err();
            assert!(
                matches!(&e, ClientError::Denied(m) if m.contains("invalid token")),
                "{e:?}"
            );
            server.abort();
        }
    }
}
