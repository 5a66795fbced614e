//! Runs (one change of one resource and the deliveries it caused), their steps and the
//! drivers' results, as stored. What a step's end means for its run (the next pipeline step,
//! the run's end) is decided by the embedded backend's pipeline rules, which write through
//! these functions.

use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Result, Store, Tx};
use crate::result::{Outcome, RunResult};
use crate::wasm::FailureKind;

/// Where a run is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// No step has started yet.
    Queued,
    /// A step has started and the run is not over.
    Running,
    /// Every step succeeded (or was skipped because its driver does not handle the event).
    Succeeded,
    /// A step failed; later pipeline steps did not run.
    Failed,
    /// A newer change of the same resource replaced the run's pending events before they
    /// were delivered (see "coalescing" in the README).
    Superseded,
    /// An operator cancelled it.
    Cancelled,
    /// No driver handled the change: no loaded driver listens to its event on its resource
    /// type (or its pipeline has no steps). Over, but not a success: nothing ran.
    #[serde(rename = "no-driver")]
    NoDriver,
}

impl RunStatus {
    /// Every status, in the order they are listed.
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Superseded,
        RunStatus::Cancelled,
        RunStatus::NoDriver,
    ];

    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Superseded => "superseded",
            RunStatus::Cancelled => "cancelled",
            RunStatus::NoDriver => "no-driver",
        }
    }

    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

impl FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        RunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown run status {s:?}: use queued, running, succeeded, failed, \
                     superseded, cancelled or no-driver"
                )
            })
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// A pipeline step whose turn has not come.
    Pending,
    /// Its event is in the queue.
    Queued,
    /// Its driver is reconciling it.
    Running,
    /// An attempt failed transiently; the event is queued again, after a backoff.
    Retrying,
    /// The driver succeeded.
    Succeeded,
    /// The driver failed, gave up retrying, or could not be reached.
    Failed,
    /// Not run: the driver does not handle the event, or an earlier pipeline step failed.
    Skipped,
    /// A newer change of the resource replaced the event before it was delivered.
    Superseded,
}

impl StepStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Queued => "queued",
            StepStatus::Running => "running",
            StepStatus::Retrying => "retrying",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Superseded => "superseded",
        }
    }

    /// The status stored as `s` (an unknown word reads as `pending`).
    pub fn parse(s: &str) -> StepStatus {
        match s {
            "queued" => StepStatus::Queued,
            "running" => StepStatus::Running,
            "retrying" => StepStatus::Retrying,
            "succeeded" => StepStatus::Succeeded,
            "failed" => StepStatus::Failed,
            "skipped" => StepStatus::Skipped,
            "superseded" => StepStatus::Superseded,
            _ => StepStatus::Pending,
        }
    }

    /// Whether the step is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::Failed
                | StepStatus::Skipped
                | StepStatus::Superseded
        )
    }
}

/// A run to start, with the change that caused it.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    /// Its id (a UUID).
    pub run_id: String,
    /// The resource's type.
    pub resource_type: String,
    /// The resource's name.
    pub resource_name: String,
    /// The pipeline, for a pipeline run.
    pub pipeline: Option<String>,
    /// `create`, `update` or `delete`: the first step's event.
    pub event: String,
    /// The resource as JSON text, the first steps' payload.
    pub payload: String,
    /// The steps: a pipeline's in order, or one per listening driver.
    pub steps: Vec<NewStep>,
    /// Set when the run cannot start (its pipeline is gone): it is stored as failed.
    pub failure: Option<String>,
    /// The driver whose write through the API client made the change, if one did.
    pub origin: Option<String>,
    /// The run this one replays (`POST /runs/{runid}/replay`), if it is a replay.
    pub replay_of: Option<String>,
}

/// One step of a new run.
#[derive(Debug, Clone)]
pub struct NewStep {
    /// The pipeline step's name (the driver's name outside pipelines).
    pub name: String,
    /// The driver that runs it.
    pub driver: String,
}

/// A run that reached a final status.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunEnded {
    /// The run.
    pub runid: String,
    /// How it ended.
    pub status: RunStatus,
    /// Why, for a failed or superseded run.
    pub message: String,
}

/// A run as stored, with its steps.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RunRecord {
    /// The run id.
    pub runid: String,
    /// The resource's type.
    pub resource_type: String,
    /// The resource's name.
    pub resource_name: String,
    /// The pipeline, `null` outside pipelines.
    pub pipeline: Option<String>,
    /// The change: `create`, `update` or `delete`.
    pub event: String,
    /// Where the run is.
    pub status: RunStatus,
    /// Why it failed or was superseded; empty otherwise.
    pub message: String,
    /// When the change was stored (RFC 3339).
    pub created_at: String,
    /// When its first step started.
    pub started_at: Option<String>,
    /// When it reached its final status.
    pub finished_at: Option<String>,
    /// The run this one replays, for a run started by `POST /runs/{runid}/replay`.
    pub replay_of: Option<String>,
    /// Its steps, in order.
    pub steps: Vec<StepRecord>,
}

/// One step of a run.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StepRecord {
    /// Its position, from 1.
    pub step: u32,
    /// The pipeline step's name, or the driver's.
    pub name: String,
    /// The driver.
    pub driver: String,
    /// The event it got (`create`, `update`, `delete`, `process`); `null` before its turn.
    pub event: Option<String>,
    /// Where it is.
    pub status: StepStatus,
    /// Deliveries so far.
    pub attempts: u32,
    /// The result's message, or why it was skipped or superseded.
    pub message: String,
    /// When its first attempt started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// The driver's final result, once there is one.
    pub result: Option<StoredResult>,
}

/// Which runs to list; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only resources of this type.
    pub resource_type: Option<String>,
    /// Only resources of this name.
    pub resource_name: Option<String>,
    /// Only runs of this pipeline.
    pub pipeline: Option<String>,
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// At most this many, newest first.
    pub limit: u32,
    /// Only runs older than this one (the last run of the previous page).
    pub after: Option<String>,
}

/// A driver's final result, as stored: the result and the run's step it ended (1-based).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct StoredResult {
    /// The result.
    #[serde(flatten)]
    pub result: RunResult,
    /// The step it is the result of.
    pub step: u32,
}

/// Reads a stored outcome. Rows written before outcomes were typed carry the same words; one
/// that names no known outcome reads as a plain success or failure.
fn stored_outcome(success: bool, outcome: &str) -> Outcome {
    Outcome::parse(outcome).unwrap_or(if success {
        Outcome::Success
    } else {
        Outcome::Failure
    })
}

/// Stores a new run and its steps: the first `entry.len()` already `queued`, step `i + 1`
/// with event `entry[i]` (the steps whose events the run's change enqueues at once), the
/// rest `pending`.
pub fn insert_run(tx: &Tx<'_>, run: &NewRun, entry: &[String]) -> Result<()> {
    let now = crate::clock::now_rfc3339();
    tx.prepare_cached(
        "INSERT INTO runs (run_id, resource_type, resource_name, pipeline, event, status, created_at,
                           payload, replay_of)
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8)",
    )?
    .execute(params![
        run.run_id,
        run.resource_type,
        run.resource_name,
        run.pipeline,
        run.event,
        now,
        run.payload,
        run.replay_of
    ])?;
    let seq = tx.last_insert_rowid();
    let mut stmt = tx.prepare_cached(
        "INSERT INTO run_steps (run, step, name, driver, status, event)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (i, s) in run.steps.iter().enumerate() {
        let event = entry.get(i);
        let status = match event {
            Some(_) => StepStatus::Queued,
            None => StepStatus::Pending,
        };
        stmt.execute(params![
            seq,
            i + 1,
            s.name,
            s.driver,
            status.as_str(),
            event
        ])?;
    }
    Ok(())
}

/// A run's pipeline, status and first event; `None` for a run stored before runs had rows.
pub fn run_state(
    conn: &Connection,
    run_id: &str,
) -> Result<Option<(Option<String>, RunStatus, String)>> {
    let row: Option<(Option<String>, String, String)> = conn
        .prepare_cached("SELECT pipeline, status, event FROM runs WHERE run_id = ?1")?
        .query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(row.map(|(p, s, e)| (p, s.parse().unwrap_or(RunStatus::Queued), e)))
}

/// The payload of a run's first event, as stored with the run; `None` for an unknown run or
/// one stored before runs kept their payload.
pub fn payload(conn: &Connection, run_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT payload FROM runs WHERE run_id = ?1")?
        .query_row([run_id], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten())
}

/// A run's resource type and name, if the run exists.
pub fn resource_of(conn: &Connection, run_id: &str) -> Result<Option<(String, String)>> {
    Ok(conn
        .prepare_cached("SELECT resource_type, resource_name FROM runs WHERE run_id = ?1")?
        .query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// A step's event and attempts so far, if the run has that step and its turn came.
pub fn step_event(conn: &Connection, run_id: &str, step: u32) -> Result<Option<(String, u32)>> {
    let row: Option<(Option<String>, u32)> = conn
        .prepare_cached(
            "SELECT event, attempts FROM run_steps
             WHERE run = (SELECT seq FROM runs WHERE run_id = ?1) AND step = ?2",
        )?
        .query_row(params![run_id, step], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(e, a)| e.map(|e| (e, a))))
}

/// Opens a step again for another delivery: queued, its message and end cleared.
pub fn reopen_step(tx: &Tx<'_>, run_id: &str, step: u32) -> Result<()> {
    tx.execute(
        "UPDATE run_steps SET status = 'queued', message = '', finished_at = NULL
         WHERE run = (SELECT seq FROM runs WHERE run_id = ?1) AND step = ?2",
        params![run_id, step],
    )?;
    Ok(())
}

/// Gives a pipeline's steps after `step` that were skipped when it failed their turn back
/// (`pending`).
pub fn unskip_after(tx: &Tx<'_>, run_id: &str, step: u32) -> Result<()> {
    tx.execute(
        "UPDATE run_steps SET status = 'pending', message = '', finished_at = NULL
         WHERE run = (SELECT seq FROM runs WHERE run_id = ?1)
           AND step > ?2 AND status = 'skipped'",
        params![run_id, step],
    )?;
    Ok(())
}

/// Sets a run that was over back to `running`, its message and end cleared.
pub fn reopen_run(tx: &Tx<'_>, run_id: &str) -> Result<()> {
    tx.execute(
        "UPDATE runs SET status = 'running', message = '', finished_at = NULL WHERE run_id = ?1",
        params![run_id],
    )?;
    Ok(())
}

/// The driver of a run's step, if the run has that step.
pub fn step_driver(conn: &Connection, run_id: &str, step: u32) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT driver FROM run_steps
             WHERE run = (SELECT seq FROM runs WHERE run_id = ?1) AND step = ?2",
        )?
        .query_row(params![run_id, step], |r| r.get(0))
        .optional()?)
}

/// One step of a run as its run's end is decided from it: `(step, driver, status, message)`.
pub type StepSummary = (u32, String, StepStatus, String);

/// A run's steps, in order.
pub fn steps(conn: &Connection, run_id: &str) -> Result<Vec<StepSummary>> {
    let mut stmt = conn.prepare_cached(
        "SELECT step, driver, status, message FROM run_steps
         WHERE run = (SELECT seq FROM runs WHERE run_id = ?1) ORDER BY step",
    )?;
    Ok(stmt
        .query_map([run_id], |r| summary_at(r, 0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// The step of a row with `step, driver, status, message` from column `at` on.
fn summary_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<StepSummary> {
    Ok((
        r.get(at)?,
        r.get(at + 1)?,
        StepStatus::parse(&r.get::<_, String>(at + 2)?),
        r.get(at + 3)?,
    ))
}

/// A run's steps as [`steps`] gives them, if the run is not over; `None` for a run that is
/// over or unknown. One statement: it runs in every broadcast step's settlement.
pub fn steps_if_open(conn: &Connection, run_id: &str) -> Result<Option<Vec<StepSummary>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.status, s.step, s.driver, s.status, s.message
         FROM runs r JOIN run_steps s ON s.run = r.seq
         WHERE r.run_id = ?1 ORDER BY s.step",
    )?;
    let mut open = true;
    let steps = stmt
        .query_map([run_id], |r| {
            let status: RunStatus = r.get::<_, String>(0)?.parse().unwrap_or(RunStatus::Queued);
            open &= !status.is_final();
            summary_at(r, 1)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((open && !steps.is_empty()).then_some(steps))
}

/// Marks a claimed step as running (its first start is kept).
pub fn step_started(tx: &Tx<'_>, run_id: &str, step: u32, attempt: u32) -> Result<()> {
    let now = crate::clock::now_rfc3339();
    tx.prepare_cached(
        "UPDATE run_steps SET status = 'running', attempts = ?3,
                started_at = COALESCE(started_at, ?4)
         WHERE run = (SELECT seq FROM runs WHERE run_id = ?1) AND step = ?2",
    )?
    .execute(params![run_id, step, attempt, now])?;
    tx.prepare_cached(
        "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, ?2)
         WHERE run_id = ?1 AND status = 'queued'",
    )?
    .execute(params![run_id, now])?;
    Ok(())
}

/// Stores a result as the result of `step` (the queue row's step, whatever the caller set).
pub fn insert_result(tx: &Tx<'_>, result: &RunResult, step: u32) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO results (run_id, driver, message_id, event, resource_type, resource_name,
            success, outcome, failure_kind, message, data, attempts, started_at, finished_at, step,
            run)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                 (SELECT seq FROM runs WHERE run_id = ?1))",
    )?
    .execute(params![
        result.run_id,
        result.driver,
        result.message_id,
        result.event,
        result.resource_type,
        result.resource_name,
        result.success(),
        result.outcome.as_str(),
        result.outcome.failure_kind().map(FailureKind::as_str),
        result.message,
        serde_json::to_string(&result.data)?,
        result.attempts,
        result.started_at,
        result.finished_at,
        step,
    ])?;
    Ok(())
}

/// Sets a step's status (and its event, when given).
pub fn set_step(
    tx: &Tx<'_>,
    run_id: &str,
    step: u32,
    status: StepStatus,
    event: Option<&str>,
) -> Result<()> {
    tx.execute(
        "UPDATE run_steps SET status = ?3, event = COALESCE(?4, event)
         WHERE run = (SELECT seq FROM runs WHERE run_id = ?1) AND step = ?2",
        params![run_id, step, status.as_str(), event],
    )?;
    Ok(())
}

/// Records how a step ended.
pub fn end_step(
    tx: &Tx<'_>,
    run_id: &str,
    step: u32,
    status: StepStatus,
    message: &str,
    attempts: u32,
) -> Result<()> {
    tx.execute(
        "UPDATE run_steps SET status = ?3, message = ?4, finished_at = ?5,
                attempts = MAX(attempts, ?6)
         WHERE run = (SELECT seq FROM runs WHERE run_id = ?1) AND step = ?2",
        params![
            run_id,
            step,
            status.as_str(),
            message,
            crate::clock::now_rfc3339(),
            attempts
        ],
    )?;
    Ok(())
}

/// Gives a run its final status (announced when the transaction commits); steps whose turn
/// never came are skipped.
pub fn finish_run(tx: &Tx<'_>, run_id: &str, status: RunStatus, message: &str) -> Result<RunEnded> {
    let (ended, now) = close(tx, run_id, status, message)?;
    let why = match status {
        RunStatus::Succeeded => String::new(),
        _ => format!("not run: {message}"),
    };
    tx.execute(
        "UPDATE run_steps SET status = 'skipped', message = ?2, finished_at = ?3
         WHERE run = (SELECT seq FROM runs WHERE run_id = ?1) AND status = 'pending'",
        params![run_id, why, now],
    )?;
    Ok(ended)
}

/// [`finish_run`] for a run every step of which has ended: there is nothing to skip.
pub fn finish_ended_run(
    tx: &Tx<'_>,
    run_id: &str,
    status: RunStatus,
    message: &str,
) -> Result<RunEnded> {
    Ok(close(tx, run_id, status, message)?.0)
}

/// Sets a run's final status and announces it; returns it, and the time written as its end.
fn close(
    tx: &Tx<'_>,
    run_id: &str,
    status: RunStatus,
    message: &str,
) -> Result<(RunEnded, String)> {
    let now = crate::clock::now_rfc3339();
    tx.prepare_cached(
        "UPDATE runs SET status = ?2, message = ?3, finished_at = ?4 WHERE run_id = ?1",
    )?
    .execute(params![run_id, status.as_str(), message, now])?;
    let ended = RunEnded {
        runid: run_id.to_string(),
        status,
        message: message.to_string(),
    };
    tx.run_ended(ended.clone());
    Ok((ended, now))
}

impl Store {
    /// The final results of a run, in the order they were stored.
    pub fn results(&self, run_id: &str) -> Result<Vec<StoredResult>> {
        let rows = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT run_id, driver, message_id, event, resource_type, resource_name,
                    success, outcome, failure_kind, message, data, attempts, started_at,
                    finished_at, step, id
                 FROM results WHERE run = (SELECT seq FROM runs WHERE run_id = ?1)
                 UNION ALL
                 SELECT run_id, driver, message_id, event, resource_type, resource_name,
                    success, outcome, failure_kind, message, data, attempts, started_at,
                    finished_at, step, id
                 FROM results WHERE run IS NULL AND run_id = ?1
                 ORDER BY id",
            )?;
            let rows = stmt
                .query_map([run_id], |r| {
                    Ok((
                        RunResult {
                            run_id: r.get(0)?,
                            driver: r.get(1)?,
                            message_id: r.get(2)?,
                            event: r.get(3)?,
                            resource_type: r.get(4)?,
                            resource_name: r.get(5)?,
                            outcome: stored_outcome(r.get::<_, bool>(6)?, &r.get::<_, String>(7)?),
                            message: r.get(9)?,
                            data: serde_json::Value::Null,
                            attempts: r.get(11)?,
                            started_at: r.get(12)?,
                            finished_at: r.get(13)?,
                        },
                        r.get::<_, u32>(14)?,
                        r.get::<_, Option<String>>(10)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        let mut out = Vec::new();
        for (mut result, step, data) in rows {
            if let Some(data) = data {
                result.data = serde_json::from_str(&data)?;
            }
            out.push(StoredResult { result, step });
        }
        Ok(out)
    }

    // ---- runs ----

    /// A run with its steps and their results.
    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let run = self.read(|c| read_run(c, run_id))?;
        let Some(mut run) = run else {
            return Ok(legacy_run(run_id, self.results(run_id)?));
        };
        for result in self.results(run_id)? {
            if let Some(step) = run.steps.iter_mut().find(|s| s.step == result.step) {
                step.result = Some(result);
            }
        }
        Ok(Some(run))
    }

    /// Runs matching `filter`, newest first.
    pub fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let (mut conditions, values) = super::equal_to(
            &[
                ("resource_type", filter.resource_type.as_deref()),
                ("resource_name", filter.resource_name.as_deref()),
                ("pipeline", filter.pipeline.as_deref()),
                ("status", filter.status.map(RunStatus::as_str)),
            ],
            2 + usize::from(filter.after.is_some()),
        );
        // The cursor is a run id; the order is the table's (creation order).
        if filter.after.is_some() {
            conditions.push("rowid < (SELECT rowid FROM runs WHERE run_id = ?2)".into());
        }
        let sql = format!(
            "SELECT run_id FROM runs {} ORDER BY rowid DESC LIMIT ?1",
            if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            }
        );
        let ids: Vec<String> = self.read(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut params: Vec<&dyn rusqlite::ToSql> = vec![&filter.limit];
            if let Some(after) = &filter.after {
                params.push(after);
            }
            for v in &values {
                params.push(v);
            }
            stmt.query_map(params.as_slice(), |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
                .map_err(Into::into)
        })?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(run) = self.run(&id)? {
                out.push(run);
            }
        }
        Ok(out)
    }

    /// The payload of a run's first event ([`payload`]).
    pub fn run_payload(&self, run_id: &str) -> Result<Option<String>> {
        self.read(|c| payload(c, run_id))
    }

    /// A run's status, if the run exists.
    pub fn run_status(&self, run_id: &str) -> Result<Option<RunEnded>> {
        let row: Option<(String, String)> = self.read(|c| {
            Ok(
                c.prepare_cached("SELECT status, message FROM runs WHERE run_id = ?1")?
                    .query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?,
            )
        })?;
        Ok(row.map(|(status, message)| RunEnded {
            runid: run_id.to_string(),
            status: status.parse().unwrap_or(RunStatus::Queued),
            message,
        }))
    }

    /// How many runs there are with each status.
    pub fn runs_by_status(&self) -> Result<Vec<(RunStatus, u64)>> {
        let rows: Vec<(String, u64)> = self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT status, COUNT(*) FROM runs GROUP BY status")?;
            Ok(stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?)
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| Some((s.parse().ok()?, n)))
            .collect())
    }
}

/// A run stored before runs had their own rows: only its results are known.
fn legacy_run(run_id: &str, results: Vec<StoredResult>) -> Option<RunRecord> {
    let first = results.first()?.result.clone();
    let failed = results.iter().map(|r| &r.result).find(|r| !r.success());
    Some(RunRecord {
        runid: run_id.to_string(),
        resource_type: first.resource_type,
        resource_name: first.resource_name,
        pipeline: None,
        event: first.event,
        status: if failed.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        },
        message: failed
            .map(|r| format!("{} failed: {}", r.driver, r.message))
            .unwrap_or_default(),
        created_at: first.started_at.clone(),
        started_at: Some(first.started_at),
        finished_at: results.iter().map(|r| r.result.finished_at.clone()).max(),
        replay_of: None,
        steps: results
            .into_iter()
            .enumerate()
            .map(|(i, stored)| (i, stored.result.clone(), stored))
            .map(|(i, r, stored)| StepRecord {
                step: i as u32 + 1,
                name: r.driver.clone(),
                driver: r.driver.clone(),
                event: Some(r.event.clone()),
                status: if r.success() {
                    StepStatus::Succeeded
                } else {
                    StepStatus::Failed
                },
                attempts: r.attempts,
                message: r.message.clone(),
                started_at: Some(r.started_at.clone()),
                finished_at: Some(r.finished_at.clone()),
                result: Some(stored),
            })
            .collect(),
    })
}

fn read_run(conn: &Connection, run_id: &str) -> Result<Option<RunRecord>> {
    let run = conn
        .prepare_cached(
            "SELECT run_id, resource_type, resource_name, pipeline, event, status, message,
                    created_at, started_at, finished_at, replay_of, seq
             FROM runs WHERE run_id = ?1",
        )?
        .query_row([run_id], |r| {
            let run = RunRecord {
                runid: r.get(0)?,
                resource_type: r.get(1)?,
                resource_name: r.get(2)?,
                pipeline: r.get(3)?,
                event: r.get(4)?,
                status: r.get::<_, String>(5)?.parse().unwrap_or(RunStatus::Queued),
                message: r.get(6)?,
                created_at: r.get(7)?,
                started_at: r.get(8)?,
                finished_at: r.get(9)?,
                replay_of: r.get(10)?,
                steps: Vec::new(),
            };
            Ok((r.get::<_, i64>(11)?, run))
        })
        .optional()?;
    let Some((seq, mut run)) = run else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT step, name, driver, event, status, attempts, message, started_at, finished_at
         FROM run_steps WHERE run = ?1 ORDER BY step",
    )?;
    run.steps = stmt
        .query_map([seq], |r| {
            Ok(StepRecord {
                step: r.get(0)?,
                name: r.get(1)?,
                driver: r.get(2)?,
                event: r.get(3)?,
                status: StepStatus::parse(&r.get::<_, String>(4)?),
                attempts: r.get(5)?,
                message: r.get(6)?,
                started_at: r.get(7)?,
                finished_at: r.get(8)?,
                result: None,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(run))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_as_written() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
            // The JSON word is the stored word.
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::from(status.as_str())
            );
        }
        assert_eq!(RunStatus::NoDriver.as_str(), "no-driver");
        assert!(RunStatus::NoDriver.is_final());
        let err = "sideways".parse::<RunStatus>().unwrap_err();
        assert!(err.contains("no-driver"), "{err}");
        // Every status is named in the error.
        for status in RunStatus::ALL {
            assert!(err.contains(status.as_str()), "{err}");
        }
    }
}
