//! The embedded store: one SQLite file holding resource definitions, pipelines, resources and
//! their versions, the durable event queue, runs and their results, and log lines.
//!
//! Reads are methods of [`Store`]. Every write is one transaction, [`Store::write`], over the
//! SQL of the modules below, so that what must be atomic is (a resource, its run and the
//! events it triggers; a result, the removal of its event and the run's next step). What a
//! write means for runs and pipelines is decided above the SQL, by the embedded backend's
//! pipeline rules. The database runs in WAL mode with `synchronous=NORMAL`: a committed
//! transaction survives a crash of the host process; the last few may be lost if the machine
//! itself loses power.

pub mod logs;
pub mod queue;
pub mod resources;
pub mod runs;
mod schema;

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;
use tokio::sync::{Notify, broadcast};

pub use logs::{LogFilter, StoredLog};
pub use queue::QueuedEvent;
pub use runs::{NewRun, NewStep, RunEnded, RunFilter, RunRecord, RunStatus, StoredResult};

/// A store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row did not decode.
    #[error("stored JSON is corrupt: {0}")]
    Json(#[from] serde_json::Error),
}

/// A result type for store calls.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The SQLite store.
pub struct Store {
    conn: Mutex<Connection>,
    /// Runs that reached a final status, announced after the transaction that ended them
    /// commits (log streams end on it).
    ended: broadcast::Sender<RunEnded>,
    /// Woken after a transaction that made events deliverable commits (see [`queue`]).
    queue_changed: Notify,
}

/// One write transaction. Besides SQL it collects what the commit must announce: runs that
/// ended, and whether the queue's consumers must look again. [`queue::enqueue`] marks the
/// latter itself, so no writer can forget it.
pub struct Tx<'c> {
    tx: rusqlite::Transaction<'c>,
    ended: RefCell<Vec<RunEnded>>,
    wake: Cell<bool>,
}

impl<'c> std::ops::Deref for Tx<'c> {
    type Target = rusqlite::Transaction<'c>;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl Tx<'_> {
    /// Announces `ended` once the transaction commits.
    pub fn run_ended(&self, ended: RunEnded) {
        self.ended.borrow_mut().push(ended);
    }

    /// Wakes the queue's consumers once the transaction commits.
    pub fn wake_consumers(&self) {
        self.wake.set(true);
    }
}

impl Store {
    /// Opens (creating or upgrading if needed) the store at `path`. Events that were being
    /// delivered when the host stopped become deliverable again.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        schema::open(&conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            ended: broadcast::channel(1024).0,
            queue_changed: Notify::new(),
        })
    }

    /// Opens an existing store to read only, touching nothing: no schema change, no reset of
    /// events being delivered. Safe beside a host that has the store open.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Store {
            conn: Mutex::new(conn),
            ended: broadcast::channel(1).0,
            queue_changed: Notify::new(),
        })
    }

    /// Follows runs as they reach a final status.
    pub fn subscribe_ended(&self) -> broadcast::Receiver<RunEnded> {
        self.ended.subscribe()
    }

    /// Runs `f` in one transaction and commits it; on an error nothing is written. After the
    /// commit, the runs it ended are announced and, if it made events deliverable, the
    /// queue's consumers are woken.
    pub fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let (out, ended, wake) = {
            let mut conn = self.conn();
            let tx = Tx {
                tx: conn.transaction()?,
                ended: RefCell::default(),
                wake: Cell::new(false),
            };
            let out = f(&tx)?;
            let Tx { tx, ended, wake } = tx;
            tx.commit()?;
            (out, ended, wake)
        };
        for e in ended.into_inner() {
            // No subscriber is not an error.
            let _ = self.ended.send(e);
        }
        if wake.get() {
            self.queue_changed.notify_waiters();
        }
        Ok(out)
    }

    /// Reads through the connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.conn())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}
