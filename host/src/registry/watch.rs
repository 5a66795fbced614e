//! Watching the drivers directory: changes are applied once the directory has been quiet for
//! a moment, each file on its own, as at start.
//!
//! Only events that can mean a file changed count: on Linux the watcher also reports every
//! open, read and close of a file, the host's own reads of the drivers among them, and
//! reloading on those would have an idle host read, hash and instantiate every driver again
//! and again. A reload of a file whose size, modification time and inode did not change is
//! skipped as well (see [`Registry::reload`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::notify::{self, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Registry, is_driver_file};

/// How long the directory must be quiet before changes are applied, so that a file being
/// copied in is loaded once, whole.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// The longest changes wait for the directory to be quiet: a file written to without pause
/// is still loaded now and then.
const MAX_WAIT: Duration = Duration::from_secs(3);

/// Whether an event of this kind can mean that a file changed: anything but an access (an
/// open, a read, a close without writing), which is what the host's own loads cause.
fn is_change(kind: &EventKind) -> bool {
    !kind.is_access()
}

impl Registry {
    /// Watches the directory until `shutdown`, applying changes as they settle.
    pub fn watch(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) if is_change(&event.kind) => {
                    for path in event.paths.into_iter().filter(|p| is_driver_file(p)) {
                        // The receiver is gone only once the host stops watching.
                        let _ = tx.send(path);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "watching drivers_dir failed"),
            })?;
        watcher.watch(&self.dir, RecursiveMode::NonRecursive)?;
        tokio::spawn(async move {
            // The watcher stops watching when dropped, so this task owns it.
            let _watcher = watcher;
            while let Some(paths) = next_batch(&mut rx, &shutdown).await {
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

/// Waits for a changed file, then until no other change has come for [`DEBOUNCE`] (at most
/// [`MAX_WAIT`] after the first), and returns the files changed meanwhile, each once, in
/// order. `None` once `shutdown` is cancelled or the watcher is gone.
async fn next_batch(
    rx: &mut UnboundedReceiver<PathBuf>,
    shutdown: &CancellationToken,
) -> Option<BTreeSet<PathBuf>> {
    let first = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return None,
        p = rx.recv() => p?,
    };
    let mut batch = BTreeSet::from([first]);
    let until = Instant::now() + MAX_WAIT;
    loop {
        let quiet = DEBOUNCE.min(until.saturating_duration_since(Instant::now()));
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            p = rx.recv() => match p {
                Some(p) => { batch.insert(p); }
                None => return Some(batch),
            },
            _ = tokio::time::sleep(quiet) => return Some(batch),
        }
        if Instant::now() >= until {
            return Some(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind};

    use super::*;

    #[test]
    fn reads_are_not_changes() {
        for access in [
            AccessKind::Open(AccessMode::Any),
            AccessKind::Read,
            AccessKind::Close(AccessMode::Read),
            AccessKind::Any,
        ] {
            assert!(!is_change(&EventKind::Access(access)), "{access:?}");
        }
        for change in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
            EventKind::Other,
        ] {
            assert!(is_change(&change), "{change:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn changes_are_batched_until_the_directory_is_quiet() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        let sender = tokio::spawn(async move {
            for p in ["b.wasm", "a.wasm", "b.wasm"] {
                tx.send(PathBuf::from(p)).unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tx
        });
        let batch = next_batch(&mut rx, &shutdown).await.unwrap();
        let batch: Vec<_> = batch.into_iter().collect();
        assert_eq!(batch, [PathBuf::from("a.wasm"), PathBuf::from("b.wasm")]);
        // The last change came at 200 ms; then 300 ms of quiet.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_millis(550),
            "{took:?}"
        );

        // A file written to without pause is applied after MAX_WAIT.
        let tx = sender.await.unwrap();
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            loop {
                if tx.send(PathBuf::from("c.wasm")).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let batch = next_batch(&mut rx, &shutdown).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() >= MAX_WAIT, "{:?}", started.elapsed());
        assert!(
            started.elapsed() < MAX_WAIT + DEBOUNCE,
            "{:?}",
            started.elapsed()
        );

        shutdown.cancel();
        assert!(next_batch(&mut rx, &shutdown).await.is_none());
        drop(rx);
        writer.await.unwrap();
    }
}
