//! Pipelines, and runs: what became of every event the control plane sent.
//!
//! A run is one change of one resource (create, update, delete) and the driver deliveries it
//! caused. A resource with a pipeline runs the pipeline's steps one after another; any other
//! resource runs one step per listening driver, side by side. A step's end and the start of
//! the next one are written in the transaction that stores the step's result and removes its
//! event from the queue, so a crash never loses or repeats a step: it can only deliver the
//! step that was in flight again.

use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{NewEvent, Result, Store, StoredResult, enqueue, read_resource};
use crate::conveyor::{self, Pipeline, Resource};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
}

impl RunStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Superseded => "superseded",
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
        Ok(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "superseded" => RunStatus::Superseded,
            other => {
                return Err(format!(
                    "unknown run status {other:?}: use queued, running, succeeded, failed or superseded"
                ));
            }
        })
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
    fn as_str(self) -> &'static str {
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

    fn parse(s: &str) -> StepStatus {
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

    fn is_final(self) -> bool {
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
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone, serde::Serialize)]
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
    /// Its steps, in order.
    pub steps: Vec<StepRecord>,
}

/// One step of a run.
#[derive(Debug, Clone, serde::Serialize)]
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
}

/// How a step ended.
pub(super) enum StepEnd<'a> {
    /// The driver's final result.
    Result(&'a StoredResult),
    /// The driver does not handle the event.
    Skipped(&'a str),
    /// The event can never be delivered.
    Rejected(&'a str),
}

/// A queue row, as settling needs it.
pub(super) struct QueueRow {
    pub run_id: String,
    pub step: u32,
    pub driver: String,
    pub event: String,
    pub message_id: String,
    pub resource_type: String,
    pub resource_name: String,
    pub pipeline: Option<String>,
    pub payload: String,
    pub attempts: u32,
    pub claimed: bool,
}

pub(super) fn queue_row(conn: &Connection, id: i64) -> Result<Option<QueueRow>> {
    Ok(conn
        .query_row(
            "SELECT run_id, step, driver, event, message_id, resource_type, resource_name,
                    pipeline, payload, attempts, claimed
             FROM queue WHERE id = ?1",
            [id],
            |r| {
                Ok(QueueRow {
                    run_id: r.get(0)?,
                    step: r.get(1)?,
                    driver: r.get(2)?,
                    event: r.get(3)?,
                    message_id: r.get(4)?,
                    resource_type: r.get(5)?,
                    resource_name: r.get(6)?,
                    pipeline: r.get(7)?,
                    payload: r.get(8)?,
                    attempts: r.get(9)?,
                    claimed: r.get(10)?,
                })
            },
        )
        .optional()?)
}

/// Stores a new run and enqueues its first events: a pipeline's first step, or every
/// driver's step. A pending (never claimed) entry event of an older run for the same driver
/// and resource is replaced by the new one; the older run's step is superseded.
pub(super) fn start_run(tx: &Transaction<'_>, run: &NewRun) -> Result<Vec<RunEnded>> {
    let now = crate::clock::now_rfc3339();
    tx.execute(
        "INSERT INTO runs (run_id, resource_type, resource_name, pipeline, event, status, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)",
        params![
            run.run_id,
            run.resource_type,
            run.resource_name,
            run.pipeline,
            run.event,
            now
        ],
    )?;
    for (i, s) in run.steps.iter().enumerate() {
        tx.execute(
            "INSERT INTO run_steps (run_id, step, name, driver, status) VALUES (?1, ?2, ?3, ?4, 'pending')",
            params![run.run_id, i + 1, s.name, s.driver],
        )?;
    }
    let mut ended = Vec::new();
    if let Some(failure) = &run.failure {
        ended.push(finish_run(tx, &run.run_id, RunStatus::Failed, failure)?);
        return Ok(ended);
    }
    if run.steps.is_empty() {
        ended.push(finish_run(tx, &run.run_id, RunStatus::Succeeded, "")?);
        return Ok(ended);
    }
    let entry = if run.pipeline.is_some() {
        1
    } else {
        run.steps.len()
    };
    let message_id = conveyor::new_message_id();
    for (i, s) in run.steps.iter().enumerate().take(entry) {
        let step = i as u32 + 1;
        let mut event = run.event.clone();
        ended.extend(coalesce(tx, run, &s.driver, &mut event)?);
        enqueue(
            tx,
            &[NewEvent {
                driver: s.driver.clone(),
                event: event.clone(),
                run_id: run.run_id.clone(),
                message_id: message_id.clone(),
                resource_type: run.resource_type.clone(),
                resource_name: run.resource_name.clone(),
                pipeline: run.pipeline.clone(),
                payload: run.payload.clone(),
                step,
            }],
        )?;
        set_step(tx, &run.run_id, step, StepStatus::Queued, Some(&event))?;
    }
    Ok(ended)
}

/// Removes the unclaimed entry events (not mid-pipeline `process` ones) for `driver` and the
/// run's resource, superseding their steps. A driver that never saw the resource's `create`
/// still gets `create`, with the newest state.
fn coalesce(
    tx: &Transaction<'_>,
    run: &NewRun,
    driver: &str,
    event: &mut String,
) -> Result<Vec<RunEnded>> {
    let older: Vec<(i64, String, u32, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, run_id, step, event FROM queue
             WHERE driver = ?1 AND resource_type = ?2 AND resource_name = ?3
               AND claimed = 0 AND event <> 'process'",
        )?;
        stmt.query_map(params![driver, run.resource_type, run.resource_name], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    let mut ended = Vec::new();
    for (id, old_run, step, old_event) in older {
        if old_event == "create" && event == "update" {
            *event = "create".into();
        }
        tx.execute("DELETE FROM queue WHERE id = ?1", [id])?;
        let why = format!("superseded by run {}", run.run_id);
        end_step(tx, &old_run, step, StepStatus::Superseded, &why, 0)?;
        let pipeline: Option<String> = tx.query_row(
            "SELECT pipeline FROM runs WHERE run_id = ?1",
            [&old_run],
            |r| r.get(0),
        )?;
        if pipeline.is_some() {
            ended.push(finish_run(tx, &old_run, RunStatus::Superseded, &why)?);
        } else {
            ended.extend(conclude_broadcast(tx, &old_run)?);
        }
    }
    Ok(ended)
}

/// Marks a claimed step as running (its first start is kept).
pub(super) fn step_started(
    tx: &Transaction<'_>,
    run_id: &str,
    step: u32,
    attempt: u32,
) -> Result<()> {
    let now = crate::clock::now_rfc3339();
    tx.execute(
        "UPDATE run_steps SET status = 'running', attempts = ?3,
                started_at = COALESCE(started_at, ?4)
         WHERE run_id = ?1 AND step = ?2",
        params![run_id, step, attempt, now],
    )?;
    tx.execute(
        "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, ?2)
         WHERE run_id = ?1 AND status = 'queued'",
        params![run_id, now],
    )?;
    Ok(())
}

/// Records how a step ended and moves its run on: the next pipeline step is enqueued with the
/// resource as earlier steps left it, or the run ends.
pub(super) fn advance(
    tx: &Transaction<'_>,
    row: &QueueRow,
    end: &StepEnd<'_>,
) -> Result<Vec<RunEnded>> {
    let (status, message) = match end {
        StepEnd::Result(r) if r.success => (StepStatus::Succeeded, r.message.as_str()),
        StepEnd::Result(r) => (StepStatus::Failed, r.message.as_str()),
        StepEnd::Skipped(why) => (StepStatus::Skipped, *why),
        StepEnd::Rejected(why) => (StepStatus::Failed, *why),
    };
    end_step(tx, &row.run_id, row.step, status, message, row.attempts)?;
    let run: Option<(Option<String>, String, String)> = tx
        .query_row(
            "SELECT pipeline, status, event FROM runs WHERE run_id = ?1",
            [&row.run_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    // Events queued before runs were recorded have no run row.
    let Some((pipeline, run_status, run_event)) = run else {
        return Ok(Vec::new());
    };
    if RunStatus::from_str(&run_status).is_ok_and(RunStatus::is_final) {
        return Ok(Vec::new());
    }
    if pipeline.is_none() {
        return conclude_broadcast(tx, &row.run_id);
    }
    if status == StepStatus::Failed {
        let why = format!("step {} ({}) failed: {message}", row.step, row.driver);
        return Ok(vec![finish_run(tx, &row.run_id, RunStatus::Failed, &why)?]);
    }
    let next: Option<String> = tx
        .query_row(
            "SELECT driver FROM run_steps WHERE run_id = ?1 AND step = ?2",
            params![row.run_id, row.step + 1],
            |r| r.get(0),
        )
        .optional()?;
    let Some(next_driver) = next else {
        return Ok(vec![finish_run(tx, &row.run_id, RunStatus::Succeeded, "")?]);
    };
    let payload = next_payload(tx, row, end, &run_event)?;
    enqueue(
        tx,
        &[NewEvent {
            driver: next_driver,
            event: "process".into(),
            run_id: row.run_id.clone(),
            message_id: conveyor::new_message_id(),
            resource_type: row.resource_type.clone(),
            resource_name: row.resource_name.clone(),
            pipeline: row.pipeline.clone(),
            payload,
            step: row.step + 1,
        }],
    )?;
    set_step(
        tx,
        &row.run_id,
        row.step + 1,
        StepStatus::Queued,
        Some("process"),
    )?;
    Ok(Vec::new())
}

/// The next step's payload: the resource as stored now (with every driver result written so
/// far), as upstream reloads it; for a deleted resource, the run's payload with this step's
/// result added to its metadata.
fn next_payload(
    tx: &Transaction<'_>,
    row: &QueueRow,
    end: &StepEnd<'_>,
    run_event: &str,
) -> Result<String> {
    let Ok(mut sent) = serde_json::from_str::<Resource>(&row.payload) else {
        return Ok(row.payload.clone());
    };
    if run_event != "delete"
        && let Some(current) = read_resource(tx, &row.resource_type, &row.resource_name)?
        && current.id == sent.id
    {
        return Ok(serde_json::to_string(&current)?);
    }
    if let StepEnd::Result(r) = end {
        let entry = conveyor::DriverResult {
            success: r.success,
            message: r.message.clone(),
            data: r.data.clone(),
            driver: r.driver.clone(),
        };
        sent.metadata.insert(
            format!("driverresults.{}", r.driver),
            serde_json::to_string(&entry)?,
        );
    }
    Ok(serde_json::to_string(&sent)?)
}

fn set_step(
    tx: &Transaction<'_>,
    run_id: &str,
    step: u32,
    status: StepStatus,
    event: Option<&str>,
) -> Result<()> {
    tx.execute(
        "UPDATE run_steps SET status = ?3, event = COALESCE(?4, event) WHERE run_id = ?1 AND step = ?2",
        params![run_id, step, status.as_str(), event],
    )?;
    Ok(())
}

fn end_step(
    tx: &Transaction<'_>,
    run_id: &str,
    step: u32,
    status: StepStatus,
    message: &str,
    attempts: u32,
) -> Result<()> {
    tx.execute(
        "UPDATE run_steps SET status = ?3, message = ?4, finished_at = ?5,
                attempts = MAX(attempts, ?6)
         WHERE run_id = ?1 AND step = ?2",
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

/// A broadcast run ends when every driver's step has: failed if one failed, superseded if
/// one was superseded, succeeded otherwise.
fn conclude_broadcast(tx: &Transaction<'_>, run_id: &str) -> Result<Vec<RunEnded>> {
    let steps: Vec<(u32, String, String, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT step, driver, status, message FROM run_steps WHERE run_id = ?1 ORDER BY step",
        )?;
        stmt.query_map([run_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    if steps
        .iter()
        .any(|(_, _, s, _)| !StepStatus::parse(s).is_final())
    {
        return Ok(Vec::new());
    }
    let find = |wanted: StepStatus| {
        steps
            .iter()
            .find(|(_, _, s, _)| StepStatus::parse(s) == wanted)
    };
    let (status, message) = if let Some((step, driver, _, m)) = find(StepStatus::Failed) {
        (
            RunStatus::Failed,
            format!("step {step} ({driver}) failed: {m}"),
        )
    } else if let Some((_, _, _, m)) = find(StepStatus::Superseded) {
        (RunStatus::Superseded, m.clone())
    } else {
        (RunStatus::Succeeded, String::new())
    };
    Ok(vec![finish_run(tx, run_id, status, &message)?])
}

/// Gives a run its final status; steps whose turn never came are skipped.
fn finish_run(
    tx: &Transaction<'_>,
    run_id: &str,
    status: RunStatus,
    message: &str,
) -> Result<RunEnded> {
    let now = crate::clock::now_rfc3339();
    tx.execute(
        "UPDATE runs SET status = ?2, message = ?3, finished_at = ?4 WHERE run_id = ?1",
        params![run_id, status.as_str(), message, now],
    )?;
    let why = match status {
        RunStatus::Succeeded => String::new(),
        _ => format!("not run: {message}"),
    };
    tx.execute(
        "UPDATE run_steps SET status = 'skipped', message = ?2, finished_at = ?3
         WHERE run_id = ?1 AND status = 'pending'",
        params![run_id, why, now],
    )?;
    Ok(RunEnded {
        runid: run_id.to_string(),
        status,
        message: message.to_string(),
    })
}

impl Store {
    // ---- pipelines ----

    /// Reads a pipeline.
    pub fn pipeline(&self, name: &str) -> Result<Option<Pipeline>> {
        let json: Option<String> = self
            .conn()
            .query_row("SELECT json FROM pipelines WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    /// Every pipeline, by name.
    pub fn pipelines(&self) -> Result<Vec<Pipeline>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT json FROM pipelines ORDER BY name")?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows
            .iter()
            .map(|j| serde_json::from_str(j))
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Inserts a pipeline; `false` when the name is taken.
    pub fn insert_pipeline(&self, p: &Pipeline) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO pipelines (name, json) VALUES (?1, ?2)",
            params![p.name, serde_json::to_string(p)?],
        )?;
        Ok(n == 1)
    }

    /// Replaces a pipeline; `false` when there is none of that name.
    pub fn replace_pipeline(&self, p: &Pipeline) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE pipelines SET json = ?2 WHERE name = ?1",
            params![p.name, serde_json::to_string(p)?],
        )?;
        Ok(n == 1)
    }

    /// Deletes a pipeline; `false` when there was none. Runs already started keep the steps
    /// they started with.
    pub fn delete_pipeline(&self, name: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM pipelines WHERE name = ?1", [name])?;
        Ok(n == 1)
    }

    // ---- runs ----

    /// A run with its steps and their results.
    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let run = {
            let conn = self.conn();
            read_run(&conn, run_id)?
        };
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
        let ids: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT run_id FROM runs
                 WHERE (?1 IS NULL OR resource_type = ?1) AND (?2 IS NULL OR resource_name = ?2)
                   AND (?3 IS NULL OR pipeline = ?3) AND (?4 IS NULL OR status = ?4)
                 ORDER BY rowid DESC LIMIT ?5",
            )?;
            stmt.query_map(
                params![
                    filter.resource_type,
                    filter.resource_name,
                    filter.pipeline,
                    filter.status.map(RunStatus::as_str),
                    filter.limit
                ],
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(run) = self.run(&id)? {
                out.push(run);
            }
        }
        Ok(out)
    }

    /// A run's status, if the run exists.
    pub fn run_status(&self, run_id: &str) -> Result<Option<RunEnded>> {
        let row: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT status, message FROM runs WHERE run_id = ?1",
                [run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(status, message)| RunEnded {
            runid: run_id.to_string(),
            status: status.parse().unwrap_or(RunStatus::Queued),
            message,
        }))
    }

    /// How many runs there are with each status.
    pub fn runs_by_status(&self) -> Result<Vec<(RunStatus, u64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM runs GROUP BY status")?;
        let rows: Vec<(String, u64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| Some((s.parse().ok()?, n)))
            .collect())
    }
}

/// A run stored before runs had their own rows: only its results are known.
fn legacy_run(run_id: &str, results: Vec<StoredResult>) -> Option<RunRecord> {
    let first = results.first()?.clone();
    let failed = results.iter().find(|r| !r.success);
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
        finished_at: results.iter().map(|r| r.finished_at.clone()).max(),
        steps: results
            .into_iter()
            .enumerate()
            .map(|(i, r)| StepRecord {
                step: i as u32 + 1,
                name: r.driver.clone(),
                driver: r.driver.clone(),
                event: Some(r.event.clone()),
                status: if r.success {
                    StepStatus::Succeeded
                } else {
                    StepStatus::Failed
                },
                attempts: r.attempts,
                message: r.message.clone(),
                started_at: Some(r.started_at.clone()),
                finished_at: Some(r.finished_at.clone()),
                result: Some(r),
            })
            .collect(),
    })
}

fn read_run(conn: &Connection, run_id: &str) -> Result<Option<RunRecord>> {
    let run = conn
        .query_row(
            "SELECT run_id, resource_type, resource_name, pipeline, event, status, message,
                    created_at, started_at, finished_at
             FROM runs WHERE run_id = ?1",
            [run_id],
            |r| {
                Ok(RunRecord {
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
                    steps: Vec::new(),
                })
            },
        )
        .optional()?;
    let Some(mut run) = run else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT step, name, driver, event, status, attempts, message, started_at, finished_at
         FROM run_steps WHERE run_id = ?1 ORDER BY step",
    )?;
    run.steps = stmt
        .query_map([run_id], |r| {
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
