//! Who may call which route. With `[api.auth]` tokens configured, every request but the open
//! ones (`/health`, and `/metrics` unless `api.auth.open_metrics = false`) must carry
//! `Authorization: Bearer <token>` of a role that covers the route:
//!
//! - `read`: `GET` and `HEAD` routes, log streams included;
//! - `write`: also creating, replacing and deleting resources, definitions and pipelines;
//! - `admin`: everything, such as `POST /logs`.
//!
//! Tokens are read when the config is loaded and kept only as SHA-256 digests. A browser's
//! `EventSource` and `WebSocket` cannot send headers, so a token holder may ask
//! `POST /auth/tickets` for a short-lived ticket that log streams accept as `?ticket=`; the
//! long-lived token never goes into a URL that could be logged.
//!
//! Without tokens the API is open, and only to the machine itself: a request whose `Host`
//! header names anything but a loopback address or `localhost` is refused, so a web page
//! cannot reach the API through DNS rebinding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use sha2::{Digest, Sha256};

use super::ApiError;

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
    open_metrics: bool,
    loopback_only: bool,
    tickets: Mutex<HashMap<[u8; 32], (Role, Instant)>>,
}

impl Auth {
    /// Authentication with these tokens. With none, the API is open, to loopback clients only
    /// unless `insecure` (the operator's `api.insecure`) says otherwise.
    pub fn new(tokens: Vec<Token>, open_metrics: bool, insecure: bool) -> Arc<Auth> {
        Arc::new(Auth {
            tokens,
            open_metrics,
            loopback_only: !insecure,
            tickets: Mutex::default(),
        })
    }

    /// Whether any credential is required.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
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
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let (role, expires) = *tickets.get(&digest(ticket))?;
        if Instant::now() >= expires {
            tickets.remove(&digest(ticket));
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

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The role a request needs; `None` for an open route.
fn required(auth: &Auth, method: &Method, path: &str) -> Option<Role> {
    if path.starts_with("/health") || (auth.open_metrics && path.starts_with("/metrics")) {
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
                    "Host {host:?} is not this machine: without [api.auth] the API only serves \
                     requests addressed to localhost or a loopback address"
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
        Ok(Some(token)) => match auth.token_role(token) {
            Some(role) => role,
            None => return unauthorized("invalid token"),
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
pub fn routes(auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/auth/tickets", post(issue))
        .with_state(auth)
}

async fn issue(
    State(auth): State<Arc<Auth>>,
    role: Option<axum::Extension<Authenticated>>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
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
        Json(serde_json::json!({
            "ticket": ticket,
            "role": role,
            "expires_in": TICKET_TTL.as_secs(),
        })),
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
        let closed = Auth::new(Vec::new(), false, false);
        assert_eq!(
            required(&closed, &Method::GET, "/metrics"),
            Some(Role::Read)
        );
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
}
