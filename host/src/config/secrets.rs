//! Environment variables and secrets granted to drivers: where their values come from (the
//! config itself, the host's environment, a file), read once when the config is loaded so a
//! missing variable or file stops the host at start rather than failing runs later.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EnvSource {
    /// The value itself.
    Literal(String),
    /// The value of a variable of the host's environment, read at start.
    Host {
        /// The host variable's name.
        env: String,
    },
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// A variable of the host's environment.
    #[serde(default)]
    pub env: Option<String>,
    /// A file (relative to the config file); one trailing newline is dropped.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// A secret value. Its `Debug` form never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An environment variable name a guest can be given: non-empty, no `=` or NUL.
fn env_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}

/// Reads the values of `[<key>.env]`.
pub(super) fn read_env(
    key: &str,
    env: &BTreeMap<String, EnvSource>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (name, source) in env {
        if !env_name_ok(name) {
            return Err(format!("{key}.env.{name}: not a usable variable name"));
        }
        let value = match source {
            EnvSource::Literal(v) => v.clone(),
            EnvSource::Host { env: var } => std::env::var(var).map_err(|_| {
                format!("{key}.env.{name}: the host environment has no variable {var:?}")
            })?,
        };
        out.push((name.clone(), value));
    }
    Ok(out)
}

/// The shortest token accepted: a guessable token is no protection.
const MIN_TOKEN: usize = 16;

/// Reads `[[api.auth.tokens]]` and keeps only their SHA-256 digests. With `[api.auth.jwt]`
/// (`jwt`), a token shaped like a JWT is refused: the API would check it as one.
pub(super) fn read_tokens(
    tokens: &[super::TokenConfig],
    jwt: bool,
    base: &Path,
) -> Result<Vec<crate::api::Token>, String> {
    use sha2::Digest;
    let mut out: Vec<crate::api::Token> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let key = format!("api.auth.tokens[{i}]");
        let value = read_source(&key, &t.source, base)?;
        if value.len() < MIN_TOKEN {
            return Err(format!(
                "{key}: the token of {:?} is shorter than {MIN_TOKEN} characters",
                t.name
            ));
        }
        if jwt && crate::jwt::looks_like_jwt(&value) {
            return Err(format!(
                "{key}: the token of {:?} has the shape of a JWT (three base64url parts), \
                 which the API checks as a JWT since [api.auth.jwt] is configured",
                t.name
            ));
        }
        let digest: [u8; 32] = sha2::Sha256::digest(value.as_bytes()).into();
        if out.iter().any(|o| o.digest == digest) {
            return Err(format!(
                "{key}: the token of {:?} is also given to another entry",
                t.name
            ));
        }
        out.push(crate::api::Token {
            name: t.name.clone(),
            role: t.role,
            digest,
        });
    }
    Ok(out)
}

/// Reads one value from the host's environment or a file (one trailing newline dropped).
fn read_source(key: &str, source: &SecretSource, base: &Path) -> Result<String, String> {
    match (&source.env, &source.file) {
        (Some(var), None) => std::env::var(var)
            .map_err(|_| format!("{key}: the host environment has no variable {var:?}")),
        (None, Some(file)) => {
            let file = base.join(file);
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("{key}: cannot read {}: {e}", file.display()))?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
        }
        _ => Err(format!("{key}: give exactly one of `env` or `file`")),
    }
}

/// Reads the values of `[<key>.secrets]`; a name may not also be a plain variable of `env`.
pub(super) fn read_secrets(
    key: &str,
    secrets: &BTreeMap<String, SecretSource>,
    env: &BTreeMap<String, EnvSource>,
    base: &Path,
) -> Result<Vec<(String, Secret)>, String> {
    let mut out = Vec::new();
    for (name, source) in secrets {
        if !env_name_ok(name) {
            return Err(format!("{key}.secrets.{name}: not a usable variable name"));
        }
        if env.contains_key(name) {
            return Err(format!(
                "{key}.secrets.{name}: the name is also in {key}.env; a variable is either \
                 plain or secret"
            ));
        }
        let value = read_source(&format!("{key}.secrets.{name}"), source, base)?;
        if value.is_empty() {
            return Err(format!(
                "{key}.secrets.{name}: the value is empty (an empty secret cannot be redacted)"
            ));
        }
        out.push((name.clone(), Secret(value)));
    }
    Ok(out)
}
