//! The checkpointer thread: copies committed pages from the write-ahead log into the database
//! file beside the writer, so that the writer's commits only append to the log.
//!
//! SQLite checkpoints on the committing connection by default (every 1,000 pages of log):
//! the writer thread would stop taking writes while it reads the log back, writes the pages
//! into the database and syncs both files, which under load was a fifth of its time and
//! every create's latency. Here a thread of its own, on a connection of its own, runs a
//! passive checkpoint (it never blocks the writer or a reader) a moment after commits. The
//! writer keeps a checkpoint of its own at [`WRITER_BACKSTOP_PAGES`]: a log being appended to
//! without pause is only ever rewritten from its start once everything in it is in the
//! database and a write begins, which a passive checkpoint running beside the writes may never
//! leave it; the writer's own checkpoint, between its transactions, copies the little the
//! checkpointer has not and lets the next write start the log again. The log stays bounded
//! by that, and each checkpoint the writer still runs is a short one.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

/// Log pages after which the writer checkpoints itself (about 40 MiB of log at 4 KiB pages).
const WRITER_BACKSTOP_PAGES: u32 = 10_000;

/// How long the checkpointer lets commits gather after the first it is told of: one
/// checkpoint, and its two syncs, per pause rather than per commit, and each page the
/// commits keep changing (a tree's last leaf) copied once per pause. With `synchronous=NORMAL`
/// the log is synced at each checkpoint, so this is also about how much committed work a
/// power loss (not a crash of the process) may take. 20 ms took twice the CPU per event
/// (17-23 µs against 8-11 µs, embedded bench).
const PAUSE: Duration = Duration::from_millis(100);

/// Told by the writer that it committed; a full channel already holds the news.
pub(super) struct Kick(mpsc::SyncSender<()>);

impl Kick {
    /// Tells the checkpointer that the log has grown.
    pub(super) fn committed(&self) {
        let _ = self.0.try_send(());
    }
}

/// Starts the checkpointer on its own connection to `path`, and moves the checkpoint of the
/// `writer` connection to [`WRITER_BACKSTOP_PAGES`]; the checkpointer stops once the [`Kick`]
/// is dropped. `None` (the writer checkpoints alone, as SQLite does by default) when it cannot.
pub(super) fn start(
    path: &Path,
    writer: &Connection,
) -> Option<(Kick, std::thread::JoinHandle<()>)> {
    let conn = match Connection::open(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the store's checkpoint connection; the writer checkpoints alone");
            return None;
        }
    };
    let (kick, kicked) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || run(&conn, &kicked));
    match thread {
        Ok(handle) => {
            if let Err(e) = writer.pragma_update(None, "wal_autocheckpoint", WRITER_BACKSTOP_PAGES)
            {
                // SQLite's own 1,000 pages stay: more checkpoints on the writer, still bounded.
                tracing::warn!(error = %e, "cannot set the writer's checkpoint backstop");
            }
            Some((Kick(kick), handle))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the store's checkpointer; the writer checkpoints alone");
            None
        }
    }
}

fn run(conn: &Connection, kicked: &mpsc::Receiver<()>) {
    while kicked.recv().is_ok() {
        std::thread::sleep(PAUSE);
        // The commits of the pause are in this checkpoint.
        while kicked.try_recv().is_ok() {}
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
        if let Err(e) = done {
            // The writer's own checkpoint still bounds the log.
            tracing::debug!(error = %e, "a passive checkpoint failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::store::Store;

    /// A few hundred pages of log reach the database file without a checkpoint by the writer,
    /// whose own comes only after thousands (SQLite's, on the committing connection, after
    /// a thousand): the file holds them only if the checkpointer copied them.
    #[test]
    fn committed_pages_reach_the_database_file_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = Store::open(&path).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let page = "x".repeat(4096);
        for i in 0..300 {
            let json = format!("{{\"pad\":\"{page}\"}}");
            store
                .write(move |tx| {
                    tx.execute(
                        "INSERT INTO definitions (name, json) VALUES (?1, ?2)",
                        rusqlite::params![format!("d{i}"), json],
                    )?;
                    Ok(())
                })
                .unwrap();
        }
        let grown = before + 300 * 4096;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() < grown {
            assert!(
                Instant::now() < deadline,
                "the database file is still {} bytes, the log holds the writes",
                std::fs::metadata(&path).unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
