//! What one driver is granted, resolved once per driver (from the host config, at the edge)
//! so that each event only copies a few `Arc`s: the WASI context's directories and
//! environment (secrets included), the HTTP allow-list and the redactor for its secrets.

use std::sync::Arc;

use super::imports::http::HttpPolicy;
use super::imports::wasi::WasiGrants;
use super::redact::Redactor;

/// A driver's capabilities. [`Grants::none`] grants nothing.
#[derive(Clone, Default)]
pub struct Grants {
    /// Directories and environment.
    pub wasi: WasiGrants,
    /// Outbound HTTP.
    pub http: Arc<HttpPolicy>,
    /// Masks the secrets.
    pub redactor: Redactor,
}

impl Grants {
    /// Nothing granted.
    pub fn none() -> Arc<Grants> {
        Arc::default()
    }
}
