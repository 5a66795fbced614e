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
//! compiles, and lists the file as `loading`). Loads of the same file are applied in order. A
//! load that has not finished after [`LOAD_TIMEOUT`] is given up and the file reported failed,
//! so that it does not stay `loading` for ever.
//!
//! A file is read again only when it changed: its size, modification time and inode are
//! remembered at each load, and a reload of a file whose three are unchanged is skipped. The
//! number of loads of each file is kept ([`Registry::loads`], `loads` in `GET /drivers`).
//!
//! Two files declaring the same driver name: the first file in name order holds the name,
//! whichever loaded first; every other one is listed failed, naming the file that holds it. A
//! file that loaded first and comes later in order gives the name up when the earlier one
//! loads. The others stay loaded, waiting: when the holder goes (its file removed, or now
//! declaring another driver), the next in order serves at once, without a reload.

mod watch;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::keyed_lock::KeyedLocks;
use crate::wasm::cache::ComponentCache;
use crate::wasm::driver::{self, DriverLoadError, LoadedDriver};
use crate::wasm::{LogSink, Sandbox};

/// How long a file's load (its wait in the compile queue, the compile or cache read, linking
/// and `info()`) may take before it is given up and the file reported failed. A Python or
/// JavaScript component compiles in seconds (8-15 s on a small machine) and waits behind the
/// smaller ones, so this is generous; it only catches a load that never ends.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(10 * 60);

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

/// Why a file's load did not give a driver.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    /// Loading failed.
    #[error(transparent)]
    Load(#[from] DriverLoadError),
    /// Loading did not finish in time.
    #[error(
        "loading did not finish within {}, so it was given up (a compile still running goes \
         on in the background); the file is loaded again when it changes",
        humantime::format_duration(*.0)
    )]
    TimedOut(Duration),
}

/// What identifies a file's content without reading it: if none of the three changed, the
/// file was not rewritten (the watcher also reports reads, touches that keep the time, and
/// the same change twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> FileIdentity {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        FileIdentity {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }

    /// Whether the file is the same as when `self` was taken. Without a modification time
    /// (a platform or file system that has none) nothing can be told, so it never is.
    fn unchanged_since(&self, earlier: &FileIdentity) -> bool {
        self.modified.is_some() && self == earlier
    }
}

/// What the registry remembers of a file between loads.
#[derive(Debug, Default)]
struct FileRecord {
    /// Its identity when its last finished load started.
    identity: Option<FileIdentity>,
    /// How many times it was loaded (read, and compiled or read from the cache).
    loads: u64,
}

#[derive(Default)]
struct State {
    /// The driver serving each name: the one of the file that holds the name in `claims`.
    drivers: BTreeMap<String, Arc<LoadedDriver>>,
    /// Every loaded file's driver, by the name it declares.
    claims: Claims<Arc<LoadedDriver>>,
    failures: BTreeMap<PathBuf, LoadFailure>,
    /// Files being loaded now, with when the load started.
    loading: BTreeMap<PathBuf, String>,
    /// Per file, what its last load saw.
    files: BTreeMap<PathBuf, FileRecord>,
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
    /// How long one load may take ([`LOAD_TIMEOUT`]).
    load_timeout: Duration,
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
            load_timeout: LOAD_TIMEOUT,
        }
    }

    /// A registry with no drivers directory: nothing is ever loading and no driver is loaded,
    /// so changes are routed at once, to no driver. For a control plane that only answers a
    /// driver's API client (`conveyor-host test`).
    pub fn without_drivers(
        sandbox: Arc<Sandbox>,
        cache: ComponentCache,
        sink: Arc<dyn LogSink>,
    ) -> Registry {
        let registry = Registry::new(Path::new(""), sandbox, cache, sink);
        registry.initial_load.send_replace(true);
        registry
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

    /// Brings one file's driver in line with the file: loads it if it exists and changed
    /// since its last load, unloads it if it is gone.
    pub async fn reload(&self, file: &Path) {
        self.reload_with(file, || {
            driver::load(&self.sandbox, &self.cache, file, self.sink.clone())
        })
        .await
    }

    /// [`Registry::reload`], with `load` as the way to load the file.
    async fn reload_with<F>(&self, file: &Path, load: impl FnOnce() -> F)
    where
        F: Future<Output = Result<LoadedDriver, DriverLoadError>>,
    {
        // Temporary files come and go: a file's lock is forgotten once no load holds or
        // waits for it.
        let _order = self.load_locks.clone().lock(file.to_path_buf()).await;
        let identity = match std::fs::metadata(file) {
            Ok(meta) if meta.is_file() => FileIdentity::of(&meta),
            _ => {
                self.write().loading.remove(file);
                self.unload(file);
                return;
            }
        };
        {
            let mut state = self.write();
            let unchanged = state
                .files
                .get(file)
                .and_then(|r| r.identity)
                .is_some_and(|before| identity.unchanged_since(&before));
            if unchanged {
                // Not rewritten since it was last loaded: nothing to read. (It may be listed
                // as loading by `load_all`, which found it while another load was under way.)
                state.loading.remove(file);
                return;
            }
            state
                .loading
                .entry(file.to_path_buf())
                .or_insert_with(crate::clock::now_rfc3339);
            state.files.entry(file.to_path_buf()).or_default().loads += 1;
        }
        // Listed as loading until the outcome is applied, so that no one sees the file neither
        // loading nor loaded.
        let _loading = LoadingMark(self, file);
        let outcome = bounded(self.load_timeout, load()).await;
        if !matches!(outcome, Err(ReloadError::TimedOut(_))) {
            // A load that timed out may have been held up by the others: the next change of
            // the file tries again, even one that keeps its identity.
            self.write()
                .files
                .entry(file.to_path_buf())
                .or_default()
                .identity = Some(identity);
        }
        match outcome {
            Ok(d) => self.loaded(d),
            Err(e) => self.load_failed(file, &e),
        }
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

    /// A file loaded: it now declares its driver's name (in place of what it declared
    /// before), and holds it if it comes first in name order among the files declaring it.
    fn loaded(&self, d: LoadedDriver) {
        let mut state = self.write();
        state.failures.remove(&d.file);
        if state
            .claims
            .of_file(&d.file)
            .is_some_and(|current| current.sha256 == d.sha256)
        {
            // Touched but unchanged: keep the instance we have.
            return;
        }
        tracing::info!(
            driver = %d.info.name,
            file = %d.file.display(),
            sha256 = %d.sha256,
            resources = ?d.info.resources,
            from = ?d.provenance,
            load_ms = d.load_time.as_secs_f64() * 1e3,
            "driver file loaded"
        );
        let (file, name) = (d.file.clone(), d.info.name.clone());
        let touched = state.claims.claim(&file, &name, Arc::new(d));
        let changed = serve_holders(&mut state, &touched);
        drop(state);
        if changed {
            self.changed();
        }
    }

    /// A file failed to load. The version it loaded before keeps serving if it holds its
    /// name; one that does not hold it (another file does) is forgotten.
    fn load_failed(&self, file: &Path, e: &ReloadError) {
        let mut state = self.write();
        let error = match state.claims.holder_of_file(file) {
            Some(old) => format!(
                "{e}; the previous version (sha256 {}) keeps serving",
                old.sha256
            ),
            None => {
                if let Some(name) = state.claims.release(file) {
                    serve_holders(&mut state, &[name]);
                }
                e.to_string()
            }
        };
        tracing::error!(file = %file.display(), %error, "driver not loaded");
        let failure = LoadFailure {
            file: file.to_path_buf(),
            error,
            at: crate::clock::now_rfc3339(),
        };
        state.failures.insert(file.to_path_buf(), failure);
    }

    /// A file is gone: its driver goes (the next file declaring the name, if any, serves).
    fn unload(&self, file: &Path) {
        let mut state = self.write();
        state.failures.remove(file);
        state.files.remove(file);
        let changed = match state.claims.release(file) {
            Some(name) => serve_holders(&mut state, &[name]),
            None => false,
        };
        drop(state);
        if changed {
            self.changed();
        }
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

    /// Files that failed to load (their last attempt), and why; and files that loaded but
    /// declare a driver name another file holds, naming that file.
    pub fn failures(&self) -> Vec<LoadFailure> {
        let state = self.read();
        let mut out = state.failures.clone();
        for refused in state.claims.refused() {
            out.insert(
                refused.file.to_path_buf(),
                LoadFailure {
                    file: refused.file.to_path_buf(),
                    error: refused.error(),
                    at: refused.since.to_string(),
                },
            );
        }
        out.into_values().collect()
    }

    /// How many times `file` was loaded (read, and compiled or read from the cache) since
    /// the host started, or since it was last removed; 0 for a file the registry does not
    /// know.
    pub fn loads(&self, file: &Path) -> u64 {
        self.read().files.get(file).map_or(0, |r| r.loads)
    }

    /// The drivers that want events named `event`, whatever the resource type (a broadcast
    /// message goes to every driver, as upstream's `POST /drivers/broadcast-message`).
    pub fn admitting(&self, event: &str) -> Vec<String> {
        self.read()
            .drivers
            .values()
            .filter(|d| crate::routing::admits(&d.info, event))
            .map(|d| d.info.name.clone())
            .collect()
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

/// Runs `load`, for at most `max`.
async fn bounded<T>(
    max: Duration,
    load: impl Future<Output = Result<T, DriverLoadError>>,
) -> Result<T, ReloadError> {
    match tokio::time::timeout(max, load).await {
        Ok(loaded) => Ok(loaded?),
        Err(_) => Err(ReloadError::TimedOut(max)),
    }
}

/// Makes each of `names` served by the driver of the file that holds it (or by none), and
/// logs who serves and who was refused. `true` when a served driver changed.
fn serve_holders(state: &mut State, names: &[String]) -> bool {
    let mut changed = false;
    for name in names {
        let holder = state.claims.holder(name);
        let before = state.drivers.get(name);
        let same = match (before, holder) {
            (Some(b), Some((_, h))) => Arc::ptr_eq(b, h),
            (None, None) => true,
            _ => false,
        };
        if !same {
            changed = true;
            match holder {
                Some((file, holder)) => {
                    match before.filter(|b| b.file != *file) {
                        Some(before) if before.file > *file => tracing::warn!(
                            driver = %name,
                            file = %before.file.display(),
                            holder = %file.display(),
                            "driver name taken over by a file earlier in name order"
                        ),
                        Some(before) => tracing::info!(
                            driver = %name,
                            file = %before.file.display(),
                            holder = %file.display(),
                            "driver name passed on to the next file in name order"
                        ),
                        None => {}
                    }
                    tracing::info!(
                        driver = %name,
                        file = %file.display(),
                        sha256 = %holder.sha256,
                        "driver loaded"
                    );
                    let holder = holder.clone();
                    state.drivers.insert(name.clone(), holder);
                }
                None => {
                    tracing::info!(driver = %name, "driver unloaded; its runs in flight finish");
                    state.drivers.remove(name);
                }
            }
        }
        for refused in state.claims.refused().filter(|r| r.name == name) {
            tracing::error!(
                file = %refused.file.display(),
                error = %refused.error(),
                "driver not loaded"
            );
        }
    }
    changed
}

/// Which file declares which driver name, and so which file holds each name: the first in
/// name order of the files declaring it. Generic over the driver so that it can be tested
/// without components.
struct Claims<D> {
    /// Per name, the files declaring it, in name order.
    by_name: BTreeMap<String, BTreeMap<PathBuf, Claim<D>>>,
    /// The name each file declares.
    by_file: BTreeMap<PathBuf, String>,
}

impl<D> Default for Claims<D> {
    fn default() -> Self {
        Claims {
            by_name: BTreeMap::new(),
            by_file: BTreeMap::new(),
        }
    }
}

/// One file's claim on a name.
struct Claim<D> {
    driver: D,
    /// Since when another file has held the name (RFC 3339); `None` while this one does.
    refused_since: Option<String>,
}

/// A file whose driver is loaded but does not serve, because another file holds its name.
#[derive(Debug, PartialEq, Eq)]
struct Refused<'a> {
    file: &'a Path,
    name: &'a str,
    holder: &'a Path,
    since: &'a str,
}

impl Refused<'_> {
    /// What the file is listed failed with.
    fn error(&self) -> String {
        format!(
            "driver name {:?} is already taken by {}: of several files declaring one driver \
             name, the first in name order serves",
            self.name,
            self.holder.display()
        )
    }
}

impl<D> Claims<D> {
    /// Records that `file` declares `name`, loaded as `driver`, in place of what it declared
    /// before. Returns the names whose holder may have changed.
    fn claim(&mut self, file: &Path, name: &str, driver: D) -> Vec<String> {
        let mut touched = Vec::new();
        if let Some(before) = self.release(file)
            && before != name
        {
            touched.push(before);
        }
        self.by_file.insert(file.to_path_buf(), name.to_string());
        self.by_name.entry(name.to_string()).or_default().insert(
            file.to_path_buf(),
            Claim {
                driver,
                refused_since: None,
            },
        );
        self.stamp(name);
        touched.push(name.to_string());
        touched
    }

    /// Forgets `file`'s claim; returns the name it declared.
    fn release(&mut self, file: &Path) -> Option<String> {
        let name = self.by_file.remove(file)?;
        if let Some(files) = self.by_name.get_mut(&name) {
            files.remove(file);
            if files.is_empty() {
                self.by_name.remove(&name);
            } else {
                self.stamp(&name);
            }
        }
        Some(name)
    }

    /// Marks who waits for `name` since when: every claimant after the first.
    fn stamp(&mut self, name: &str) {
        let Some(files) = self.by_name.get_mut(name) else {
            return;
        };
        let mut now = None;
        for (i, claim) in files.values_mut().enumerate() {
            if i == 0 {
                claim.refused_since = None;
            } else if claim.refused_since.is_none() {
                claim.refused_since =
                    Some(now.get_or_insert_with(crate::clock::now_rfc3339).clone());
            }
        }
    }

    /// The file holding `name`, and its driver.
    fn holder(&self, name: &str) -> Option<(&PathBuf, &D)> {
        self.by_name
            .get(name)?
            .iter()
            .next()
            .map(|(file, claim)| (file, &claim.driver))
    }

    /// The driver `file` declares, whether it holds its name or not.
    fn of_file(&self, file: &Path) -> Option<&D> {
        let name = self.by_file.get(file)?;
        Some(&self.by_name.get(name)?.get(file)?.driver)
    }

    /// The driver of `file` if the file holds its name.
    fn holder_of_file(&self, file: &Path) -> Option<&D> {
        let name = self.by_file.get(file)?;
        self.holder(name)
            .filter(|(holder, _)| holder.as_path() == file)
            .map(|(_, d)| d)
    }

    /// Every file that declares a name another file holds.
    fn refused(&self) -> impl Iterator<Item = Refused<'_>> {
        self.by_name.iter().flat_map(|(name, files)| {
            let holder = files.keys().next();
            files.iter().filter_map(move |(file, claim)| {
                Some(Refused {
                    file,
                    name,
                    holder: holder?,
                    since: claim.refused_since.as_deref()?,
                })
            })
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names<'a>(refused: impl Iterator<Item = Refused<'a>>) -> Vec<(String, String, String)> {
        refused
            .map(|r| {
                (
                    r.file.display().to_string(),
                    r.name.to_string(),
                    r.holder.display().to_string(),
                )
            })
            .collect()
    }

    fn triple(file: &str, name: &str, holder: &str) -> (String, String, String) {
        (file.into(), name.into(), holder.into())
    }

    #[test]
    fn the_first_file_in_name_order_holds_a_name_whichever_loaded_first() {
        let mut c: Claims<&str> = Claims::default();
        // The later file loads first and holds the name for now.
        assert_eq!(c.claim(Path::new("d/b.wasm"), "x", "b1"), ["x"]);
        assert_eq!(c.holder("x"), Some((&PathBuf::from("d/b.wasm"), &"b1")));
        assert_eq!(c.refused().count(), 0);
        // The earlier one loads: it takes the name, the later one is refused, naming it.
        c.claim(Path::new("d/a.wasm"), "x", "a1");
        assert_eq!(c.holder("x").map(|h| *h.1), Some("a1"));
        assert_eq!(names(c.refused()), [triple("d/b.wasm", "x", "d/a.wasm")]);
        let refused = c.refused().next().unwrap();
        assert!(refused.error().contains("d/a.wasm"), "{}", refused.error());
        assert!(refused.error().contains("\"x\""), "{}", refused.error());
        assert_eq!(c.holder_of_file(Path::new("d/b.wasm")), None);
        assert_eq!(c.of_file(Path::new("d/b.wasm")), Some(&"b1"));
        // A third, later still, is refused too.
        c.claim(Path::new("d/c.wasm"), "x", "c1");
        assert_eq!(
            names(c.refused()),
            [
                triple("d/b.wasm", "x", "d/a.wasm"),
                triple("d/c.wasm", "x", "d/a.wasm")
            ]
        );
    }

    #[test]
    fn when_the_holder_goes_the_next_in_order_holds_the_name() {
        let mut c: Claims<&str> = Claims::default();
        c.claim(Path::new("a.wasm"), "x", "a1");
        c.claim(Path::new("b.wasm"), "x", "b1");
        c.claim(Path::new("c.wasm"), "x", "c1");
        // Removed.
        assert_eq!(c.release(Path::new("a.wasm")), Some("x".to_string()));
        assert_eq!(c.holder("x").map(|h| *h.1), Some("b1"));
        assert_eq!(names(c.refused()), [triple("c.wasm", "x", "b.wasm")]);
        // Renamed to another driver: both names are touched.
        let touched = c.claim(Path::new("b.wasm"), "y", "b2");
        assert_eq!(touched, ["x", "y"]);
        assert_eq!(c.holder("x").map(|h| *h.1), Some("c1"));
        assert_eq!(c.holder("y").map(|h| *h.1), Some("b2"));
        assert_eq!(c.refused().count(), 0);
        // A new version of a holder replaces its claim.
        c.claim(Path::new("c.wasm"), "x", "c2");
        assert_eq!(c.holder("x").map(|h| *h.1), Some("c2"));
        assert_eq!(c.release(Path::new("c.wasm")), Some("x".to_string()));
        assert_eq!(c.holder("x"), None);
        assert_eq!(c.release(Path::new("c.wasm")), None);
        assert!(!c.by_name.contains_key("x"));
    }

    #[test]
    fn a_refused_file_keeps_the_time_it_was_refused() {
        let mut c: Claims<u8> = Claims::default();
        c.claim(Path::new("a.wasm"), "x", 1);
        c.claim(Path::new("b.wasm"), "x", 2);
        let since = c.refused().next().unwrap().since.to_string();
        std::thread::sleep(Duration::from_millis(2));
        c.claim(Path::new("c.wasm"), "x", 3);
        assert_eq!(c.refused().next().unwrap().since, since);
    }

    fn registry(dir: &Path) -> Arc<Registry> {
        let engine = wasmtime::Engine::default();
        let sandbox = Arc::new(Sandbox::new(engine.clone()).unwrap());
        let cache = ComponentCache::new(&engine, &dir.join("cache")).unwrap();
        Arc::new(Registry::new(
            &dir.join("drivers"),
            sandbox,
            cache,
            Arc::new(crate::wasm::imports::log::TracingSink),
        ))
    }

    fn drivers_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let drivers = dir.path().join("drivers");
        std::fs::create_dir(&drivers).unwrap();
        (dir, drivers)
    }

    #[tokio::test]
    async fn an_unchanged_file_is_not_read_again() {
        let (dir, drivers) = drivers_dir();
        let file = drivers.join("broken.wasm");
        std::fs::write(&file, b"not wasm").unwrap();
        let r = registry(dir.path());
        r.load_all().unwrap().await.unwrap();
        assert_eq!(r.loads(&file), 1);
        assert!(!r.is_loading());
        let failures = r.failures();
        assert_eq!(failures.len(), 1);
        assert!(
            failures[0].error.contains("not a WebAssembly file"),
            "{failures:?}"
        );

        // The watcher saw the host's own read, or the same change twice: nothing is read.
        r.reload(&file).await;
        r.reload(&file).await;
        assert_eq!(r.loads(&file), 1);
        assert!(!r.is_loading());

        // Rewritten (another size): read again.
        std::fs::write(&file, b"still not wasm").unwrap();
        r.reload(&file).await;
        assert_eq!(r.loads(&file), 2);
        // Same size, new modification time: read again.
        let f = std::fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        drop(f);
        r.reload(&file).await;
        assert_eq!(r.loads(&file), 3);
        // Replaced by another file (another inode) with the same size and time.
        let meta = std::fs::metadata(&file).unwrap();
        let other = drivers.join("other.tmp");
        std::fs::write(&other, b"STILL NOT WASM").unwrap();
        let f = std::fs::File::options().write(true).open(&other).unwrap();
        f.set_modified(meta.modified().unwrap()).unwrap();
        drop(f);
        std::fs::rename(&other, &file).unwrap();
        r.reload(&file).await;
        assert_eq!(r.loads(&file), 4);

        // Removed: forgotten, count included.
        std::fs::remove_file(&file).unwrap();
        r.reload(&file).await;
        assert_eq!(r.loads(&file), 0);
        assert!(r.failures().is_empty());
    }

    #[tokio::test]
    async fn a_load_that_never_ends_is_given_up() {
        let (dir, drivers) = drivers_dir();
        let file = drivers.join("stuck.wasm");
        std::fs::write(&file, b"\0asm").unwrap();
        let mut r = registry(dir.path());
        Arc::get_mut(&mut r).unwrap().load_timeout = Duration::from_millis(200);
        let stuck = {
            let (r, file) = (r.clone(), file.clone());
            tokio::spawn(async move {
                r.reload_with(&file, std::future::pending::<Result<LoadedDriver, _>>)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(r.is_loading());
        assert_eq!(r.loading()[0].file, file);
        tokio::time::timeout(Duration::from_secs(5), stuck)
            .await
            .expect("the load is given up")
            .unwrap();
        assert!(!r.is_loading());
        let failures = r.failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].error.contains("did not finish within 200ms"),
            "{failures:?}"
        );
        // A timed-out load is tried again on the next event, even for an unchanged file.
        r.reload(&file).await;
        assert_eq!(r.loads(&file), 2);
        assert!(
            !r.failures()[0].error.contains("did not finish"),
            "{:?}",
            r.failures()
        );
    }

    #[tokio::test]
    async fn bounded_passes_a_load_through_or_gives_it_up() {
        let done = bounded(Duration::from_secs(1), async {
            Ok::<_, DriverLoadError>(7)
        })
        .await;
        assert_eq!(done.unwrap(), 7);
        let failed = bounded(Duration::from_secs(1), async {
            Err::<(), _>(DriverLoadError::Info("boom".into()))
        })
        .await;
        assert!(matches!(failed, Err(ReloadError::Load(_))));
        let stuck = bounded(
            Duration::from_millis(10),
            std::future::pending::<Result<(), DriverLoadError>>(),
        )
        .await;
        assert!(matches!(stuck, Err(ReloadError::TimedOut(_))));
    }
}
