//! Paging, the one mechanism of every list route: `limit` (between 1 and the route's most, the
//! route's default when absent) and a cursor `after`; a full page names the cursor of the next
//! one in [`NEXT_AFTER`]. A list is never returned whole, so no answer grows with the store.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The response header naming the cursor of the next page: pass it as `after`. It is
/// percent-encoded (a name may hold any character, a header only visible ASCII), ready to
/// go into a query string as it is.
pub const NEXT_AFTER: HeaderName = HeaderName::from_static("x-conveyor-next-after");

/// What a cursor keeps as it is: letters, digits and `-._~`, as in a URL's query.
const CURSOR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A route's page sizes.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Items listed when the request names no `limit`.
    pub default: u32,
    /// The most items one request lists.
    pub max: u32,
}

/// Names, runs and definitions: 100 a page, at most 1,000.
pub const ITEMS: Sizes = Sizes {
    default: 100,
    max: 1000,
};

impl Sizes {
    /// The page size a request asked for, or a 400 naming the allowed range.
    pub fn limit(self, requested: Option<u32>) -> Result<u32, ApiError> {
        let limit = requested.unwrap_or(self.default);
        if limit == 0 || limit > self.max {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("limit must be between 1 and {}", self.max),
            ));
        }
        Ok(limit)
    }
}

/// A page as a JSON array, with [`NEXT_AFTER`] set to `cursor` of its last item when the
/// page is full (a later page may hold more).
pub fn respond<T, C>(items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> C) -> Response
where
    T: serde::Serialize,
    C: Into<String>,
{
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|i| cursor(i).into()))
        .flatten()
        .map(|c: String| {
            let encoded = percent_encoding::utf8_percent_encode(&c, CURSOR).to_string();
            // Only ASCII is left, so this cannot fail.
            HeaderValue::from_str(&encoded).unwrap_or(HeaderValue::from_static(""))
        });
    let body = Json(items);
    match next {
        Some(c) => ([(NEXT_AFTER, c)], body).into_response(),
        None => body.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_outside_the_range_is_refused() {
        assert!(ITEMS.limit(Some(0)).is_err());
        assert!(ITEMS.limit(Some(1001)).is_err());
        assert_eq!(ITEMS.limit(None).ok(), Some(100));
        assert_eq!(ITEMS.limit(Some(7)).ok(), Some(7));
    }

    #[test]
    fn only_a_full_page_names_the_next_cursor() {
        let full = respond(vec!["a", "b"], 2, |s| s.to_string());
        assert_eq!(
            full.headers().get(NEXT_AFTER).map(|v| v.as_bytes()),
            Some(&b"b"[..])
        );
        let named = respond(vec!["x", "ü b"], 2, |s| s.to_string());
        assert_eq!(
            named.headers().get(NEXT_AFTER).map(|v| v.as_bytes()),
            Some(&b"%C3%BC%20b"[..]),
            "any name makes a cursor"
        );
        let short = respond(vec!["a"], 2, |s| s.to_string());
        assert!(short.headers().get(NEXT_AFTER).is_none());
    }
}
