//! A loaded driver: its linked `InstancePre`, what its `info()` said, and its file's identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::bindings::DriverPre;
use super::cache::{ComponentCache, LoadError, Provenance};
use super::imports::log::{LogSink, RunLogger};
use super::sandbox::{RunState, Sandbox};

/// What a driver says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DriverInfo {
    /// Its name.
    pub name: String,
    /// The resource types it listens to.
    pub resources: Vec<String>,
    /// The events it wants; empty means all.
    pub events: Vec<String>,
}

impl DriverInfo {
    /// Checks that the name and resource types can serve as NATS subject tokens and consumer
    /// names, as Conveyor requires.
    pub fn validate(&self) -> Result<(), String> {
        let token_ok = crate::routing::is_subject_token;
        if !token_ok(&self.name) {
            return Err(format!(
                "driver name {:?} is not usable: it must be non-empty, without '.', '*', '>' or whitespace",
                self.name
            ));
        }
        if let Some(bad) = self.resources.iter().find(|r| !token_ok(r)) {
            return Err(format!(
                "resource type {bad:?} is not usable: it must be non-empty, without '.', '*', '>' or whitespace"
            ));
        }
        Ok(())
    }
}

/// A driver ready to run.
pub struct LoadedDriver {
    /// What `info()` returned.
    pub info: DriverInfo,
    /// The `.wasm` file.
    pub file: PathBuf,
    /// The file's sha256, hex.
    pub sha256: String,
    /// The linked component; each event instantiates it afresh.
    pub pre: DriverPre<RunState>,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// From the compile cache, or compiled now.
    pub provenance: Provenance,
    /// How long loading took, compile or cache read included.
    pub load_time: Duration,
}

/// Why a driver file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum DriverLoadError {
    /// The file is not a usable component.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The component does not fit the `conveyor:driver/driver` world.
    #[error("it does not fit the conveyor:driver@0.1.0 `driver` world: {0}")]
    Link(String),
    /// `info()` failed.
    #[error("its info() failed: {0}")]
    Info(String),
    /// `info()` returned something unusable.
    #[error("its info() is not usable: {0}")]
    InvalidInfo(String),
    /// The loading task died.
    #[error("loading was interrupted: {0}")]
    Interrupted(String),
}

/// Loads, links and introspects a driver file. Compilation (on a cache miss) runs on a
/// blocking thread so it never stalls the runtime.
pub async fn load(
    sandbox: &Sandbox,
    cache: &ComponentCache,
    path: &Path,
    sink: Arc<dyn LogSink>,
) -> Result<LoadedDriver, DriverLoadError> {
    let compiled = {
        let cache = cache.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || cache.load(&path))
            .await
            .map_err(|e| DriverLoadError::Interrupted(e.to_string()))??
    };
    let pre = sandbox
        .prepare(&compiled.component)
        .map_err(|e| DriverLoadError::Link(link_hint(&format!("{e:#}"))))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let logger = RunLogger::new(sink, &file_name, "info", None);
    let info = sandbox
        .info(&pre, logger)
        .await
        .map_err(|f| DriverLoadError::Info(f.to_string()))?;
    let info = DriverInfo {
        name: info.name,
        resources: info.resources,
        events: info.events,
    };
    info.validate().map_err(DriverLoadError::InvalidInfo)?;
    Ok(LoadedDriver {
        info,
        file: path.to_path_buf(),
        sha256: compiled.sha256,
        pre,
        loaded_at: crate::clock::now_rfc3339(),
        provenance: compiled.provenance,
        load_time: compiled.elapsed,
    })
}

/// Adds a hint to wasmtime's link errors for the usual causes.
fn link_hint(message: &str) -> String {
    if message.contains("conveyor:driver/") && !message.contains("conveyor:driver/log@0.1.0") {
        format!(
            "{message} (the component was built against another version of the conveyor:driver \
             WIT package; rebuild it with a conveyor-driver SDK for 0.1.0)"
        )
    } else if message.contains("wasi:http") {
        format!(
            "{message} (the component imports a version of wasi:http this host does not provide; \
             it provides wasi:http 0.2)"
        )
    } else {
        message.to_string()
    }
}

/// A driver's info from string slices, for tests.
#[cfg(test)]
pub(crate) fn info(name: &str, resources: &[&str], events: &[&str]) -> DriverInfo {
    DriverInfo {
        name: name.into(),
        resources: resources.iter().map(|s| s.to_string()).collect(),
        events: events.iter().map(|s| s.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_subject_tokens() {
        assert!(
            info("sample-driver", &["resource-1"], &[])
                .validate()
                .is_ok()
        );
        assert!(info("a.b", &["x"], &[]).validate().is_err());
        assert!(info("a", &["x y"], &[]).validate().is_err());
        assert!(info("", &["x"], &[]).validate().is_err());
    }
}
