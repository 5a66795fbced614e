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
pub mod retention;
pub mod runs;
mod schema;

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

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
    /// The write panicked (or its task did): nothing of it was written.
    #[error("database error: the write did not finish: {0}")]
    Task(String),
    /// The transaction holding this write (with others) failed to commit: none of them was
    /// written.
    #[error("database error: the commit failed: {0}")]
    Commit(String),
}

/// A result type for store calls.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The SQLite store.
pub struct Store {
    writer: Mutex<Writer>,
    /// Writers waiting for `writer`: while there is one, a writer leaves the transaction open
    /// for it instead of committing (group commit).
    queued: AtomicUsize,
    /// Signalled after each commit (or failed commit) of a batch.
    batch_done: Condvar,
    /// Idle read connections; empty for a store that cannot have them (in memory, read-only),
    /// whose reads go through the writer's connection and whose writes commit one by one.
    readers: Mutex<Vec<Connection>>,
    /// Where to open more readers; `None` when there are none.
    path: Option<std::path::PathBuf>,
    /// Runs that reached a final status, announced after the transaction that ended them
    /// commits (log streams end on it).
    ended: broadcast::Sender<RunEnded>,
    /// Woken after a transaction that made events deliverable commits (see [`queue`]).
    queue_changed: Notify,
}

/// The write connection and the batch of writes open on it.
struct Writer {
    conn: Connection,
    /// Whether a transaction is open (a batch has writes not yet committed).
    open: bool,
    /// The number of the open batch, or of the last one.
    batch: u64,
    /// The last batch committed, or given up.
    done: u64,
    /// The batch whose commit failed last, with why.
    failed: Option<(u64, String)>,
    /// Writes in the open batch.
    jobs: usize,
    /// What the open batch announces once committed.
    ended: Vec<RunEnded>,
    wake: bool,
}

/// Runs a statement without parameters or rows from the statement cache.
fn cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Statements each connection keeps prepared: every statement the store runs, with room (the
/// list queries add one per combination of filters).
const STATEMENTS: usize = 256;

/// The most writes one transaction holds.
const MAX_BATCH: usize = 256;

/// Read connections kept open between reads.
const MAX_IDLE_READERS: usize = 8;

/// One write (a savepoint within the batch's transaction). Besides SQL it collects what the
/// commit must announce: runs that ended, and whether the queue's consumers must look again.
/// [`queue::enqueue`] marks the latter itself, so no writer can forget it.
pub struct Tx<'c> {
    conn: &'c Connection,
    ended: RefCell<Vec<RunEnded>>,
    wake: Cell<bool>,
}

impl<'c> std::ops::Deref for Tx<'c> {
    type Target = Connection;

    fn deref(&self) -> &Self::Target {
        self.conn
    }
}

impl Tx<'_> {
    /// `Connection::execute` through the statement cache: a write's statements are the same
    /// few every time, and parsing them each time cost more than running them.
    pub fn execute<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute(params)
    }

    /// `Connection::query_row` through the statement cache.
    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.conn.prepare_cached(sql)?.query_row(params, f)
    }

    /// Announces `ended` once the transaction commits.
    pub fn run_ended(&self, ended: RunEnded) {
        self.ended.borrow_mut().push(ended);
    }

    /// Wakes the queue's consumers once the transaction commits.
    pub fn wake_consumers(&self) {
        self.wake.set(true);
    }
}

/// The `WHERE` conditions of a list query: `column = ?n` for each filter that is set, numbered
/// from `first`, with their values in order. A query built from the filters present (not
/// `(?1 IS NULL OR column = ?1)`) is one SQLite can answer from an index; each combination is
/// its own cached statement.
fn equal_to<'a>(filters: &[(&str, Option<&'a str>)], first: usize) -> (Vec<String>, Vec<&'a str>) {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    for (column, value) in filters {
        if let Some(v) = value {
            values.push(*v);
            conditions.push(format!("{column} = ?{}", first + values.len() - 1));
        }
    }
    (conditions, values)
}

impl Store {
    /// Opens (creating or upgrading if needed) the store at `path`. Events that were being
    /// delivered when the host stopped become deliverable again.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        schema::open(&conn)?;
        let in_memory = path.as_os_str().is_empty() || path == Path::new(":memory:");
        Ok(Store::with(
            conn,
            (!in_memory).then(|| path.to_path_buf()),
            1024,
        ))
    }

    /// Opens an existing store to read only, touching nothing: no schema change, no reset of
    /// events being delivered. Safe beside a host that has the store open.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Store::with(conn, None, 1))
    }

    fn with(conn: Connection, path: Option<std::path::PathBuf>, announcements: usize) -> Store {
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        Store {
            writer: Mutex::new(Writer {
                conn,
                open: false,
                batch: 0,
                done: 0,
                failed: None,
                jobs: 0,
                ended: Vec::new(),
                wake: false,
            }),
            queued: AtomicUsize::new(0),
            batch_done: Condvar::new(),
            readers: Mutex::new(Vec::new()),
            path,
            ended: broadcast::channel(announcements).0,
            queue_changed: Notify::new(),
        }
    }

    /// Follows runs as they reach a final status.
    pub fn subscribe_ended(&self) -> broadcast::Receiver<RunEnded> {
        self.ended.subscribe()
    }

    /// Runs `f` as one atomic write and returns once it is committed: on an error from `f`
    /// nothing of it is written, and the caller gets the error. After the commit, the runs it
    /// ended are announced and, if it made events deliverable, the queue's consumers are woken.
    ///
    /// Writes that arrive together share a transaction (group commit): a write that finds
    /// another writer waiting leaves the transaction open for it, and the last one in line
    /// commits for all of them (at most [`MAX_BATCH`]). Each write is a savepoint within it,
    /// so one that fails is rolled back alone; a commit that fails fails every write of its
    /// batch, none of which is then written. A caller is answered only after its commit.
    pub fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut w = self.writer();
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let out = self.run_job(&mut w, f);
        let batch = w.batch;
        let grouped = self.path.is_some();
        if !w.open {
            // The batch could not begin, or was given up (its writers are told why).
            drop(w);
            self.batch_done.notify_all();
            return out;
        }
        if grouped && w.jobs < MAX_BATCH && self.queued.load(Ordering::SeqCst) > 0 {
            // Another writer is waiting for the connection: it, or the last after it, commits.
            while w.done < batch {
                w = self.batch_done.wait(w).unwrap_or_else(|p| p.into_inner());
            }
            return match &w.failed {
                Some((b, why)) if *b == batch => Err(StoreError::Commit(why.clone())),
                _ => out,
            };
        }
        let committed = Self::commit(&mut w);
        let ended = std::mem::take(&mut w.ended);
        let wake = std::mem::take(&mut w.wake);
        drop(w);
        self.batch_done.notify_all();
        committed?;
        for e in ended {
            // No subscriber is not an error.
            let _ = self.ended.send(e);
        }
        if wake {
            self.queue_changed.notify_waiters();
        }
        out
    }

    /// [`Store::write`] off the async workers, on the blocking pool: the caller's task waits
    /// for its batch's commit without holding a worker thread, so writes from many tasks
    /// arrive together and share a commit.
    pub async fn write_off<T, F>(self: &std::sync::Arc<Self>, f: F) -> Result<T>
    where
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write(f))
            .await
            .unwrap_or_else(|e| Err(StoreError::Task(e.to_string())))
    }

    /// Runs one job in a savepoint of the open batch (beginning one if none is open).
    fn run_job<T>(&self, w: &mut Writer, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        if !w.open {
            w.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            w.open = true;
            w.batch += 1;
            w.jobs = 0;
        }
        if let Err(e) = cached(&w.conn, "SAVEPOINT job") {
            Self::give_up(w, &e);
            return Err(e.into());
        }
        let tx = Tx {
            conn: &w.conn,
            ended: RefCell::default(),
            wake: Cell::new(false),
        };
        // A write that panics is rolled back like one that fails: unwinding past here would
        // leave its half-done savepoint in the open batch, for the next writer to commit.
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&tx)))
            .unwrap_or_else(|_| Err(StoreError::Task("the write panicked".into())));
        let Tx { ended, wake, .. } = tx;
        let closed = match &out {
            Ok(_) => cached(&w.conn, "RELEASE job"),
            Err(_) => {
                cached(&w.conn, "ROLLBACK TO job").and_then(|()| cached(&w.conn, "RELEASE job"))
            }
        };
        if let Err(e) = closed {
            Self::give_up(w, &e);
            return Err(e.into());
        }
        w.jobs += 1;
        if out.is_ok() {
            w.ended.extend(ended.into_inner());
            w.wake |= wake.get();
        }
        out
    }

    /// Commits the open batch; on failure rolls it back and marks it failed for its waiters.
    fn commit(w: &mut Writer) -> Result<()> {
        let result = cached(&w.conn, "COMMIT");
        if let Err(e) = &result {
            Self::give_up(w, e);
        } else {
            w.open = false;
            w.done = w.batch;
        }
        result.map_err(Into::into)
    }

    /// Rolls the open batch back and tells its waiters why.
    fn give_up(w: &mut Writer, e: &rusqlite::Error) {
        // If even the rollback fails, SQLite has ended the transaction itself.
        let _ = w.conn.execute_batch("ROLLBACK");
        w.open = false;
        w.done = w.batch;
        w.failed = Some((w.batch, e.to_string()));
        w.ended.clear();
        w.wake = false;
    }

    /// Reads through a connection of its own (WAL lets readers run beside the writer), which
    /// sees what is committed and nothing of an open batch.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let Some(path) = &self.path else {
            // No readers: writes commit one by one, so the writer's connection holds nothing
            // uncommitted between them.
            return f(&self.writer().conn);
        };
        let idle = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c.pragma_update(None, "query_only", true)?;
                c.set_prepared_statement_cache_capacity(STATEMENTS);
                c
            }
        };
        let out = f(&conn);
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        // A few are kept for the next reads; a burst's extra ones are closed.
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A write that panics is rolled back to its savepoint before the lock is let go (see
        // `run_job`), so a poisoned lock is still safe to use.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definitions(s: &Store) -> Vec<String> {
        s.read(|c| {
            let mut stmt = c.prepare("SELECT name FROM definitions ORDER BY name")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .unwrap()
    }

    fn insert_definition(tx: &Tx, name: &str) -> Result<()> {
        tx.execute(
            "INSERT INTO definitions (name, json) VALUES (?1, '{}')",
            [name],
        )?;
        Ok(())
    }

    #[test]
    fn a_write_that_panics_leaves_nothing_and_the_next_commits_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let out: Result<()> = s.write(|tx| {
            insert_definition(tx, "half")?;
            panic!("a bug in a write");
        });
        assert!(matches!(out, Err(StoreError::Task(_))), "{out:?}");
        s.write(|tx| insert_definition(tx, "whole")).unwrap();
        assert_eq!(definitions(&s), ["whole"]);
    }

    #[test]
    fn a_write_that_fails_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let out: Result<()> = s.write(|tx| {
            insert_definition(tx, "half")?;
            tx.execute("INSERT INTO no_such_table VALUES (1)", [])?;
            Ok(())
        });
        assert!(out.is_err());
        s.write(|tx| insert_definition(tx, "whole")).unwrap();
        assert_eq!(definitions(&s), ["whole"]);
    }
}
