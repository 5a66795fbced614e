//! The embedded store: one SQLite file holding resource definitions, resources and their
//! versions, the durable event queue, results and log lines.
//!
//! Every write that must be atomic (a resource, its run and the events it triggers; a result,
//! the ack of its event and the next pipeline step) is one transaction. The database runs in WAL mode with
//! `synchronous=NORMAL`: a committed transaction survives a crash of the host process; the
//! last few may be lost if the machine itself loses power.

mod runs;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::broadcast;

use crate::conveyor::{Log, Resource, ResourceDefinition};

pub use runs::{
    NewRun, NewStep, RunEnded, RunFilter, RunRecord, RunStatus, StepRecord, StepStatus,
};

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

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS definitions (
    name TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resources (
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (type, name)
);
CREATE TABLE IF NOT EXISTS resource_versions (
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (type, name, version)
);
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    driver TEXT NOT NULL,
    event TEXT NOT NULL,
    run_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_name TEXT NOT NULL,
    pipeline TEXT,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before INTEGER NOT NULL DEFAULT 0,
    claimed INTEGER NOT NULL DEFAULT 0,
    enqueued_at TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 1,
    enqueued_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_ready ON queue (driver, claimed, not_before);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    driver TEXT NOT NULL,
    message_id TEXT NOT NULL,
    event TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_name TEXT NOT NULL,
    success INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    failure_kind TEXT,
    message TEXT NOT NULL,
    data TEXT,
    attempts INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS results_run ON results (run_id);
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    driver TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    message TEXT NOT NULL,
    labels TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_run ON logs (run_id, driver);
CREATE TABLE IF NOT EXISTS pipelines (
    name TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    resource_type TEXT NOT NULL,
    resource_name TEXT NOT NULL,
    pipeline TEXT,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_resource ON runs (resource_type, resource_name);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE TABLE IF NOT EXISTS run_steps (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    driver TEXT NOT NULL,
    event TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    started_at TEXT,
    finished_at TEXT,
    PRIMARY KEY (run_id, step)
);
"#;

/// Columns added after the first release of the schema: `(table, column, declaration)`.
/// `CREATE TABLE IF NOT EXISTS` leaves an older table as it is, so they are added here.
const ADDED_COLUMNS: [(&str, &str, &str); 3] = [
    ("queue", "step", "INTEGER NOT NULL DEFAULT 1"),
    ("queue", "enqueued_ms", "INTEGER NOT NULL DEFAULT 0"),
    ("results", "step", "INTEGER NOT NULL DEFAULT 1"),
];

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

/// A driver's final result for one event, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredResult {
    /// The run.
    pub run_id: String,
    /// The driver.
    pub driver: String,
    /// The message that carried the event.
    pub message_id: String,
    /// The event name.
    pub event: String,
    /// The resource's type.
    pub resource_type: String,
    /// The resource's name.
    pub resource_name: String,
    /// Conveyor's `success`.
    pub success: bool,
    /// `success`, `failure`, or the failure kind that ended it (`trap`, `wall-timeout`, …).
    pub outcome: String,
    /// For a sandbox failure, its kind.
    pub failure_kind: Option<String>,
    /// The result's message.
    pub message: String,
    /// The result's data, as JSON.
    pub data: serde_json::Value,
    /// Deliveries it took.
    pub attempts: u32,
    /// When the last attempt started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// The run's step it is the result of (1-based). The store sets it from the event's
    /// queue row when it stores the result.
    pub step: u32,
}

/// A stored log line and its sequence number (its position in the store, which is also
/// chronological order).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLog {
    /// The line's position; strictly increasing.
    pub seq: i64,
    /// The line.
    pub log: Log,
}

/// Which log lines to read; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only this run.
    pub run_id: Option<String>,
    /// Only this driver.
    pub driver: Option<String>,
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Only lines after this sequence number.
    pub after_seq: Option<i64>,
}

/// The SQLite store.
pub struct Store {
    conn: Mutex<Connection>,
    /// Runs that reached a final status, announced after the transaction that ended them
    /// commits (log streams end on it).
    ended: broadcast::Sender<RunEnded>,
}

impl Store {
    /// Opens (creating if needed) the store at `path`. Events that were being delivered when
    /// the host stopped become deliverable again.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        for (table, column, decl) in ADDED_COLUMNS {
            let exists: bool = conn.query_row(
                &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |r| r.get(0),
            )?;
            if !exists {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
            }
        }
        conn.execute("UPDATE queue SET claimed = 0 WHERE claimed = 1", [])?;
        conn.execute(
            "UPDATE run_steps SET status = 'queued' WHERE status = 'running'",
            [],
        )?;
        Ok(Store {
            conn: Mutex::new(conn),
            ended: broadcast::channel(1024).0,
        })
    }

    /// Follows runs as they reach a final status.
    pub fn subscribe_ended(&self) -> broadcast::Receiver<RunEnded> {
        self.ended.subscribe()
    }

    fn announce(&self, ended: Vec<RunEnded>) {
        for e in ended {
            // No subscriber is not an error.
            let _ = self.ended.send(e);
        }
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- resource definitions ----

    /// Reads a definition.
    pub fn definition(&self, name: &str) -> Result<Option<ResourceDefinition>> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT json FROM definitions WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    /// Inserts a definition; `false` when the name is taken.
    pub fn insert_definition(&self, def: &ResourceDefinition) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO definitions (name, json) VALUES (?1, ?2)",
            params![def.name, serde_json::to_string(def)?],
        )?;
        Ok(n == 1)
    }

    /// Inserts or replaces a definition; `true` when it already existed.
    pub fn upsert_definition(&self, def: &ResourceDefinition) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let existed = tx
            .query_row(
                "SELECT 1 FROM definitions WHERE name = ?1",
                [&def.name],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        tx.execute(
            "INSERT OR REPLACE INTO definitions (name, json) VALUES (?1, ?2)",
            params![def.name, serde_json::to_string(def)?],
        )?;
        tx.commit()?;
        Ok(existed)
    }

    /// Replaces the definition stored under `name`; `false` when there is none.
    pub fn replace_definition(&self, name: &str, def: &ResourceDefinition) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE definitions SET json = ?2 WHERE name = ?1",
            params![name, serde_json::to_string(def)?],
        )?;
        Ok(n == 1)
    }

    /// Deletes a definition; `false` when there was none.
    pub fn delete_definition(&self, name: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM definitions WHERE name = ?1", [name])?;
        Ok(n == 1)
    }

    // ---- resources ----

    /// Reads the current state of a resource.
    pub fn resource(&self, kind: &str, name: &str) -> Result<Option<Resource>> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT json FROM resources WHERE type = ?1 AND name = ?2",
                [kind, name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    /// Reads one version snapshot of a resource.
    pub fn resource_version(
        &self,
        kind: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<Resource>> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT json FROM resource_versions WHERE type = ?1 AND name = ?2 AND version = ?3",
                [kind, name, version],
                |r| r.get(0),
            )
            .optional()?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    /// Inserts a new resource, its version snapshot, its run and the run's first events in
    /// one transaction; `false` (and nothing written) when the name is taken for that type.
    pub fn insert_resource(&self, res: &Resource, run: &NewRun) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let json = serde_json::to_string(res)?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO resources (type, name, json) VALUES (?1, ?2, ?3)",
            params![res.resource, res.name, json],
        )?;
        if n == 0 {
            return Ok(false);
        }
        write_snapshot(&tx, res, &json)?;
        let ended = runs::start_run(&tx, run)?;
        tx.commit()?;
        drop(conn);
        self.announce(ended);
        Ok(true)
    }

    /// Replaces a resource's state through `change`, which gets the stored copy and returns
    /// the new one, and starts the run `run(new)`, in one transaction. `None` when the
    /// resource does not exist.
    pub fn update_resource(
        &self,
        kind: &str,
        name: &str,
        change: impl FnOnce(Resource) -> Resource,
        run: impl FnOnce(&Resource) -> NewRun,
    ) -> Result<Option<Resource>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(current) = read_resource(&tx, kind, name)? else {
            return Ok(None);
        };
        let new = change(current);
        let json = serde_json::to_string(&new)?;
        tx.execute(
            "UPDATE resources SET json = ?3 WHERE type = ?1 AND name = ?2",
            params![kind, name, json],
        )?;
        write_snapshot(&tx, &new, &json)?;
        let ended = runs::start_run(&tx, &run(&new))?;
        tx.commit()?;
        drop(conn);
        self.announce(ended);
        Ok(Some(new))
    }

    /// Deletes a resource's current state (its version snapshots stay) and starts the run
    /// `run(deleted)`, in one transaction. `None` when there was none.
    pub fn delete_resource(
        &self,
        kind: &str,
        name: &str,
        run: impl FnOnce(&Resource) -> NewRun,
    ) -> Result<Option<Resource>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(current) = read_resource(&tx, kind, name)? else {
            return Ok(None);
        };
        tx.execute(
            "DELETE FROM resources WHERE type = ?1 AND name = ?2",
            [kind, name],
        )?;
        let ended = runs::start_run(&tx, &run(&current))?;
        tx.commit()?;
        drop(conn);
        self.announce(ended);
        Ok(Some(current))
    }

    // ---- the event queue ----

    /// Takes the oldest event for `driver` that is due at `now_ms` and not being delivered,
    /// marks it (and its run step) as being delivered and counts the attempt.
    pub fn claim_next(&self, driver: &str, now_ms: i64) -> Result<Option<QueuedEvent>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let row = tx
            .query_row(
                "SELECT id, driver, event, run_id, message_id, resource_type, resource_name,
                        pipeline, payload, attempts, step
                 FROM queue WHERE driver = ?1 AND claimed = 0 AND not_before <= ?2
                 ORDER BY not_before, id LIMIT 1",
                params![driver, now_ms],
                |r| {
                    Ok(QueuedEvent {
                        id: r.get(0)?,
                        event: NewEvent {
                            driver: r.get(1)?,
                            event: r.get(2)?,
                            run_id: r.get(3)?,
                            message_id: r.get(4)?,
                            resource_type: r.get(5)?,
                            resource_name: r.get(6)?,
                            pipeline: r.get(7)?,
                            payload: r.get(8)?,
                            step: r.get(10)?,
                        },
                        attempt: r.get::<_, u32>(9)? + 1,
                    })
                },
            )
            .optional()?;
        if let Some(q) = &row {
            tx.execute(
                "UPDATE queue SET claimed = 1, attempts = ?2 WHERE id = ?1",
                params![q.id, q.attempt],
            )?;
            runs::step_started(&tx, &q.event.run_id, q.event.step, q.attempt)?;
        }
        tx.commit()?;
        Ok(row)
    }

    /// When the next not-yet-due event for `driver` becomes due, if any is waiting.
    pub fn next_due(&self, driver: &str) -> Result<Option<i64>> {
        Ok(self.conn().query_row(
            "SELECT MIN(not_before) FROM queue WHERE driver = ?1 AND claimed = 0",
            [driver],
            |r| r.get(0),
        )?)
    }

    /// Puts a claimed event back, due again at `not_before_ms`; its step shows `retrying`.
    pub fn release(&self, id: i64, not_before_ms: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE queue SET claimed = 0, not_before = ?2 WHERE id = ?1",
            params![id, not_before_ms],
        )?;
        tx.execute(
            "UPDATE run_steps SET status = 'retrying'
             WHERE (run_id, step) IN (SELECT run_id, step FROM queue WHERE id = ?1)",
            [id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Stores a final result, removes its event from the queue and moves its run on (the
    /// next pipeline step is enqueued, or the run ends), in one transaction. The result is
    /// also recorded on the resource as `metadata["driverresults.<driver>"]`, as Conveyor's
    /// pipeline engine does, without bumping its version. `false` when the event was no
    /// longer queued (nothing is written then).
    pub fn complete(&self, id: i64, result: &StoredResult) -> Result<bool> {
        self.settle_step(id, runs::StepEnd::Result(result))
    }

    /// Removes an event its driver does not handle: the step is `skipped` and the run moves
    /// on as after a success.
    pub fn skip(&self, id: i64, reason: &str) -> Result<bool> {
        self.settle_step(id, runs::StepEnd::Skipped(reason))
    }

    fn settle_step(&self, id: i64, end: runs::StepEnd<'_>) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(row) = runs::queue_row(&tx, id)? else {
            return Ok(false);
        };
        let ended = settle_in(&tx, id, &row, &end)?;
        tx.commit()?;
        drop(conn);
        self.announce(ended);
        Ok(true)
    }

    /// Ends every unclaimed event for `driver` enqueued at or before `cutoff_ms` with a
    /// failed result saying `reason` (its driver is not loaded). Returns how many.
    pub fn fail_waiting(&self, driver: &str, cutoff_ms: i64, reason: &str) -> Result<usize> {
        let ids: Vec<i64> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT id FROM queue WHERE driver = ?1 AND claimed = 0 AND enqueued_ms <= ?2
                 ORDER BY id",
            )?;
            stmt.query_map(params![driver, cutoff_ms], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        let mut failed = 0;
        for id in ids {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            // Checked again inside the transaction: the driver may have been loaded and
            // claimed the event since.
            let Some(row) = runs::queue_row(&tx, id)?.filter(|r| !r.claimed) else {
                continue;
            };
            let now = crate::clock::now_rfc3339();
            let result = StoredResult {
                run_id: row.run_id.clone(),
                driver: row.driver.clone(),
                message_id: row.message_id.clone(),
                event: row.event.clone(),
                resource_type: row.resource_type.clone(),
                resource_name: row.resource_name.clone(),
                success: false,
                outcome: "driver-not-loaded".into(),
                failure_kind: None,
                message: reason.to_string(),
                data: serde_json::Value::Null,
                attempts: row.attempts,
                started_at: now.clone(),
                finished_at: now,
                step: row.step,
            };
            let ended = settle_in(&tx, id, &row, &runs::StepEnd::Result(&result))?;
            tx.commit()?;
            drop(conn);
            self.announce(ended);
            failed += 1;
        }
        Ok(failed)
    }

    /// Drivers with events waiting to be delivered.
    pub fn waiting_drivers(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT DISTINCT driver FROM queue WHERE claimed = 0")?;
        let drivers = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(drivers)
    }

    /// Removes an event that can never be delivered (its payload is unusable): its step and
    /// run fail with `reason`.
    pub fn discard(&self, id: i64, reason: &str) -> Result<bool> {
        self.settle_step(id, runs::StepEnd::Rejected(reason))
    }

    /// Events waiting or being delivered, by driver: `(driver, waiting, in delivery)`.
    pub fn queue_depths(&self) -> Result<Vec<(String, u64, u64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT driver, SUM(claimed = 0), SUM(claimed = 1) FROM queue GROUP BY driver",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Events waiting or being delivered.
    pub fn queue_depth(&self) -> Result<u64> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM queue", [], |r| r.get(0))?)
    }

    // ---- results ----

    /// The final results of a run, in the order they were stored.
    pub fn results(&self, run_id: &str) -> Result<Vec<StoredResult>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT run_id, driver, message_id, event, resource_type, resource_name, success,
                    outcome, failure_kind, message, data, attempts, started_at, finished_at, step
             FROM results WHERE run_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok((
                StoredResult {
                    run_id: r.get(0)?,
                    driver: r.get(1)?,
                    message_id: r.get(2)?,
                    event: r.get(3)?,
                    resource_type: r.get(4)?,
                    resource_name: r.get(5)?,
                    success: r.get(6)?,
                    outcome: r.get(7)?,
                    failure_kind: r.get(8)?,
                    message: r.get(9)?,
                    data: serde_json::Value::Null,
                    attempts: r.get(11)?,
                    started_at: r.get(12)?,
                    finished_at: r.get(13)?,
                    step: r.get(14)?,
                },
                r.get::<_, Option<String>>(10)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut result, data) = row?;
            if let Some(data) = data {
                result.data = serde_json::from_str(&data)?;
            }
            out.push(result);
        }
        Ok(out)
    }

    // ---- logs ----

    /// Appends log lines in one transaction and returns them with their sequence numbers.
    pub fn append_logs(&self, lines: Vec<Log>) -> Result<Vec<StoredLog>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(lines.len());
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO logs (run_id, driver, pipeline, timestamp, message, labels)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for log in lines {
                stmt.execute(params![
                    log.runid,
                    log.driver,
                    log.pipeline,
                    log.timestamp,
                    log.message,
                    serde_json::to_string(&log.labels)?,
                ])?;
                out.push(StoredLog {
                    seq: tx.last_insert_rowid(),
                    log,
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Reads log lines in chronological (sequence) order.
    pub fn logs(&self, filter: &LogFilter) -> Result<Vec<StoredLog>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, run_id, driver, pipeline, timestamp, message, labels FROM logs
             WHERE (?1 IS NULL OR run_id = ?1) AND (?2 IS NULL OR driver = ?2)
               AND (?3 IS NULL OR pipeline = ?3) AND seq > ?4
             ORDER BY seq",
        )?;
        let rows = stmt.query_map(
            params![
                filter.run_id,
                filter.driver,
                filter.pipeline,
                filter.after_seq.unwrap_or(0)
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Log {
                        runid: r.get(1)?,
                        driver: r.get(2)?,
                        pipeline: r.get(3)?,
                        timestamp: r.get(4)?,
                        message: r.get(5)?,
                        labels: Default::default(),
                    },
                    r.get::<_, String>(6)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, mut log, labels) = row?;
            log.labels = serde_json::from_str(&labels)?;
            out.push(StoredLog { seq, log });
        }
        Ok(out)
    }
}

fn read_resource(
    tx: &rusqlite::Transaction<'_>,
    kind: &str,
    name: &str,
) -> Result<Option<Resource>> {
    let json: Option<String> = tx
        .query_row(
            "SELECT json FROM resources WHERE type = ?1 AND name = ?2",
            [kind, name],
            |r| r.get(0),
        )
        .optional()?;
    Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
}

fn write_snapshot(tx: &rusqlite::Transaction<'_>, res: &Resource, json: &str) -> Result<()> {
    let version = res.metadata.get("version").cloned().unwrap_or_default();
    tx.execute(
        "INSERT OR REPLACE INTO resource_versions (type, name, version, json) VALUES (?1, ?2, ?3, ?4)",
        params![res.resource, res.name, version, json],
    )?;
    Ok(())
}

/// Stores how a queued event ended, removes it and moves its run on.
fn settle_in(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    row: &runs::QueueRow,
    end: &runs::StepEnd<'_>,
) -> Result<Vec<RunEnded>> {
    if let runs::StepEnd::Result(result) = end {
        insert_result(tx, result, row.step)?;
        record_driver_result(tx, result)?;
    }
    tx.execute("DELETE FROM queue WHERE id = ?1", [id])?;
    runs::advance(tx, row, end)
}

/// Stores a result as the result of `step` (the queue row's step, whatever the caller set).
fn insert_result(tx: &rusqlite::Transaction<'_>, result: &StoredResult, step: u32) -> Result<()> {
    tx.execute(
        "INSERT INTO results (run_id, driver, message_id, event, resource_type, resource_name,
            success, outcome, failure_kind, message, data, attempts, started_at, finished_at, step)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            result.run_id,
            result.driver,
            result.message_id,
            result.event,
            result.resource_type,
            result.resource_name,
            result.success,
            result.outcome,
            result.failure_kind,
            result.message,
            serde_json::to_string(&result.data)?,
            result.attempts,
            result.started_at,
            result.finished_at,
            step,
        ],
    )?;
    Ok(())
}

/// Writes `metadata["driverresults.<driver>"]` on the resource (not for a delete: the
/// resource is gone).
fn record_driver_result(tx: &rusqlite::Transaction<'_>, result: &StoredResult) -> Result<()> {
    if result.event == "delete" {
        return Ok(());
    }
    if let Some(mut res) = read_resource(tx, &result.resource_type, &result.resource_name)? {
        let entry = crate::conveyor::DriverResult {
            success: result.success,
            message: result.message.clone(),
            data: result.data.clone(),
            driver: result.driver.clone(),
        };
        res.metadata.insert(
            format!("driverresults.{}", result.driver),
            serde_json::to_string(&entry)?,
        );
        tx.execute(
            "UPDATE resources SET json = ?3 WHERE type = ?1 AND name = ?2",
            params![res.resource, res.name, serde_json::to_string(&res)?],
        )?;
    }
    Ok(())
}

fn enqueue(tx: &rusqlite::Transaction<'_>, events: &[NewEvent]) -> Result<()> {
    let now = crate::clock::now_rfc3339();
    let now_ms = crate::clock::now_ms();
    let mut stmt = tx.prepare_cached(
        "INSERT INTO queue (driver, event, run_id, message_id, resource_type, resource_name,
                            pipeline, payload, enqueued_at, step, enqueued_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
            now_ms
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        (dir, store)
    }

    fn resource(name: &str) -> Resource {
        serde_json::from_value(serde_json::json!({
            "id": "x", "name": name, "resource": "pipe",
            "metadata": {"version": "1"}, "spec": {}
        }))
        .unwrap()
    }

    fn event(driver: &str, name: &str) -> NewRun {
        run("R", name, None, "create", &[driver])
    }

    fn run(id: &str, name: &str, pipeline: Option<&str>, event: &str, drivers: &[&str]) -> NewRun {
        NewRun {
            run_id: id.into(),
            resource_type: "pipe".into(),
            resource_name: name.into(),
            pipeline: pipeline.map(Into::into),
            event: event.into(),
            payload: serde_json::to_string(&resource(name)).unwrap(),
            steps: drivers
                .iter()
                .map(|d| NewStep {
                    name: d.to_string(),
                    driver: d.to_string(),
                })
                .collect(),
            failure: None,
        }
    }

    fn result_for(q: &QueuedEvent, success: bool, message: &str) -> StoredResult {
        StoredResult {
            run_id: q.event.run_id.clone(),
            driver: q.event.driver.clone(),
            message_id: q.event.message_id.clone(),
            event: q.event.event.clone(),
            resource_type: q.event.resource_type.clone(),
            resource_name: q.event.resource_name.clone(),
            success,
            outcome: if success { "success" } else { "failure" }.into(),
            failure_kind: None,
            message: message.into(),
            data: serde_json::json!({"from": q.event.driver}),
            attempts: q.attempt,
            started_at: "t0".into(),
            finished_at: "t1".into(),
            step: 0,
        }
    }

    #[test]
    fn a_pipeline_runs_its_steps_in_order_even_with_a_driver_twice() {
        let (_d, s) = store();
        let mut ended = s.subscribe_ended();
        s.insert_resource(
            &resource("a"),
            &run("R", "a", Some("p"), "create", &["x", "y", "x"]),
        )
        .unwrap();
        assert!(
            s.claim_next("y", 0).unwrap().is_none(),
            "step 2 waits for step 1"
        );
        let mut seen = Vec::new();
        for driver in ["x", "y", "x"] {
            let q = s
                .claim_next(driver, 0)
                .unwrap()
                .expect("the step is queued");
            seen.push((q.event.step, q.event.event.clone()));
            if q.event.step == 2 {
                let sent: Resource = serde_json::from_str(&q.event.payload).unwrap();
                assert!(sent.metadata["driverresults.x"].contains("\"from\":\"x\""));
            }
            assert!(s.complete(q.id, &result_for(&q, true, "ok")).unwrap());
        }
        assert_eq!(
            seen,
            [
                (1, "create".into()),
                (2, "process".into()),
                (3, "process".into())
            ]
        );
        assert_eq!(s.queue_depth().unwrap(), 0);
        let run = s.run("R").unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.steps.len(), 3);
        assert!(run.steps.iter().all(|st| st.result.is_some()));
        assert_eq!(ended.try_recv().unwrap().status, RunStatus::Succeeded);
    }

    #[test]
    fn a_failed_step_ends_the_pipeline() {
        let (_d, s) = store();
        s.insert_resource(
            &resource("a"),
            &run("R", "a", Some("p"), "create", &["x", "y", "z"]),
        )
        .unwrap();
        let q = s.claim_next("x", 0).unwrap().unwrap();
        s.complete(q.id, &result_for(&q, true, "ok")).unwrap();
        let q = s.claim_next("y", 0).unwrap().unwrap();
        s.complete(q.id, &result_for(&q, false, "broken")).unwrap();
        assert!(s.claim_next("z", 0).unwrap().is_none());
        let run = s.run("R").unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.message, "step 2 (y) failed: broken");
        assert_eq!(run.steps[2].status, StepStatus::Skipped);
    }

    #[test]
    fn pending_duplicates_coalesce_into_the_newest() {
        let (_d, s) = store();
        s.insert_resource(&resource("a"), &run("R1", "a", None, "create", &["x"]))
            .unwrap();
        s.update_resource(
            "pipe",
            "a",
            |r| r,
            |_| run("R2", "a", None, "update", &["x"]),
        )
        .unwrap();
        assert_eq!(s.queue_depth().unwrap(), 1);
        let q = s.claim_next("x", 0).unwrap().unwrap();
        assert_eq!(q.event.run_id, "R2");
        assert_eq!(q.event.event, "create", "x never saw the resource's create");
        let old = s.run("R1").unwrap().unwrap();
        assert_eq!(old.status, RunStatus::Superseded);
        assert_eq!(old.message, "superseded by run R2");
        // A claimed event is not coalesced.
        s.update_resource(
            "pipe",
            "a",
            |r| r,
            |_| run("R3", "a", None, "update", &["x"]),
        )
        .unwrap();
        assert_eq!(s.queue_depth().unwrap(), 2);
    }

    #[test]
    fn a_store_from_before_runs_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE queue (id INTEGER PRIMARY KEY AUTOINCREMENT, driver TEXT NOT NULL,
                    event TEXT NOT NULL, run_id TEXT NOT NULL, message_id TEXT NOT NULL,
                    resource_type TEXT NOT NULL, resource_name TEXT NOT NULL, pipeline TEXT,
                    payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                    not_before INTEGER NOT NULL DEFAULT 0, claimed INTEGER NOT NULL DEFAULT 0,
                    enqueued_at TEXT NOT NULL);
                 CREATE TABLE results (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
                    driver TEXT NOT NULL, message_id TEXT NOT NULL, event TEXT NOT NULL,
                    resource_type TEXT NOT NULL, resource_name TEXT NOT NULL,
                    success INTEGER NOT NULL, outcome TEXT NOT NULL, failure_kind TEXT,
                    message TEXT NOT NULL, data TEXT, attempts INTEGER NOT NULL,
                    started_at TEXT NOT NULL, finished_at TEXT NOT NULL);
                 INSERT INTO results (run_id, driver, message_id, event, resource_type,
                    resource_name, success, outcome, message, data, attempts, started_at,
                    finished_at)
                 VALUES ('OLD', 'd1', 'm', 'create', 'pipe', 'a', 0, 'failure', 'no', 'null', 1,
                    't0', 't1');
                 INSERT INTO queue (driver, event, run_id, message_id, resource_type,
                    resource_name, payload, enqueued_at)
                 VALUES ('d1', 'create', 'OLD2', 'm', 'pipe', 'b', '{}', 't');",
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let old = s.run("OLD").unwrap().unwrap();
        assert_eq!(old.status, RunStatus::Failed);
        assert_eq!(old.steps[0].result.as_ref().unwrap().message, "no");
        let q = s.claim_next("d1", 0).unwrap().unwrap();
        assert_eq!(q.event.step, 1);
        assert!(s.complete(q.id, &result_for(&q, true, "ok")).unwrap());
        assert_eq!(s.run("OLD2").unwrap().unwrap().status, RunStatus::Succeeded);
    }

    #[test]
    fn events_of_a_missing_driver_fail_their_run() {
        let (_d, s) = store();
        s.insert_resource(
            &resource("a"),
            &run("R", "a", Some("p"), "create", &["gone", "y"]),
        )
        .unwrap();
        assert_eq!(s.waiting_drivers().unwrap(), ["gone"]);
        assert_eq!(
            s.fail_waiting("gone", 0, "driver gone is not loaded")
                .unwrap(),
            0
        );
        assert_eq!(
            s.fail_waiting("gone", i64::MAX, "driver gone is not loaded")
                .unwrap(),
            1
        );
        let run = s.run("R").unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(
            run.message,
            "step 1 (gone) failed: driver gone is not loaded"
        );
        assert_eq!(s.queue_depth().unwrap(), 0);
    }

    #[test]
    fn resource_insert_is_atomic_with_its_events() {
        let (_d, s) = store();
        assert!(
            s.insert_resource(&resource("a"), &event("d1", "a"))
                .unwrap()
        );
        assert!(
            !s.insert_resource(&resource("a"), &event("d1", "a"))
                .unwrap()
        );
        assert_eq!(s.queue_depth().unwrap(), 1);
        assert!(s.resource_version("pipe", "a", "1").unwrap().is_some());
    }

    #[test]
    fn claimed_events_come_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let s = Store::open(&path).unwrap();
            s.insert_resource(&resource("a"), &event("d1", "a"))
                .unwrap();
            let q = s.claim_next("d1", 0).unwrap().unwrap();
            assert_eq!(q.attempt, 1);
            assert!(s.claim_next("d1", 0).unwrap().is_none());
        }
        let s = Store::open(&path).unwrap();
        let q = s.claim_next("d1", 0).unwrap().unwrap();
        assert_eq!(
            q.attempt, 2,
            "a delivery interrupted by a stop counts as an attempt"
        );
    }

    #[test]
    fn release_delays_and_complete_removes() {
        let (_d, s) = store();
        s.insert_resource(&resource("a"), &event("d1", "a"))
            .unwrap();
        let q = s.claim_next("d1", 0).unwrap().unwrap();
        s.release(q.id, 1_000).unwrap();
        assert!(s.claim_next("d1", 999).unwrap().is_none());
        assert_eq!(s.next_due("d1").unwrap(), Some(1_000));
        let q = s.claim_next("d1", 1_000).unwrap().unwrap();
        let result = StoredResult {
            run_id: "R".into(),
            driver: "d1".into(),
            message_id: "m".into(),
            event: "create".into(),
            resource_type: "pipe".into(),
            resource_name: "a".into(),
            success: true,
            outcome: "success".into(),
            failure_kind: None,
            message: "ok".into(),
            data: serde_json::json!({"k": 1}),
            attempts: q.attempt,
            started_at: "t0".into(),
            finished_at: "t1".into(),
            step: 1,
        };
        s.complete(q.id, &result).unwrap();
        assert_eq!(s.queue_depth().unwrap(), 0);
        assert_eq!(s.results("R").unwrap(), vec![result]);
        let res = s.resource("pipe", "a").unwrap().unwrap();
        assert!(res.metadata["driverresults.d1"].contains("\"success\":true"));
        assert_eq!(res.version(), 1);
    }

    #[test]
    fn logs_filter_and_order() {
        let (_d, s) = store();
        let line = |run: &str, driver: &str, msg: &str| Log {
            runid: run.into(),
            driver: driver.into(),
            pipeline: String::new(),
            timestamp: "t".into(),
            message: msg.into(),
            labels: Default::default(),
        };
        let stored = s
            .append_logs(vec![
                line("R", "b", "1"),
                line("R", "a", "2"),
                line("S", "a", "3"),
            ])
            .unwrap();
        let run = s
            .logs(&LogFilter {
                run_id: Some("R".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            run.iter()
                .map(|l| l.log.message.as_str())
                .collect::<Vec<_>>(),
            ["1", "2"]
        );
        let after = s
            .logs(&LogFilter {
                after_seq: Some(stored[0].seq),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(after.len(), 2);
    }
}
