//! The drivers directory: every `*.wasm` in it, loaded, linked and introspected, and kept in
//! step with the directory while the host runs.
//!
//! A file that fails to load is recorded with its reason; the others still run. With
//! [`Registry::watch`], a new or changed file is loaded (through the compile cache) and
//! swapped in atomically: runs in flight keep the `Arc<LoadedDriver>` they started with, new
//! runs get the new version. A replacement that fails to load leaves the old version serving,
//! with the reason reported. A removed file unloads its driver; its runs in flight finish.
//! Every change bumps a [`tokio::sync::watch`] generation so the manager can start and stop
//! driver loops.
//!
//! Files load independently: a Python or JavaScript component that takes seconds to compile
//! the first time does not hold up a small Rust driver, nor the API (the host serves while it
//! compiles, and lists the file as `loading`). Loads of the same file are applied in order.

mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::keyed_lock::KeyedLocks;
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
    /// When it was tried (RFC 3339).
    pub at: String,
}

#[derive(Default)]
struct State {
    drivers: BTreeMap<String, Arc<LoadedDriver>>,
    failures: BTreeMap<PathBuf, LoadFailure>,
    /// Files being loaded now, with when the load started.
    loading: BTreeMap<PathBuf, String>,
}

/// A driver file being loaded (compiled, on its first load).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Loading {
    /// The file.
    pub file: PathBuf,
    /// When the load started (RFC 3339).
    pub since: String,
}

/// The loaded drivers, by name.
pub struct Registry {
    dir: PathBuf,
    sandbox: Arc<Sandbox>,
    cache: ComponentCache,
    sink: Arc<dyn LogSink>,
    state: RwLock<State>,
    changes: tokio::sync::watch::Sender<u64>,
    /// One lock per file: loads of one file are applied in order, so a slow load cannot
    /// overwrite a newer one, while different files load in parallel.
    load_locks: Arc<KeyedLocks<PathBuf>>,
    /// Whether the files found at start have all been loaded (or failed).
    initial_load: tokio::sync::watch::Sender<bool>,
}

impl Registry {
    /// An empty registry for the drivers in `dir`; call [`Registry::load_all`].
    pub fn new(
        dir: &Path,
        sandbox: Arc<Sandbox>,
        cache: ComponentCache,
        sink: Arc<dyn LogSink>,
    ) -> Registry {
        Registry {
            dir: dir.to_path_buf(),
            sandbox,
            cache,
            sink,
            state: RwLock::default(),
            changes: tokio::sync::watch::channel(0).0,
            load_locks: Arc::default(),
            initial_load: tokio::sync::watch::channel(false).0,
        }
    }

    /// Waits, at most `max`, until every file found by [`Registry::load_all`] has been loaded
    /// or has failed; `false` when they are still loading after `max`. Free once they have.
    /// A change's events go to the drivers loaded when it is made, so whoever routes changes
    /// waits here first: a first compile of a Python or JavaScript driver takes seconds.
    pub async fn startup_settled(&self, max: Duration) -> bool {
        if *self.initial_load.borrow() {
            return true;
        }
        let mut done = self.initial_load.subscribe();
        // The sender lives as long as the registry, so this only ends when the load does.
        tokio::time::timeout(max, done.wait_for(|d| *d))
            .await
            .is_ok()
    }

    /// Starts loading every `*.wasm` in the directory, each file on its own, and returns at
    /// once: each driver is served as soon as it is loaded, and the files still loading are
    /// listed by [`Registry::loading`]. The returned task ends when every file is done.
    pub fn load_all(self: &Arc<Self>) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_driver_file(p) && p.is_file())
            .map(|p| (p.metadata().map_or(u64::MAX, |m| m.len()), p))
            .collect();
        // Smallest first, so they reach the compile queue first (it serves the smallest waiting
        // compile next, but cannot hold back one that arrives while it is idle).
        files.sort();
        let files: Vec<PathBuf> = files.into_iter().map(|(_, p)| p).collect();
        {
            // Listed as loading before this returns, so no caller sees an empty registry
            // with nothing pending.
            let now = crate::clock::now_rfc3339();
            let mut state = self.write();
            for f in &files {
                state.loading.insert(f.clone(), now.clone());
            }
        }
        let loads: Vec<_> = files
            .into_iter()
            .map(|f| {
                let registry = self.clone();
                tokio::spawn(async move { registry.reload(&f).await })
            })
            .collect();
        let registry = self.clone();
        Ok(tokio::spawn(async move {
            futures::future::join_all(loads).await;
            registry.initial_load.send_replace(true);
        }))
    }

    /// Brings one file's driver in line with the file: loads it if it exists, unloads it if
    /// it is gone.
    pub async fn reload(&self, file: &Path) {
        // Temporary files come and go: a file's lock is forgotten once no load holds or
        // waits for it.
        let _order = self.load_locks.clone().lock(file.to_path_buf()).await;
        if !file.is_file() {
            self.write().loading.remove(file);
            self.unload(file);
            return;
        }
        self.write()
            .loading
            .entry(file.to_path_buf())
            .or_insert_with(crate::clock::now_rfc3339);
        // Listed as loading until the outcome is applied, so that no one sees the file neither
        // loading nor loaded.
        let _loading = LoadingMark(self, file);
        let serving = self.serving_from(file);
        match driver::load(&self.sandbox, &self.cache, file, self.sink.clone()).await {
            Ok(d) => {
                if serving.as_ref().is_some_and(|s| s.sha256 == d.sha256) {
                    // Touched but unchanged: keep the instance we have.
                    self.clear_failure(file);
                    return;
                }
                if let Some(old) = serving.filter(|s| s.info.name != d.info.name) {
                    // The file now holds a driver with another name: the old one goes.
                    self.remove_driver(&old.info.name);
                }
                self.add(d);
            }
            Err(e) => {
                let error = match &serving {
                    Some(old) => format!(
                        "{e}; the previous version (sha256 {}) keeps serving",
                        old.sha256
                    ),
                    None => e.to_string(),
                };
                self.fail(file.to_path_buf(), error);
            }
        }
    }

    fn serving_from(&self, file: &Path) -> Option<Arc<LoadedDriver>> {
        self.read()
            .drivers
            .values()
            .find(|d| d.file == file)
            .cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|g| *g += 1);
    }

    fn add(&self, d: LoadedDriver) {
        let mut state = self.write();
        if let Some(existing) = state.drivers.get(&d.info.name)
            && existing.file != d.file
        {
            let error = format!(
                "driver name {:?} is already taken by {}",
                d.info.name,
                existing.file.display()
            );
            drop(state);
            return self.fail(d.file, error);
        }
        tracing::info!(
            driver = %d.info.name,
            file = %d.file.display(),
            sha256 = %d.sha256,
            resources = ?d.info.resources,
            from = ?d.provenance,
            load_ms = d.load_time.as_secs_f64() * 1e3,
            "driver loaded"
        );
        state.failures.remove(&d.file);
        state.drivers.insert(d.info.name.clone(), Arc::new(d));
        drop(state);
        self.changed();
    }

    fn remove_driver(&self, name: &str) {
        if self.write().drivers.remove(name).is_some() {
            tracing::info!(driver = %name, "driver unloaded; its runs in flight finish");
            self.changed();
        }
    }

    fn unload(&self, file: &Path) {
        self.clear_failure(file);
        if let Some(d) = self.serving_from(file) {
            self.remove_driver(&d.info.name);
        }
    }

    fn clear_failure(&self, file: &Path) {
        self.write().failures.remove(file);
    }

    fn fail(&self, file: PathBuf, error: String) {
        tracing::error!(file = %file.display(), %error, "driver not loaded");
        let failure = LoadFailure {
            file: file.clone(),
            error,
            at: crate::clock::now_rfc3339(),
        };
        self.write().failures.insert(file, failure);
    }

    /// A driver by name.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedDriver>> {
        self.read().drivers.get(name).cloned()
    }

    /// Every loaded driver, by name.
    pub fn all(&self) -> Vec<Arc<LoadedDriver>> {
        self.read().drivers.values().cloned().collect()
    }

    /// Files being loaded now (a first compile of a large component takes seconds).
    pub fn loading(&self) -> Vec<Loading> {
        self.read()
            .loading
            .iter()
            .map(|(file, since)| Loading {
                file: file.clone(),
                since: since.clone(),
            })
            .collect()
    }

    /// Whether any file is being loaded now.
    pub fn is_loading(&self) -> bool {
        !self.read().loading.is_empty()
    }

    /// Files that failed to load (their last attempt), and why.
    pub fn failures(&self) -> Vec<LoadFailure> {
        self.read().failures.values().cloned().collect()
    }

    /// The drivers that want `event` for resources of type `kind` (see [`crate::routing`]).
    pub fn wanting(&self, kind: &str, event: &str) -> Vec<String> {
        self.read()
            .drivers
            .values()
            .filter(|d| crate::routing::wants(&d.info, kind, event))
            .map(|d| d.info.name.clone())
            .collect()
    }

    /// A receiver that sees a new value whenever a driver is added, replaced or removed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Takes a file off the loading list when dropped.
struct LoadingMark<'a>(&'a Registry, &'a Path);

impl Drop for LoadingMark<'_> {
    fn drop(&mut self) {
        self.0.write().loading.remove(self.1);
    }
}

/// Whether a path names a driver component.
fn is_driver_file(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "wasm")
}
