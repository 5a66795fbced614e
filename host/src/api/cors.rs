//! Cross-origin requests (CORS), answered as upstream's server answers them (Fiber's `cors`
//! middleware with its defaults): `Access-Control-Allow-Origin: *`, the methods
//! `GET,POST,HEAD,PUT,DELETE,PATCH`, the request's headers reflected, and a preflight
//! `OPTIONS` answered with 204 before authentication (a browser's preflight carries no
//! credentials).
//!
//! The origins come from `api.cors_origins`. Left unset, any origin may call an API that
//! needs credentials, as upstream; an open API (no `[api.auth]`) allows none, because every
//! web page the operator visits could otherwise drive the host through the operator's
//! browser: the `Host` check that keeps out DNS rebinding does not stop a page that calls
//! `http://localhost:8080` by its own name.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// Which web origins may call the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any (`Access-Control-Allow-Origin: *`).
    Any,
    /// These origins only; none when empty.
    Listed(Vec<HeaderValue>),
}

impl CorsOrigins {
    /// The origins of `api.cors_origins` (checked by [`check_origins`]), or the default: any
    /// when the API needs credentials, none when it is open.
    pub fn from_config(origins: Option<&[String]>, auth_configured: bool) -> CorsOrigins {
        match origins {
            None if auth_configured => CorsOrigins::Any,
            None => CorsOrigins::Listed(Vec::new()),
            Some(list) if list.iter().any(|o| o == "*") => CorsOrigins::Any,
            Some(list) => CorsOrigins::Listed(
                list.iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect(),
            ),
        }
    }
}

/// Why an `api.cors_origins` entry is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginError {
    /// `*` must stand alone.
    #[error("\"*\" allows every origin and cannot be combined with others")]
    WildcardWithOthers,
    /// Not `scheme://host[:port]`.
    #[error(
        "{0:?} is not an origin: write scheme://host or scheme://host:port (http or https), \
         with no path, no trailing '/', and no query"
    )]
    Malformed(String),
}

/// Checks `api.cors_origins`: `["*"]`, or origins as browsers send them in `Origin`.
pub fn check_origins(origins: &[String]) -> Result<(), OriginError> {
    if origins.len() > 1 && origins.iter().any(|o| o == "*") {
        return Err(OriginError::WildcardWithOthers);
    }
    for o in origins.iter().filter(|o| *o != "*") {
        if !is_origin(o) {
            return Err(OriginError::Malformed(o.clone()));
        }
    }
    Ok(())
}

/// Whether `s` is an origin: `http` or `https`, `://`, a host (a name, an IPv4 address or a
/// bracketed IPv6 address) and an optional port, nothing else.
fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    if !(scheme == "http" || scheme == "https") || rest.is_empty() {
        return false;
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, tail)) if addr.parse::<std::net::Ipv6Addr>().is_ok() => {
                (addr, tail.strip_prefix(':'))
            }
            _ => return false,
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let host_ok = !host.is_empty()
        && (rest.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    host_ok && port_ok
}

/// The CORS layer for these origins.
pub fn layer(origins: &CorsOrigins) -> CorsLayer {
    let allow = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::Listed(list) => AllowOrigin::list(list.clone()),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ])
        .allow_headers(AllowHeaders::mirror_request())
        // A page that creates a resource can then read the run id of an update or delete,
        // and the next page of a listing.
        .expose_headers([
            super::resources::RUN_ID_HEADER,
            HeaderName::from_static("x-conveyor-next-after"),
        ])
}

/// Answers a preflight with 204, as upstream (the CORS layer answers 200), around [`layer`].
pub async fn preflight_no_content(req: Request, next: Next) -> Response {
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = next.run(req).await;
    if preflight && response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn origins_are_checked() {
        for good in [
            vec!["*"],
            vec!["https://ci.example.com"],
            vec!["http://localhost:3000", "http://127.0.0.1:3000"],
            vec!["http://[::1]:8080"],
            vec![],
        ] {
            assert_eq!(check_origins(&strings(&good)), Ok(()), "{good:?}");
        }
        assert_eq!(
            check_origins(&strings(&["*", "https://a.example"])),
            Err(OriginError::WildcardWithOthers)
        );
        for bad in [
            "https://ci.example.com/",
            "ci.example.com",
            "ftp://ci.example.com",
            "https://",
            "https://a.example:99999",
            "https://a.example/path",
            "https://a b",
            "https://[zz]",
        ] {
            assert_eq!(
                check_origins(&strings(&[bad])),
                Err(OriginError::Malformed(bad.to_string())),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_default_depends_on_authentication() {
        assert_eq!(CorsOrigins::from_config(None, true), CorsOrigins::Any);
        assert_eq!(
            CorsOrigins::from_config(None, false),
            CorsOrigins::Listed(Vec::new())
        );
        assert_eq!(
            CorsOrigins::from_config(Some(&strings(&["*"])), false),
            CorsOrigins::Any
        );
        assert_eq!(
            CorsOrigins::from_config(Some(&strings(&["https://a.example"])), true),
            CorsOrigins::Listed(vec![HeaderValue::from_static("https://a.example")])
        );
    }
}
