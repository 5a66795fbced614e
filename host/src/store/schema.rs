//! The schema, its upgrades, and what opening the store resets.

use rusqlite::Connection;

use super::Result;

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
    enqueued_ms INTEGER NOT NULL DEFAULT 0,
    origin TEXT
);
CREATE INDEX IF NOT EXISTS queue_ready ON queue (driver, claimed, not_before);
CREATE INDEX IF NOT EXISTS queue_resource ON queue (resource_type, resource_name);
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
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    driver TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    message TEXT NOT NULL,
    labels TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_run ON logs (run_id);
CREATE TABLE IF NOT EXISTS pipelines (
    name TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    resource_type TEXT NOT NULL,
    resource_name TEXT NOT NULL,
    pipeline TEXT,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    payload TEXT,
    replay_of TEXT
);
CREATE INDEX IF NOT EXISTS runs_resource ON runs (resource_type, resource_name);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE INDEX IF NOT EXISTS runs_type ON runs (resource_type);
CREATE INDEX IF NOT EXISTS runs_pipeline ON runs (pipeline) WHERE pipeline IS NOT NULL;
CREATE TABLE IF NOT EXISTS run_steps (
    run INTEGER NOT NULL,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    driver TEXT NOT NULL,
    event TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    started_at TEXT,
    finished_at TEXT,
    PRIMARY KEY (run, step)
) WITHOUT ROWID;
"#;

/// Runs keyed by `run_id` alone, and steps by `(run_id, step)`, before runs had a sequence
/// number: set aside, [`SCHEMA`] creates the tables as they are now, and the rows move over,
/// every run keeping its place in creation order (its rowid becomes its `seq`). A run's steps
/// and later rows are then keyed by a number that grows with each run, so an event's writes
/// land at the end of their trees instead of at a random place given by a UUID.
const SET_ASIDE_UNSEQUENCED: &str = "
ALTER TABLE runs RENAME TO runs_by_id;
ALTER TABLE run_steps RENAME TO run_steps_by_id;";

/// The rows of [`SET_ASIDE_UNSEQUENCED`]'s tables, into [`SCHEMA`]'s; the old tables go, and
/// their indexes with them.
const MOVE_UNSEQUENCED: &str = "
INSERT INTO runs (seq, run_id, resource_type, resource_name, pipeline, event, status, message,
                  created_at, started_at, finished_at, payload, replay_of)
    SELECT rowid, run_id, resource_type, resource_name, pipeline, event, status, message,
           created_at, started_at, finished_at, payload, replay_of
    FROM runs_by_id;
INSERT INTO run_steps (run, step, name, driver, event, status, attempts, message, started_at,
                       finished_at)
    SELECT r.seq, s.step, s.name, s.driver, s.event, s.status, s.attempts, s.message,
           s.started_at, s.finished_at
    FROM run_steps_by_id s JOIN runs r ON r.run_id = s.run_id;
DROP TABLE run_steps_by_id;
DROP TABLE runs_by_id;";

/// Columns added after the first release of the schema: `(table, column, declaration)`.
/// `CREATE TABLE IF NOT EXISTS` leaves an older table as it is, so they are added here.
const ADDED_COLUMNS: [(&str, &str, &str); 7] = [
    ("queue", "step", "INTEGER NOT NULL DEFAULT 1"),
    ("queue", "enqueued_ms", "INTEGER NOT NULL DEFAULT 0"),
    ("queue", "origin", "TEXT"),
    ("results", "step", "INTEGER NOT NULL DEFAULT 1"),
    // The run's `seq`: NULL for a result of a run stored before runs had rows.
    ("results", "run", "INTEGER"),
    // The first event's payload, so that a run can be replayed (NULL for older runs).
    ("runs", "payload", "TEXT"),
    ("runs", "replay_of", "TEXT"),
];

/// The savepoint journal each write keeps (the pages it changes, as they were, so that it can
/// be rolled back alone) is in memory up to SQLite's `STMTJRNL_SPILL` bytes, in one chunk of
/// that size, and in a temporary file past it. With `temp_store=MEMORY` it is kept in memory
/// whatever its size but in 1 KiB chunks: five allocations and frees for each page an event
/// changes, about a seventh of the writer's time. The bundled SQLite is built with a 1 MiB
/// spill (`.cargo/config.toml`): 256 pages, several times what an event's write changes. A
/// build without it (64 KiB, less than some writes change) gets `temp_store=MEMORY`.
const ONE_CHUNK_JOURNAL: i64 = 1 << 20;

/// `STMTJRNL_SPILL` of the SQLite build (its default, 64 KiB, when not set at compile time).
fn journal_spill(conn: &Connection) -> Result<i64> {
    let mut stmt = conn.prepare("PRAGMA compile_options")?;
    let options = stmt.query_map([], |r| r.get::<_, String>(0))?;
    for option in options {
        if let Some(n) = option?.strip_prefix("STMTJRNL_SPILL=") {
            return Ok(n.parse().unwrap_or(0));
        }
    }
    Ok(64 << 10)
}

/// Keeps each statement's plan for the statement's life. Without this SQLite prepares a
/// cached statement again whenever a value bound to `LIMIT` or a compared parameter changes
/// (the claim's `LIMIT ?` changes with every call), in case another plan suits the value
/// better: a parse per claim, for plans that never depend on the values here.
pub(super) fn planned_once(conn: &Connection) -> Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Whether `table` has `column`.
fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get(0),
    )?)
}

/// Sets the connection up, creates or upgrades the schema, and makes the events that were
/// being delivered when the host stopped deliverable again (at-least-once, like JetStream's
/// redelivery after AckWait).
pub(super) fn open(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if journal_spill(conn)? < ONE_CHUNK_JOURNAL {
        // Not the bundled build's journal: in memory, then, not spilled to a temporary file
        // by nearly every write.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
    }
    planned_once(conn)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    for (table, column, decl) in ADDED_COLUMNS {
        if !has_column(conn, table, column)? {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    if !has_column(conn, "runs", "seq")? {
        // A store is upgraded whole or not at all: the transaction rolls back if a step fails.
        // The old tables' index names are still taken while they are set aside, so the
        // schema's statements run again afterwards to create the new tables' indexes.
        let tx =
            rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(SET_ASIDE_UNSEQUENCED)?;
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(MOVE_UNSEQUENCED)?;
        tx.execute_batch(SCHEMA)?;
        tx.commit()?;
    }
    // After the added columns, which an older store gets only above.
    // A run's lines by sequence (`logs_by_run`) replaced lines by run and driver: the query
    // users run most is a run's lines in order. A cancellation finds a run's queued events
    // through their resource (`queue_resource`), not by an index of its own (`queue_run`).
    // A run's results are found by its `seq` (`results_by_run`, written at the end of the tree
    // as runs come), those of runs without rows by their id (`results_without_run`);
    // `results_run`, by id for all, was a tree written at a random place by every result.
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS queue_origin ON queue (origin) WHERE origin IS NOT NULL;
         DROP INDEX IF EXISTS logs_run;
         DROP INDEX IF EXISTS queue_run;
         CREATE INDEX IF NOT EXISTS results_without_run ON results (run_id) WHERE run IS NULL;
         UPDATE results SET run = (SELECT seq FROM runs WHERE runs.run_id = results.run_id)
             WHERE run IS NULL;
         CREATE INDEX IF NOT EXISTS results_by_run ON results (run);
         DROP INDEX IF EXISTS results_run;",
    )?;
    conn.execute("UPDATE queue SET claimed = 0 WHERE claimed = 1", [])?;
    conn.execute(
        "UPDATE run_steps SET status = 'queued' WHERE status = 'running'",
        [],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_sqlite_keeps_a_writes_journal_in_memory_in_one_chunk() {
        let conn = Connection::open_in_memory().unwrap();
        assert!(
            journal_spill(&conn).unwrap() >= ONE_CHUNK_JOURNAL,
            "SQLite was built without .cargo/config.toml's LIBSQLITE3_FLAGS"
        );
    }
}
