//! Watching the drivers directory: changes are applied once the directory has been quiet for
//! a moment, each file on its own, as at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use tokio_util::sync::CancellationToken;

use super::{Registry, is_driver_file};

/// How long the directory must be quiet before changes are applied, so that a file being
/// copied in is loaded once, whole.
const DEBOUNCE: Duration = Duration::from_millis(300);

impl Registry {
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
}
