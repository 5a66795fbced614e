//! What one driver is granted, precomputed once per driver from its settings so that each
//! event only copies a few `Arc`s: directories, environment (secrets included), the HTTP
//! allow-list and the redactor for its secrets.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime_wasi::FsPerms;

use super::imports::http::HttpPolicy;
use super::redact::Redactor;
use crate::config::{DirMode, DriverSettings};

/// A driver's capabilities. [`Grants::none`] grants nothing.
#[derive(Clone, Default)]
pub struct Grants {
    /// Host directory, guest path, permission.
    pub dirs: Vec<(PathBuf, String, FsPerms)>,
    /// Environment variables, secrets included.
    pub env: Vec<(String, String)>,
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

    /// The grants of a driver's settings.
    pub fn from_settings(s: &DriverSettings) -> Arc<Grants> {
        let dirs = s
            .dirs
            .iter()
            .map(|d| {
                let perms = match d.mode {
                    DirMode::ReadOnly => FsPerms::ReadOnly,
                    DirMode::ReadWrite => FsPerms::ReadWrite,
                };
                (d.host.clone(), d.guest.clone(), perms)
            })
            .collect();
        let mut env = s.env.clone();
        env.extend(s.secrets.iter().map(|(k, v)| (k.clone(), v.0.clone())));
        Arc::new(Grants {
            dirs,
            env,
            http: Arc::new(HttpPolicy::from_grant(&s.http)),
            redactor: Redactor::new(s.secrets.iter().map(|(_, v)| v.0.clone())),
        })
    }
}
