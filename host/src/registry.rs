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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use tokio_util::sync::CancellationToken;

use crate::wasm::cache::ComponentCache;
use crate::wasm::driver::{self, LoadedDriver};
use crate::wasm::{LogSink, Sandbox};

/// How long the directory must be quiet before changes are applied, so that a file being
/// copied in is loaded once, whole.
const DEBOUNCE: Duration = Duration::from_millis(300);

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

/// Run counters of one driver, kept across reloads.
#[derive(Debug, Default)]
pub struct RunCounters {
    /// Runs started.
    pub started: AtomicU64,
    /// Runs that ended in success.
    pub succeeded: AtomicU64,
    /// Runs that ended in a final failure.
    pub failed: AtomicU64,
    /// Runs that ended with the event put back for another attempt.
    pub retried: AtomicU64,
    /// Runs in flight now.
    pub in_flight: AtomicU64,
}

impl RunCounters {
    /// The counters as JSON.
    pub fn snapshot(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "started": get(&self.started),
            "succeeded": get(&self.succeeded),
            "failed": get(&self.failed),
            "retried": get(&self.retried),
            "in_flight": get(&self.in_flight),
        })
    }
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
    counters: RwLock<HashMap<String, Arc<RunCounters>>>,
    changes: tokio::sync::watch::Sender<u64>,
    /// One lock per file: loads of one file are applied in order, so a slow load cannot
    /// overwrite a newer one, while different files load in parallel.
    load_locks: std::sync::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
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
            counters: RwLock::default(),
            changes: tokio::sync::watch::channel(0).0,
            load_locks: std::sync::Mutex::default(),
            initial_load: tokio::sync::watch::channel(false).0,
        }
    }

    /// Waits until every file found by [`Registry::load_all`] has been loaded or has failed.
    pub async fn initial_load_done(&self) {
        let mut done = self.initial_load.subscribe();
        // The sender lives as long as the registry, so this only ends when the load does.
        let _ = done.wait_for(|d| *d).await;
    }

    /// Whether the files found at start are all settled.
    pub fn initial_load_is_done(&self) -> bool {
        *self.initial_load.borrow()
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
        let lock = self
            .load_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(file.to_path_buf())
            .or_default()
            .clone();
        let _order = lock.lock().await;
        if !file.is_file() {
            self.write().loading.remove(file);
            self.unload(file);
            // Temporary files come and go: forget the lock of a file that is gone (a load
            // that is waiting for it keeps its own handle).
            self.load_locks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(file);
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

    /// Watches the directory until `shutdown`, applying changes as they settle.
    pub fn watch(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<PathBuf>>();
        let mut debouncer = notify_debouncer_mini::new_debouncer(
            DEBOUNCE,
            move |events: notify_debouncer_mini::DebounceEventResult| match events {
                Ok(events) => {
                    let _ = tx.send(events.into_iter().map(|e| e.path).collect());
                }
                Err(e) => tracing::warn!(error = %e, "watching drivers_dir failed"),
            },
        )?;
        debouncer
            .watcher()
            .watch(&self.dir, RecursiveMode::NonRecursive)?;
        tokio::spawn(async move {
            // The debouncer stops watching when dropped, so this task owns it.
            let _debouncer = debouncer;
            loop {
                let paths = tokio::select! {
                    p = rx.recv() => match p {
                        Some(p) => p,
                        None => break,
                    },
                    _ = shutdown.cancelled() => break,
                };
                let mut paths: Vec<PathBuf> =
                    paths.into_iter().filter(|p| is_driver_file(p)).collect();
                paths.sort();
                paths.dedup();
                // Each file on its own, as at start: a Python component compiling does not
                // hold up a Rust driver replaced in the same batch. The per-file lock keeps
                // one file's loads in order.
                for p in paths {
                    tracing::info!(file = %p.display(), "drivers_dir changed");
                    let registry = self.clone();
                    tokio::spawn(async move { registry.reload(&p).await });
                }
            }
        });
        Ok(())
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

    /// The drivers that want `event` for resources of type `kind`.
    pub fn interested(&self, kind: &str, event: &str) -> Vec<String> {
        self.read()
            .drivers
            .values()
            .filter(|d| d.info.wants(kind, event))
            .map(|d| d.info.name.clone())
            .collect()
    }

    /// A driver's run counters (created on first use; kept across reloads).
    pub fn counters(&self, name: &str) -> Arc<RunCounters> {
        if let Some(c) = self
            .counters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return c.clone();
        }
        self.counters
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
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

fn is_driver_file(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "wasm")
}
