//! The drivers directory: every `*.wasm` in it, loaded, linked and introspected. A file that
//! fails to load is recorded with its reason; the others still run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::wasm::cache::ComponentCache;
use crate::wasm::driver::{self, LoadedDriver};
use crate::wasm::{LogSink, Sandbox};

/// A driver file that could not be loaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadFailure {
    /// The file.
    pub file: PathBuf,
    /// Why.
    pub error: String,
}

/// The loaded drivers, by name.
#[derive(Default)]
pub struct Registry {
    drivers: RwLock<BTreeMap<String, Arc<LoadedDriver>>>,
    failures: RwLock<Vec<LoadFailure>>,
}

impl Registry {
    /// Loads every `*.wasm` in `dir`, concurrently.
    pub async fn load_dir(
        dir: &Path,
        sandbox: &Sandbox,
        cache: &ComponentCache,
        sink: Arc<dyn LogSink>,
    ) -> std::io::Result<Registry> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
            .collect();
        files.sort();
        let loads = files
            .iter()
            .map(|f| driver::load(sandbox, cache, f, sink.clone()));
        let results = futures::future::join_all(loads).await;
        let registry = Registry::default();
        for (file, result) in files.into_iter().zip(results) {
            match result {
                Ok(d) => registry.add(d),
                Err(e) => registry.fail(file, e.to_string()),
            }
        }
        Ok(registry)
    }

    fn add(&self, d: LoadedDriver) {
        let mut drivers = self.drivers.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = drivers.get(&d.info.name) {
            let error = format!(
                "driver name {:?} is already taken by {}",
                d.info.name,
                existing.file.display()
            );
            drop(drivers);
            return self.fail(d.file, error);
        }
        tracing::info!(
            driver = %d.info.name,
            file = %d.file.display(),
            resources = ?d.info.resources,
            from = ?d.provenance,
            load_ms = d.load_time.as_secs_f64() * 1e3,
            "driver loaded"
        );
        drivers.insert(d.info.name.clone(), Arc::new(d));
    }

    fn fail(&self, file: PathBuf, error: String) {
        tracing::error!(file = %file.display(), %error, "driver not loaded");
        self.failures
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(LoadFailure { file, error });
    }

    /// A driver by name.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedDriver>> {
        self.drivers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Every loaded driver, by name.
    pub fn all(&self) -> Vec<Arc<LoadedDriver>> {
        self.drivers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Files that failed to load, and why.
    pub fn failures(&self) -> Vec<LoadFailure> {
        self.failures
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The drivers that want `event` for resources of type `kind`.
    pub fn interested(&self, kind: &str, event: &str) -> Vec<String> {
        self.drivers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|d| d.info.wants(kind, event))
            .map(|d| d.info.name.clone())
            .collect()
    }
}
