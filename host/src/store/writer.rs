//! The writer thread: the one thread that owns the store's write connection and commits.
//!
//! Writes arrive on a channel and run one after another on this thread, each in a savepoint
//! of the open transaction. Whatever arrived while a batch was running joins it, up to
//! [`MAX_BATCH`]; then the batch commits once and each caller is answered (group commit). A
//! caller is answered only after the commit that holds its write. A few writes (queue claims)
//! go ahead of those waiting on the channel: they run as soon as the running one is done.
//!
//! One thread that owns the connection, rather than a lock handed between the callers'
//! threads: each write would otherwise wake the thread of the next (a context switch per
//! write, two cores shared by dozens of threads), and the batch's callers would all be woken
//! to take the lock again after each commit.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::{Mutex, mpsc};

use rusqlite::Connection;
use tokio::sync::{Notify, broadcast};

use super::checkpoint::Kick;
use super::{RunEnded, StoreError, Tx, cached};

/// The most writes one transaction holds.
pub(super) const MAX_BATCH: usize = 256;

/// What a write's caller is told after the commit: `None` when it committed, or why not.
pub(super) type Answer<'a> = Box<dyn FnOnce(Option<&str>) + Send + 'a>;

/// A write: run in its savepoint (or told why it could not be), it returns whether it
/// succeeded (its savepoint is kept) and how to answer its caller once the batch is over.
pub(super) type WriteJob<'a> =
    Box<dyn FnOnce(Result<&Tx<'_>, StoreError>) -> (bool, Answer<'a>) + Send + 'a>;

/// A read on the writer's connection, for a store that has no read connections of its own.
pub(super) type ReadJob<'a> = Box<dyn FnOnce(&Connection) + Send + 'a>;

/// Work for the writer thread.
pub(super) enum Work {
    Write(WriteJob<'static>),
    Read(ReadJob<'static>),
    /// A write waits in [`Ahead`]: wakes the writer for it, if it has not run it already.
    Ahead,
}

/// Writes that run before the writes waiting on the channel, as soon as the one running is
/// done (see `Store::write_ahead`): a queue claim should not wait behind a batch's worth of
/// creates for the slot it fills. Each is announced by a [`Work::Ahead`] on the channel.
#[derive(Default)]
pub(super) struct Ahead(Mutex<VecDeque<WriteJob<'static>>>);

impl Ahead {
    pub(super) fn push(&self, job: WriteJob<'static>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(job);
    }

    fn pop(&self) -> Option<WriteJob<'static>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }
}

/// What the writer announces after a commit.
pub(super) struct Announce {
    /// Runs that reached a final status.
    pub ended: broadcast::Sender<RunEnded>,
    /// Woken after a commit that made events deliverable.
    pub queue_changed: Notify,
}

/// The writer thread's loop: until every sender is gone, take the next work, run what has
/// arrived meanwhile in the same transaction, commit, announce, answer, and tell the
/// checkpointer (if the store has one) that the log grew. `grouped` is false
/// for a store whose reads share this connection (in memory, read only): each write commits
/// alone, so a read never sees an uncommitted one.
pub(super) fn run(
    conn: Connection,
    work: mpsc::Receiver<Work>,
    grouped: bool,
    announce: &Announce,
    checkpoint: Option<&Kick>,
    ahead: &Ahead,
) {
    let limit = if grouped { MAX_BATCH } else { 1 };
    let mut next = work.recv().ok();
    while let Some(first) = next.take() {
        let mut batch = Batch::default();
        let mut item = Some(first);
        while let Some(w) = item.take() {
            match w {
                Work::Read(read) => {
                    // Reads see committed state only.
                    batch.finish(&conn, announce);
                    read(&conn);
                }
                Work::Write(job) => batch.run(&conn, job),
                Work::Ahead => {}
            }
            while batch.answers.len() < limit
                && batch.failed.is_none()
                && let Some(job) = ahead.pop()
            {
                batch.run(&conn, job);
            }
            if batch.answers.len() < limit && batch.failed.is_none() {
                item = work.try_recv().ok();
            }
        }
        batch.finish(&conn, announce);
        if let Some(kick) = checkpoint {
            kick.committed();
        }
        next = work.recv().ok();
    }
}

/// The open batch: its transaction, its callers' answers and what it announces.
#[derive(Default)]
struct Batch {
    open: bool,
    answers: Vec<Answer<'static>>,
    /// Why the batch was given up: every caller in it is told.
    failed: Option<String>,
    ended: Vec<RunEnded>,
    wake: bool,
}

impl Batch {
    /// Runs one write in a savepoint of the batch (beginning the batch if needed).
    fn run(&mut self, conn: &Connection, job: WriteJob<'static>) {
        if !self.open {
            if let Err(e) = cached(conn, "BEGIN IMMEDIATE") {
                self.answers.push(job(Err(e.into())).1);
                return;
            }
            self.open = true;
        }
        if let Err(e) = cached(conn, "SAVEPOINT job") {
            self.give_up(conn, &e);
            self.answers.push(job(Err(e.into())).1);
            return;
        }
        let tx = Tx {
            conn,
            ended: RefCell::default(),
            wake: Cell::new(false),
        };
        // A write that panics is rolled back like one that fails: the job catches the panic
        // and reports it as its error (see `Store::write`).
        let (ok, answer) = job(Ok(&tx));
        let Tx { ended, wake, .. } = tx;
        let closed = if ok {
            cached(conn, "RELEASE job")
        } else {
            cached(conn, "ROLLBACK TO job").and_then(|()| cached(conn, "RELEASE job"))
        };
        self.answers.push(answer);
        if let Err(e) = closed {
            self.give_up(conn, &e);
            return;
        }
        if ok {
            self.ended.extend(ended.into_inner());
            self.wake |= wake.get();
        }
    }

    /// Rolls the batch back: none of its writes is written.
    fn give_up(&mut self, conn: &Connection, e: &rusqlite::Error) {
        // If even the rollback fails, SQLite has ended the transaction itself.
        let _ = conn.execute_batch("ROLLBACK");
        self.open = false;
        self.failed = Some(e.to_string());
        self.ended.clear();
        self.wake = false;
    }

    /// Commits the batch, announces what it ended, and answers its callers.
    fn finish(&mut self, conn: &Connection, announce: &Announce) {
        if self.open {
            self.open = false;
            if let Err(e) = cached(conn, "COMMIT") {
                self.give_up(conn, &e);
            }
        }
        if self.failed.is_none() {
            for e in self.ended.drain(..) {
                // No subscriber is not an error.
                let _ = announce.ended.send(e);
            }
            if std::mem::take(&mut self.wake) {
                announce.queue_changed.notify_waiters();
            }
        }
        let failed = self.failed.take();
        for answer in self.answers.drain(..) {
            answer(failed.as_deref());
        }
    }
}
