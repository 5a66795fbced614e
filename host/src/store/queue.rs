//! The durable event queue: one row per (event, driver). A row is written in the transaction
//! that causes it (a resource change, a pipeline step's end) and removed in the one that
//! stores its result. The queue owns its wake-up: [`enqueue`] marks the transaction, and
//! [`Store::write`] wakes the consumers waiting in [`Store::queue_changed`] once it commits.

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::futures::Notified;

use super::{Result, Store, Tx, runs};

/// An event to enqueue for one driver.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The driver that will receive it.
    pub driver: String,
    /// `create`, `update`, `delete` or `process`.
    pub event: String,
    /// The run id shared by every driver handling the same change.
    pub run_id: String,
    /// The message id (24 hex characters).
    pub message_id: String,
    /// The resource's type.
    pub resource_type: String,
    /// The resource's name.
    pub resource_name: String,
    /// The pipeline, if any.
    pub pipeline: Option<String>,
    /// The resource as JSON text.
    pub payload: String,
    /// The run's step this event is (1-based; every driver of a broadcast run has its own).
    pub step: u32,
    /// The driver whose write through the API client started the run, if one did; the
    /// run's later steps keep it (see [`queued_by`]).
    pub origin: Option<String>,
}

/// An event taken from the queue for delivery.
#[derive(Debug, Clone)]
pub struct QueuedEvent {
    /// The queue row.
    pub id: i64,
    /// The event itself.
    pub event: NewEvent,
    /// Which delivery this is, counting this one.
    pub attempt: u32,
}

/// A queue row, as settling needs it.
#[derive(Debug, Clone)]
pub struct QueueRow {
    /// The row.
    pub id: i64,
    /// The event.
    pub event: NewEvent,
    /// Deliveries so far.
    pub attempts: u32,
    /// Whether it is being delivered now.
    pub claimed: bool,
}

/// The columns [`event_at`] reads, in its order. A macro, not a constant, so that statements
/// are built with `concat!` once, not formatted on every call (settlements and claims run
/// them for every event).
macro_rules! event_columns {
    () => {
        "driver, event, run_id, message_id, resource_type, resource_name, pipeline, payload, \
         step, origin"
    };
}

/// The columns [`queue_row`] reads, in its order: a row's state, then `event_columns!`.
macro_rules! row_columns {
    () => {
        concat!("attempts, claimed, ", event_columns!())
    };
}

/// The event of a row selected with `event_columns!` from column `at` on.
fn event_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<NewEvent> {
    Ok(NewEvent {
        driver: r.get(at)?,
        event: r.get(at + 1)?,
        run_id: r.get(at + 2)?,
        message_id: r.get(at + 3)?,
        resource_type: r.get(at + 4)?,
        resource_name: r.get(at + 5)?,
        pipeline: r.get(at + 6)?,
        payload: r.get(at + 7)?,
        step: r.get(at + 8)?,
        origin: r.get(at + 9)?,
    })
}

impl Store {
    /// Resolves when a transaction that made events deliverable has committed. Create it
    /// (and `enable` it) before looking at the queue, so a commit between the look and the
    /// wait is not missed.
    pub fn queue_changed(&self) -> Notified<'_> {
        self.announce.queue_changed.notified()
    }

    /// Takes the oldest event for `driver` that is due at `now_ms` and not being delivered,
    /// marks it (and its run step) as being delivered and counts the attempt.
    #[cfg(test)]
    pub fn claim_next(&self, driver: &str, now_ms: i64) -> Result<Option<QueuedEvent>> {
        Ok(self.claim(driver, now_ms, 1)?.pop())
    }

    /// [`Store::claim_next`] for up to `n` events at once, oldest first, in one write.
    #[cfg(test)]
    pub fn claim(&self, driver: &str, now_ms: i64, n: usize) -> Result<Vec<QueuedEvent>> {
        self.write(|tx| claim(tx, driver, now_ms, n))
    }

    /// When the next not-yet-due event for `driver` becomes due, if any is waiting.
    pub fn next_due(&self, driver: &str) -> Result<Option<i64>> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT MIN(not_before) FROM queue WHERE driver = ?1 AND claimed = 0",
            )?
            .query_row([driver], |r| r.get(0))?)
        })
    }

    /// Puts a claimed event back, due again at `not_before_ms`; its step shows `retrying`.
    #[cfg(test)]
    pub fn release(&self, id: i64, not_before_ms: i64) -> Result<()> {
        self.write(|tx| release(tx, id, not_before_ms))
    }

    /// Unclaimed events for `driver` enqueued at or before `cutoff_ms`, oldest first.
    pub fn waiting_since(&self, driver: &str, cutoff_ms: i64) -> Result<Vec<i64>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id FROM queue WHERE driver = ?1 AND claimed = 0 AND enqueued_ms <= ?2
                 ORDER BY id",
            )?;
            Ok(stmt
                .query_map(params![driver, cutoff_ms], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Drivers with events waiting to be delivered.
    pub fn waiting_drivers(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT DISTINCT driver FROM queue WHERE claimed = 0")?;
            Ok(stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Events waiting or being delivered, by driver: `(driver, waiting, in delivery)`.
    pub fn queue_depths(&self) -> Result<Vec<(String, u64, u64)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT driver, SUM(claimed = 0), SUM(claimed = 1) FROM queue GROUP BY driver",
            )?;
            Ok(stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Events waiting or being delivered.
    #[cfg(test)]
    pub fn queue_depth(&self) -> Result<u64> {
        self.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM queue", [], |r| r.get(0))?))
    }
}

/// Enqueues events; the consumers are woken when the transaction commits.
pub fn enqueue(tx: &Tx<'_>, events: &[NewEvent]) -> Result<()> {
    let now = crate::clock::now_rfc3339();
    let now_ms = crate::clock::now_ms();
    let mut stmt = tx.prepare_cached(
        "INSERT INTO queue (driver, event, run_id, message_id, resource_type, resource_name,
                            pipeline, payload, enqueued_at, step, enqueued_ms, origin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for e in events {
        stmt.execute(params![
            e.driver,
            e.event,
            e.run_id,
            e.message_id,
            e.resource_type,
            e.resource_name,
            e.pipeline,
            e.payload,
            now,
            e.step,
            now_ms,
            e.origin
        ])?;
    }
    if !events.is_empty() {
        tx.wake_consumers();
    }
    Ok(())
}

/// Enqueues one event that was delivered `attempts` times before (an operator's redelivery
/// of a failed step), so that its next delivery counts as attempt `attempts + 1`.
pub fn enqueue_again(tx: &Tx<'_>, event: &NewEvent, attempts: u32) -> Result<()> {
    enqueue(tx, std::slice::from_ref(event))?;
    tx.execute(
        "UPDATE queue SET attempts = ?2 WHERE id = ?1",
        params![tx.last_insert_rowid(), attempts],
    )?;
    Ok(())
}

/// How many events in the queue (waiting or in flight) belong to runs that `driver`'s writes
/// through the API client started.
pub fn queued_by(conn: &Connection, driver: &str) -> Result<u64> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM queue WHERE origin = ?1")?
        .query_row([driver], |r| r.get(0))?)
}

/// Row `id` as `sql` (bound to the id as `?1`) returns it in `row_columns!`.
fn queue_row(conn: &Connection, sql: &str, id: i64) -> Result<Option<QueueRow>> {
    Ok(conn
        .prepare_cached(sql)?
        .query_row([id], |r| {
            Ok(QueueRow {
                id,
                attempts: r.get(0)?,
                claimed: r.get(1)?,
                event: event_at(r, 2)?,
            })
        })
        .optional()?)
}

/// A queue row by id.
pub fn row(conn: &Connection, id: i64) -> Result<Option<QueueRow>> {
    queue_row(
        conn,
        concat!("SELECT ", row_columns!(), " FROM queue WHERE id = ?1"),
        id,
    )
}

/// Removes a row and returns it, if it was there.
pub fn take(tx: &Tx<'_>, id: i64) -> Result<Option<QueueRow>> {
    queue_row(
        tx,
        concat!("DELETE FROM queue WHERE id = ?1 RETURNING ", row_columns!()),
        id,
    )
}

/// Removes a row.
pub fn remove(tx: &Tx<'_>, id: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM queue WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// The unclaimed rows for `driver` and the resource that a newer change may replace: entry
/// events (`create`, `update`, `delete`), not mid-pipeline `process` ones.
pub fn pending_entries(tx: &Tx<'_>, driver: &str, kind: &str, name: &str) -> Result<Vec<QueueRow>> {
    let ids: Vec<i64> = tx
        .prepare_cached(
            "SELECT id FROM queue
             WHERE driver = ?1 AND resource_type = ?2 AND resource_name = ?3
               AND claimed = 0 AND event <> 'process'",
        )?
        .query_map(params![driver, kind, name], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        rows.extend(row(tx, id)?);
    }
    Ok(rows)
}

/// The rows of a run, of the resource `kind`/`name`, that no consumer has taken. Found through
/// the resource's rows: an index by run would be one more tree written at a random place for
/// every event, for the rare cancellation.
pub fn unclaimed_of_run(
    tx: &Tx<'_>,
    kind: &str,
    name: &str,
    run_id: &str,
) -> Result<Vec<QueueRow>> {
    let ids: Vec<i64> = tx
        .prepare_cached(
            "SELECT id FROM queue
             WHERE resource_type = ?1 AND resource_name = ?2 AND run_id = ?3 AND claimed = 0",
        )?
        .query_map([kind, name, run_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        rows.extend(row(tx, id)?);
    }
    Ok(rows)
}

/// Puts a claimed event back, deliverable again at `not_before_ms`.
pub fn release(tx: &Tx<'_>, id: i64, not_before_ms: i64) -> Result<()> {
    tx.execute(
        "UPDATE queue SET claimed = 0, not_before = ?2 WHERE id = ?1",
        params![id, not_before_ms],
    )?;
    tx.execute(
        "UPDATE run_steps SET status = 'retrying'
         WHERE (run, step) IN (SELECT r.seq, q.step FROM queue q JOIN runs r ON r.run_id = q.run_id
                               WHERE q.id = ?1)",
        [id],
    )?;
    // A sleeping consumer computed its wait before this due time existed.
    tx.wake_consumers();
    Ok(())
}

/// Takes up to `n` events for `driver` that are due at `now_ms` and not being delivered,
/// oldest first: marks them (and their run steps) as being delivered and counts the attempts.
pub fn claim(tx: &Tx<'_>, driver: &str, now_ms: i64, n: usize) -> Result<Vec<QueuedEvent>> {
    // One statement marks them all and returns them (in no particular order: sorted below).
    let mut rows: Vec<(i64, QueuedEvent)> = tx
        .prepare_cached(concat!(
            "UPDATE queue SET claimed = 1, attempts = attempts + 1
             WHERE id IN (SELECT id FROM queue
                          WHERE driver = ?1 AND claimed = 0 AND not_before <= ?2
                          ORDER BY not_before, id LIMIT ?3)
             RETURNING not_before, id, attempts, ",
            event_columns!()
        ))?
        .query_map(params![driver, now_ms, n as i64], |r| {
            Ok((
                r.get(0)?,
                QueuedEvent {
                    id: r.get(1)?,
                    attempt: r.get(2)?,
                    event: event_at(r, 3)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    rows.sort_unstable_by_key(|(not_before, q)| (*not_before, q.id));
    for (_, q) in &rows {
        runs::step_started(tx, &q.event.run_id, q.event.step, q.attempt)?;
    }
    Ok(rows.into_iter().map(|(_, q)| q).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(run: &str) -> NewEvent {
        NewEvent {
            driver: "d".into(),
            event: "create".into(),
            run_id: run.into(),
            message_id: "m".into(),
            resource_type: "t".into(),
            resource_name: run.into(),
            pipeline: None,
            payload: "{}".into(),
            step: 1,
            origin: None,
        }
    }

    fn runs_of(claimed: &[QueuedEvent]) -> Vec<(&str, u32)> {
        claimed
            .iter()
            .map(|q| (q.event.run_id.as_str(), q.attempt))
            .collect()
    }

    #[test]
    fn a_claim_takes_due_events_oldest_first_and_counts_their_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db.sqlite")).unwrap();
        s.write(|tx| {
            enqueue(tx, &["a", "b", "c", "d"].map(event))?;
            tx.execute("UPDATE queue SET not_before = 50 WHERE run_id = 'b'", [])?;
            Ok(())
        })
        .unwrap();
        // Due first, then in the order they came; no more than asked for.
        assert_eq!(
            runs_of(&s.claim("d", 100, 3).unwrap()),
            [("a", 1), ("c", 1), ("d", 1)]
        );
        let b = s.claim("d", 100, 5).unwrap();
        assert_eq!(runs_of(&b), [("b", 1)]);
        assert!(s.claim("d", 100, 5).unwrap().is_empty(), "claimed twice");
        // Put back for later: not due before then, and its next delivery is its second.
        s.release(b[0].id, 200).unwrap();
        assert!(
            s.claim("d", 199, 5).unwrap().is_empty(),
            "claimed before due"
        );
        assert_eq!(runs_of(&s.claim("d", 200, 5).unwrap()), [("b", 2)]);
        assert!(s.claim("other", 200, 5).unwrap().is_empty());
    }
}
