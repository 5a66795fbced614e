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

mod checkpoint;
pub mod logs;
pub mod queue;
pub mod resources;
pub mod retention;
pub mod runs;
mod schema;
mod writer;

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::Connection;
use tokio::sync::broadcast;

use writer::{Ahead, Announce, ReadJob, Work, WriteJob};

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
    /// Work for the writer thread, which owns the write connection (see [`writer`]); `None`
    /// only while the store is dropped.
    work: Option<mpsc::Sender<Work>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The checkpointer thread (see [`checkpoint`]), for a store in a file; it stops after
    /// the writer, which holds what wakes it.
    checkpointer: Option<std::thread::JoinHandle<()>>,
    announce: Arc<Announce>,
    /// Idle read connections; empty for a store that cannot have them (in memory, read-only),
    /// whose reads go to the writer thread and whose writes commit one by one.
    readers: Mutex<Vec<Connection>>,
    /// Where to open more readers; `None` when there are none.
    path: Option<std::path::PathBuf>,
    /// Definitions as last read; `None` for a store that others write (read-only).
    definitions: Option<resources::DefinitionCache>,
    /// Writes to run before those waiting in line (see [`Store::write_ahead`]).
    ahead: Arc<Ahead>,
}

/// Runs a statement without parameters or rows from the statement cache.
fn cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Statements each connection keeps prepared: every statement the store runs, with room (the
/// list queries add one per combination of filters).
const STATEMENTS: usize = 256;

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
        let mut store = Store::with(conn, (!in_memory).then(|| path.to_path_buf()), 1024);
        // Every write of this file is this store's.
        store.definitions = Some(resources::DefinitionCache::default());
        Ok(store)
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
        let announce = Arc::new(Announce {
            ended: broadcast::channel(announcements).0,
            queue_changed: tokio::sync::Notify::new(),
        });
        let (work, jobs) = mpsc::channel();
        let grouped = path.is_some();
        let shared = announce.clone();
        let ahead = Arc::new(Ahead::default());
        let writer_ahead = ahead.clone();
        let (kick, checkpointer) = path
            .as_deref()
            .and_then(|path| checkpoint::start(path, &conn))
            .unzip();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer::run(conn, jobs, grouped, &shared, kick.as_ref(), &writer_ahead);
            });
        let writer = match writer {
            Ok(handle) => Some(handle),
            Err(e) => {
                // Without a thread every write and read fails with this error (the work's
                // receiver is gone), which the callers report.
                tracing::error!(error = %e, "cannot start the store's writer thread");
                None
            }
        };
        Store {
            work: Some(work),
            writer,
            checkpointer,
            announce,
            readers: Mutex::new(Vec::new()),
            path,
            definitions: None,
            ahead,
        }
    }

    /// Follows runs as they reach a final status.
    pub fn subscribe_ended(&self) -> broadcast::Receiver<RunEnded> {
        self.announce.ended.subscribe()
    }

    /// Runs `f` as one atomic write and returns once it is committed: on an error from `f`
    /// nothing of it is written, and the caller gets the error. After the commit, the runs it
    /// ended are announced and, if it made events deliverable, the queue's consumers are woken.
    ///
    /// Writes run on the store's writer thread, one after another. Those that arrive while
    /// others run share their transaction (group commit, at most [`writer::MAX_BATCH`]), each
    /// in a savepoint of its own, so one that fails is rolled back alone; a commit that fails
    /// fails every write of its batch, none of which is then written. A caller is answered
    /// only after its commit. This blocks the calling thread until then; async code uses
    /// [`Store::write_off`].
    pub fn write<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Tx<'_>) -> Result<T> + Send,
        T: Send,
    {
        let (answer, answered) = mpsc::sync_channel(1);
        let job = write_job(
            f,
            move |out| {
                let _ = answer.send(out);
            },
            Answered::AtCommit,
        );
        // SAFETY: the job borrows from this frame (`'_` of `f` and `T`); it is made `'static`
        // only to cross the channel. This call does not return before the writer thread is
        // done with it: `answered` yields only after the job ran and its answer was sent, or
        // once both were dropped (the job drops `f` before the answer's sender, see
        // `write_job`), so nothing it borrows is used after this frame ends. The writer runs
        // or drops every job it receives (it stops only once every sender is gone and the
        // channel is empty).
        let job: WriteJob<'static> =
            unsafe { std::mem::transmute::<WriteJob<'_>, WriteJob<'static>>(job) };
        self.send(Work::Write(job))?;
        answered.recv().unwrap_or_else(|_| Err(writer_gone()))
    }

    /// [`Store::write`] for async callers: the task waits for its batch's commit without
    /// holding a worker thread, so writes from many tasks arrive together and share a commit.
    pub async fn write_off<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.write_soon(f).await
    }

    /// Hands `f` to the writer now and returns what waits for its commit. Writes run in the
    /// order they are handed over, so a write handed over after this one sees it, whether or
    /// not anyone waits for the commit.
    pub fn write_soon<T, F>(&self, f: F) -> impl Future<Output = Result<T>> + Send + 'static
    where
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.hand_over(f, Answered::AtCommit, false)
    }

    /// [`Store::write_soon`], run before the writes waiting in line (as soon as the one
    /// running is done) and answered as soon as `f` has run in its savepoint, before the
    /// commit: for a write whose effect only this process acts on and that the next start
    /// undoes anyway, such as a queue claim (claims are reset when the store is opened), so
    /// that its caller waits neither for the writes handed over before it nor for a commit it
    /// does not need. It sees what the writes that ran before it wrote, committed or not, and
    /// the writes handed over after it see it. If the commit then fails, the write is not
    /// stored (a claimed event stays deliverable, and may be delivered again: at least once);
    /// the failure is logged. A store whose writes commit one by one runs it in line.
    pub fn write_ahead<T, F>(&self, f: F) -> impl Future<Output = Result<T>> + Send + 'static
    where
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.hand_over(f, Answered::WhenRun, self.path.is_some())
    }

    /// Hands `f` to the writer now (before the writes in line when `ahead`); the future
    /// yields its outcome when `when` says.
    fn hand_over<T, F>(
        &self,
        f: F,
        when: Answered,
        ahead: bool,
    ) -> impl Future<Output = Result<T>> + Send + 'static
    where
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = write_job(
            f,
            move |out| {
                let _ = answer.send(out);
            },
            when,
        );
        let sent = if ahead {
            self.ahead.push(job);
            self.send(Work::Ahead)
        } else {
            self.send(Work::Write(job))
        };
        async move {
            sent?;
            answered.await.unwrap_or_else(|_| Err(writer_gone()))
        }
    }

    fn send(&self, work: Work) -> Result<()> {
        self.work
            .as_ref()
            .and_then(|w| w.send(work).ok())
            .ok_or_else(writer_gone)
    }

    /// Reads through a connection of its own (WAL lets readers run beside the writer), which
    /// sees what is committed and nothing of an open batch.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T> + Send) -> Result<T>
    where
        T: Send,
    {
        let Some(path) = &self.path else {
            return self.read_on_writer(f);
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
                schema::planned_once(&c)?;
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

    /// A read of a store without read connections, on the writer thread between commits (its
    /// writes commit one by one, so it sees nothing uncommitted).
    fn read_on_writer<T: Send>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send,
    ) -> Result<T> {
        let (answer, answered) = mpsc::sync_channel(1);
        let pending = Pending { f, answer };
        let job: ReadJob<'_> = Box::new(move |conn: &Connection| {
            // The whole of `pending`, so `f` is dropped before `answer` (field order).
            let pending = pending;
            let Pending { f, answer } = pending;
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
                .unwrap_or_else(|_| Err(StoreError::Task("the read panicked".into())));
            let _ = answer.send(out);
        });
        // SAFETY: as in `Store::write`: this call returns only once the job ran or was dropped.
        let job: ReadJob<'static> =
            unsafe { std::mem::transmute::<ReadJob<'_>, ReadJob<'static>>(job) };
        self.send(Work::Read(job))?;
        answered.recv().unwrap_or_else(|_| Err(writer_gone()))
    }
}

impl Drop for Store {
    /// Closes the writer's channel and waits for it to finish what it holds (its last commit,
    /// then the connection's close), so that the file is whole once the store is gone.
    fn drop(&mut self) {
        drop(self.work.take());
        if let Some(writer) = self.writer.take() {
            // The last reference may be dropped by a write's own closure on the writer thread.
            if writer.thread().id() != std::thread::current().id() {
                let _ = writer.join();
                if let Some(checkpointer) = self.checkpointer.take() {
                    let _ = checkpointer.join();
                }
            }
        }
    }
}

fn writer_gone() -> StoreError {
    StoreError::Task("the store's writer thread has stopped".into())
}

/// A job and what answers its caller, in this order: a job dropped without running drops `f`
/// (and what it borrows) before `answer`, whose drop is what lets a waiting caller return.
struct Pending<F, A> {
    f: F,
    answer: A,
}

/// When a write's caller gets its outcome.
#[derive(Clone, Copy)]
enum Answered {
    /// After the commit of the batch that holds it (a failed commit fails it).
    AtCommit,
    /// As soon as it has run in its savepoint; a failed commit after that is only logged.
    WhenRun,
}

/// The writer's job for `f`: runs it (a panic is its error), and answers with `reply` when
/// `when` says: once the batch is over, with the commit's failure if the batch failed, or as
/// soon as it has run.
fn write_job<'a, T, F, R>(f: F, reply: R, when: Answered) -> WriteJob<'a>
where
    F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'a,
    R: FnOnce(Result<T>) + Send + 'a,
    T: Send + 'a,
{
    let pending = Pending { f, answer: reply };
    Box::new(move |tx: Result<&Tx<'_>>| {
        // The whole of `pending`, so `f` is dropped before `answer` (field order).
        let pending = pending;
        let Pending { f, answer } = pending;
        let out = match tx {
            // A write that panics is rolled back like one that fails: unwinding past here
            // would leave its half-done savepoint in the open batch, for the next writer to
            // commit.
            Ok(tx) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(tx)))
                .unwrap_or_else(|_| Err(StoreError::Task("the write panicked".into()))),
            Err(e) => Err(e),
        };
        let ok = out.is_ok();
        let after: writer::Answer<'a> = match when {
            Answered::AtCommit => Box::new(move |failed: Option<&str>| {
                let out = match failed {
                    Some(why) if ok => Err(StoreError::Commit(why.to_string())),
                    _ => out,
                };
                answer(out);
            }),
            Answered::WhenRun => {
                answer(out);
                Box::new(move |failed: Option<&str>| {
                    if let (true, Some(why)) = (ok, failed) {
                        tracing::warn!(error = %why, "a write answered before its commit was not committed");
                    }
                })
            }
        };
        (ok, after)
    })
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
    fn an_uncommitted_write_is_answered_before_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let (open_first, first_waits) = mpsc::channel::<()>();
        let (open_last, last_waits) = mpsc::channel::<()>();
        // The first write holds the writer until the other two are queued, so all three
        // share one batch; the last holds it open after the uncommitted one ran.
        let first = s.write_soon(move |_| Ok(first_waits.recv().ok()));
        let early = s.write_ahead(|tx| insert_definition(tx, "early"));
        let last = s.write_soon(move |tx| {
            last_waits.recv().ok();
            insert_definition(tx, "late")
        });
        open_first.send(()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let answered = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), early).await
        });
        let seen_meanwhile = definitions(&s);
        // Released before any assertion, so that a failure does not leave the writer held.
        open_last.send(()).unwrap();
        assert!(
            matches!(answered, Ok(Ok(()))),
            "not answered while its batch was open: {answered:?}"
        );
        assert!(seen_meanwhile.is_empty(), "answered before the commit");
        futures::executor::block_on(last).unwrap();
        futures::executor::block_on(first).unwrap();
        assert_eq!(definitions(&s), ["early", "late"]);
    }

    #[test]
    fn a_write_ahead_runs_before_the_writes_in_line_and_they_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let (open_first, first_waits) = mpsc::channel::<()>();
        // The first write holds the writer while the others are handed over.
        let first = s.write_soon(move |_| Ok(first_waits.recv().ok()));
        let in_line = s.write_soon(|tx| insert_definition(tx, "in-line"));
        let ahead = s.write_ahead(|tx| {
            let seen: i64 = tx.query_row("SELECT COUNT(*) FROM definitions", [], |r| r.get(0))?;
            insert_definition(tx, "ahead")?;
            Ok(seen)
        });
        let after = s.write_soon(|tx| {
            Ok(tx.query_row(
                "SELECT COUNT(*) FROM definitions WHERE name = 'ahead'",
                [],
                |r| r.get::<_, i64>(0),
            )?)
        });
        open_first.send(()).unwrap();
        futures::executor::block_on(first).unwrap();
        assert_eq!(futures::executor::block_on(ahead).unwrap(), 0);
        futures::executor::block_on(in_line).unwrap();
        assert_eq!(futures::executor::block_on(after).unwrap(), 1);
        assert_eq!(definitions(&s), ["ahead", "in-line"]);
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
