//! The pipeline rules: what a resource change starts, and what a step's end means for its
//! run. They sit above the SQL (they write through [`crate::store`]) and run inside the
//! transaction of the change or of the step's result, so a crash never loses or repeats a
//! step: it can only deliver the step that was in flight again.
//!
//! A run is one change of one resource (create, update, delete) and the driver deliveries it
//! caused. A resource with a pipeline runs the pipeline's steps one after another (the first
//! gets the change's event, the later ones `process`); any other resource runs one step per
//! listening driver, side by side. Pending duplicates coalesce: a change replaces the entry
//! events of older runs of the same resource that no driver has taken yet.

use crate::conveyor::{self, Resource};
use crate::result::RunResult;
use crate::store::queue::{self, NewEvent, QueueRow};
use crate::store::runs::{self, NewRun, RunStatus, StepStatus};
use crate::store::{Result, Tx, resources};

/// How a step ended.
#[derive(Debug, Clone, Copy)]
pub enum StepEnd<'a> {
    /// The driver's final result.
    Result(&'a RunResult),
    /// The driver does not handle the event.
    Skipped(&'a str),
    /// The event can never be delivered.
    Rejected(&'a str),
}

impl StepEnd<'_> {
    /// The step's final status and message.
    fn status(&self) -> (StepStatus, &str) {
        match self {
            StepEnd::Result(r) if r.success() => (StepStatus::Succeeded, r.message.as_str()),
            StepEnd::Result(r) => (StepStatus::Failed, r.message.as_str()),
            StepEnd::Skipped(why) => (StepStatus::Skipped, why),
            StepEnd::Rejected(why) => (StepStatus::Failed, why),
        }
    }
}

/// How many of a run's steps start at once: a pipeline's first, or every driver's.
fn entry_steps(run: &NewRun) -> usize {
    if run.pipeline.is_some() {
        1
    } else {
        run.steps.len()
    }
}

/// The event a driver gets when a change replaces its pending event `older`: a driver that
/// never saw the resource's `create` still gets `create`, with the newest state.
fn coalesced_event(older: &str, newer: &str) -> String {
    if older == "create" && newer == "update" {
        "create".into()
    } else {
        newer.into()
    }
}

/// How a broadcast run ends once every driver's step has: failed if one failed, superseded if
/// one was superseded, succeeded otherwise. `None` while a step is not over.
fn broadcast_end(steps: &[(u32, String, StepStatus, String)]) -> Option<(RunStatus, String)> {
    if steps.iter().any(|(_, _, s, _)| !s.is_final()) {
        return None;
    }
    let find = |wanted: StepStatus| steps.iter().find(|(_, _, s, _)| *s == wanted);
    Some(
        if let Some((step, driver, _, m)) = find(StepStatus::Failed) {
            (
                RunStatus::Failed,
                format!("step {step} ({driver}) failed: {m}"),
            )
        } else if let Some((_, _, _, m)) = find(StepStatus::Superseded) {
            (RunStatus::Superseded, m.clone())
        } else {
            (RunStatus::Succeeded, String::new())
        },
    )
}

/// Why a run without steps ran nothing: it is over at once, as `no-driver`, not a success.
fn no_driver(run: &NewRun) -> String {
    match &run.pipeline {
        Some(p) => format!("no driver handled the change: pipeline {p} has no steps"),
        None => format!(
            "no driver handled the change: no loaded driver listens to {} events on resources \
             of type {}",
            run.event, run.resource_type
        ),
    }
}

/// Stores a new run and enqueues its first events. A pending (never claimed) entry event of
/// an older run for the same driver and resource is replaced by the new one; the older run's
/// step is superseded.
pub fn start_run(tx: &Tx<'_>, run: &NewRun) -> Result<()> {
    if let Some(failure) = &run.failure {
        runs::insert_run(tx, run, &[])?;
        runs::finish_run(tx, &run.run_id, RunStatus::Failed, failure)?;
        return Ok(());
    }
    if run.steps.is_empty() {
        runs::insert_run(tx, run, &[])?;
        runs::finish_ended_run(tx, &run.run_id, RunStatus::NoDriver, &no_driver(run))?;
        return Ok(());
    }
    // Each entry step's event is known once the older events it replaces are gone; the steps
    // are then stored as queued with it, beside their queue rows.
    let entry = &run.steps[..entry_steps(run)];
    let events = entry
        .iter()
        .map(|s| coalesce(tx, run, &s.driver))
        .collect::<Result<Vec<_>>>()?;
    runs::insert_run(tx, run, &events)?;
    let message_id = conveyor::new_message_id();
    let queued: Vec<NewEvent> = entry
        .iter()
        .zip(events)
        .enumerate()
        .map(|(i, (s, event))| NewEvent {
            driver: s.driver.clone(),
            event,
            run_id: run.run_id.clone(),
            message_id: message_id.clone(),
            resource_type: run.resource_type.clone(),
            resource_name: run.resource_name.clone(),
            pipeline: run.pipeline.clone(),
            payload: run.payload.clone(),
            step: i as u32 + 1,
            origin: run.origin.clone(),
        })
        .collect();
    queue::enqueue(tx, &queued)
}

/// Supersedes the pending entry events for `driver` and the run's resource; returns the event
/// the driver gets for the new run.
fn coalesce(tx: &Tx<'_>, run: &NewRun, driver: &str) -> Result<String> {
    let mut event = run.event.clone();
    for older in queue::pending_entries(tx, driver, &run.resource_type, &run.resource_name)? {
        event = coalesced_event(&older.event.event, &event);
        queue::remove(tx, older.id)?;
        let why = format!("superseded by run {}", run.run_id);
        let old_run = &older.event.run_id;
        runs::end_step(
            tx,
            old_run,
            older.event.step,
            StepStatus::Superseded,
            &why,
            0,
        )?;
        let pipeline = runs::run_state(tx, old_run)?.and_then(|(p, _, _)| p);
        if pipeline.is_some() {
            runs::finish_run(tx, old_run, RunStatus::Superseded, &why)?;
        } else {
            conclude_broadcast(tx, old_run)?;
        }
    }
    Ok(event)
}

/// Cancels a run: its events no consumer has taken are removed (their steps skipped with
/// `why`) and the run ends `cancelled`; events being delivered stay, for the manager to stop.
/// `None` for an unknown run, `Some(false)` for one that was already over.
pub fn cancel_run(tx: &Tx<'_>, run_id: &str, why: &str) -> Result<Option<bool>> {
    let Some((_, status, _)) = runs::run_state(tx, run_id)? else {
        return Ok(None);
    };
    if status.is_final() {
        return Ok(Some(false));
    }
    let (kind, name) = runs::resource_of(tx, run_id)?.unwrap_or_default();
    for row in queue::unclaimed_of_run(tx, &kind, &name, run_id)? {
        queue::remove(tx, row.id)?;
        runs::end_step(
            tx,
            run_id,
            row.event.step,
            StepStatus::Skipped,
            why,
            row.attempts,
        )?;
    }
    runs::finish_run(tx, run_id, RunStatus::Cancelled, why)?;
    Ok(Some(true))
}

/// What [`retry_run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// No run has that id.
    NotFound,
    /// The run is not failed (its status): only failed runs are redelivered.
    NotFailed(RunStatus),
    /// The run failed without a step to deliver again (its pipeline was gone, say).
    NoFailedStep,
    /// These steps' events were queued again; the run is `running`.
    Queued(Vec<u32>),
}

/// Delivers a failed run's failed steps again (an operator's redelivery of a dead letter):
/// each gets its event queued anew as the next attempt of the same step, the pipeline steps
/// its failure skipped get their turn back, and the run is `running` again. The step's
/// earlier result stays stored; the new attempt's result is stored after it.
pub fn retry_run(tx: &Tx<'_>, run_id: &str) -> Result<Retried> {
    let Some((pipeline, status, run_event)) = runs::run_state(tx, run_id)? else {
        return Ok(Retried::NotFound);
    };
    if status != RunStatus::Failed {
        return Ok(Retried::NotFailed(status));
    }
    let Some((resource_type, resource_name)) = runs::resource_of(tx, run_id)? else {
        return Ok(Retried::NotFound);
    };
    let failed: Vec<(u32, String)> = runs::steps(tx, run_id)?
        .into_iter()
        .filter(|(_, _, s, _)| *s == StepStatus::Failed)
        .map(|(step, driver, _, _)| (step, driver))
        .collect();
    let mut queued = Vec::new();
    for (step, driver) in failed {
        let Some((event, attempts)) = runs::step_event(tx, run_id, step)? else {
            continue;
        };
        // An entry step gets the change's own payload; a later pipeline step the resource as
        // stored now, as it would have when its turn came.
        let stored = runs::payload(tx, run_id)?;
        let payload = if event == run_event {
            stored
        } else {
            match resources::read(tx, &resource_type, &resource_name)? {
                Some(current) => Some(serde_json::to_string(&current)?),
                None => stored,
            }
        };
        let Some(payload) = payload else {
            continue;
        };
        queue::enqueue_again(
            tx,
            &NewEvent {
                driver,
                event,
                run_id: run_id.to_string(),
                message_id: conveyor::new_message_id(),
                resource_type: resource_type.clone(),
                resource_name: resource_name.clone(),
                pipeline: pipeline.clone(),
                payload,
                step,
                origin: None,
            },
            attempts,
        )?;
        runs::reopen_step(tx, run_id, step)?;
        if pipeline.is_some() {
            runs::unskip_after(tx, run_id, step)?;
        }
        queued.push(step);
    }
    if queued.is_empty() {
        return Ok(Retried::NoFailedStep);
    }
    runs::reopen_run(tx, run_id)?;
    Ok(Retried::Queued(queued))
}

/// Stores how a queued event ended, removes it and moves its run on. `false` when the event
/// was no longer queued (nothing is written then).
pub fn settle(tx: &Tx<'_>, id: i64, end: StepEnd<'_>) -> Result<bool> {
    let Some(row) = queue::take(tx, id)? else {
        return Ok(false);
    };
    if let StepEnd::Result(result) = end {
        runs::insert_result(tx, result, row.event.step)?;
        resources::record_driver_result(tx, result)?;
    }
    advance(tx, &row, end)?;
    Ok(true)
}

/// Records how a step ended and moves its run on: the next pipeline step is enqueued with the
/// resource as earlier steps left it, or the run ends.
fn advance(tx: &Tx<'_>, row: &QueueRow, end: StepEnd<'_>) -> Result<()> {
    let e = &row.event;
    let (status, message) = end.status();
    runs::end_step(tx, &e.run_id, e.step, status, message, row.attempts)?;
    // An event carries its run's pipeline.
    if e.pipeline.is_none() {
        return conclude_broadcast(tx, &e.run_id);
    }
    // Events queued before runs were recorded have no run row.
    let Some((_, run_status, run_event)) = runs::run_state(tx, &e.run_id)? else {
        return Ok(());
    };
    if run_status.is_final() {
        return Ok(());
    }
    if status == StepStatus::Failed {
        let why = format!("step {} ({}) failed: {message}", e.step, e.driver);
        runs::finish_run(tx, &e.run_id, RunStatus::Failed, &why)?;
        return Ok(());
    }
    let Some(next_driver) = runs::step_driver(tx, &e.run_id, e.step + 1)? else {
        runs::finish_ended_run(tx, &e.run_id, RunStatus::Succeeded, "")?;
        return Ok(());
    };
    queue::enqueue(
        tx,
        &[NewEvent {
            driver: next_driver,
            event: "process".into(),
            run_id: e.run_id.clone(),
            message_id: conveyor::new_message_id(),
            resource_type: e.resource_type.clone(),
            resource_name: e.resource_name.clone(),
            pipeline: e.pipeline.clone(),
            payload: next_payload(tx, row, end, &run_event)?,
            step: e.step + 1,
            origin: e.origin.clone(),
        }],
    )?;
    runs::set_step(
        tx,
        &e.run_id,
        e.step + 1,
        StepStatus::Queued,
        Some("process"),
    )
}

/// Ends a broadcast run once every driver's step has ended (unless it is over already:
/// cancelled while a step was being delivered).
fn conclude_broadcast(tx: &Tx<'_>, run_id: &str) -> Result<()> {
    let Some(steps) = runs::steps_if_open(tx, run_id)? else {
        return Ok(());
    };
    if let Some((status, message)) = broadcast_end(&steps) {
        runs::finish_ended_run(tx, run_id, status, &message)?;
    }
    Ok(())
}

/// What the next step gets: the resource as stored now (with every driver result written so
/// far), as upstream reloads it; for a deleted resource, the run's payload with this step's
/// result added to its metadata.
fn next_payload(tx: &Tx<'_>, row: &QueueRow, end: StepEnd<'_>, run_event: &str) -> Result<String> {
    let e = &row.event;
    let Ok(mut sent) = serde_json::from_str::<Resource>(&e.payload) else {
        return Ok(e.payload.clone());
    };
    if run_event != "delete"
        && let Some(current) = resources::read(tx, &e.resource_type, &e.resource_name)?
        && current.id == sent.id
    {
        return Ok(serde_json::to_string(&current)?);
    }
    if let StepEnd::Result(r) = end {
        sent.metadata.insert(
            format!("driverresults.{}", r.driver),
            serde_json::to_string(&r.driver_result())?,
        );
    }
    Ok(serde_json::to_string(&sent)?)
}

#[cfg(test)]
mod tests {
    //! The rules with the store under them: the queue's and the control plane's transactions,
    //! as [`super::super::queue`] and [`super::super::control`] write them.

    use std::sync::Arc;

    use rusqlite::Connection;

    use super::*;
    use crate::backend::embedded::queue::Queue;
    use crate::conveyor::Resource;
    use crate::result::Outcome;
    use crate::store::runs::{NewStep, StepStatus};
    use crate::store::{QueuedEvent, RunFilter, Store, StoredResult};

    /// The store, with the composite writes of the embedded backend.
    struct S(Arc<Store>, Arc<Queue>);

    impl std::ops::Deref for S {
        type Target = Store;
        fn deref(&self) -> &Store {
            &self.0
        }
    }

    fn open(path: &std::path::Path) -> S {
        let store = Arc::new(Store::open(path).unwrap());
        S(store.clone(), Queue::new(store))
    }

    impl S {
        fn insert_resource(&self, res: &Resource, run: &NewRun) -> Result<bool> {
            self.write(|tx| {
                if !resources::insert(tx, res)? {
                    return Ok(false);
                }
                start_run(tx, run)?;
                Ok(true)
            })
        }

        fn update_resource(
            &self,
            kind: &str,
            name: &str,
            change: impl FnOnce(Resource) -> Resource + Send,
            run: impl FnOnce(&Resource) -> NewRun + Send,
        ) -> Result<Option<Resource>> {
            self.write(|tx| {
                let Some(current) = resources::read(tx, kind, name)? else {
                    return Ok(None);
                };
                let new = change(current);
                resources::replace(tx, &new)?;
                start_run(tx, &run(&new))?;
                Ok(Some(new))
            })
        }

        fn complete(&self, id: i64, result: &StoredResult) -> Result<bool> {
            self.1.complete(id, &result.result)
        }

        fn fail_waiting(&self, driver: &str, cutoff: i64, reason: &str) -> Result<usize> {
            self.1.fail_waiting(driver, cutoff, reason)
        }
    }

    fn store() -> (tempfile::TempDir, S) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir.path().join("db.sqlite"));
        (dir, s)
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
            origin: None,
            replay_of: None,
        }
    }

    fn result_for(q: &QueuedEvent, success: bool, message: &str) -> StoredResult {
        StoredResult {
            result: RunResult {
                run_id: q.event.run_id.clone(),
                driver: q.event.driver.clone(),
                message_id: q.event.message_id.clone(),
                event: q.event.event.clone(),
                resource_type: q.event.resource_type.clone(),
                resource_name: q.event.resource_name.clone(),
                outcome: if success {
                    Outcome::Success
                } else {
                    Outcome::Failure
                },
                message: message.into(),
                data: serde_json::json!({"from": q.event.driver}),
                attempts: q.attempt,
                started_at: "t0".into(),
                finished_at: "t1".into(),
            },
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
    fn a_change_no_driver_listens_to_ends_as_no_driver() {
        let (_d, s) = store();
        let mut ended = s.subscribe_ended();
        s.insert_resource(&resource("a"), &run("R", "a", None, "create", &[]))
            .unwrap();
        let run_record = s.run("R").unwrap().unwrap();
        assert_eq!(run_record.status, RunStatus::NoDriver);
        assert!(run_record.status.is_final());
        assert_eq!(
            run_record.message,
            "no driver handled the change: no loaded driver listens to create events on \
             resources of type pipe"
        );
        assert!(run_record.steps.is_empty());
        assert!(run_record.finished_at.is_some());
        let end = ended.try_recv().unwrap();
        assert_eq!(
            (end.status, end.message.as_str()),
            (RunStatus::NoDriver, run_record.message.as_str())
        );
        assert_eq!(s.queue_depth().unwrap(), 0);
        // Not among the successes.
        let filter = |status| crate::store::RunFilter {
            status: Some(status),
            limit: 10,
            ..Default::default()
        };
        assert!(s.runs(&filter(RunStatus::Succeeded)).unwrap().is_empty());
        assert_eq!(s.runs(&filter(RunStatus::NoDriver)).unwrap().len(), 1);
        assert_eq!(
            s.runs_by_status().unwrap(),
            [(RunStatus::NoDriver, 1)],
            "counted under its own status"
        );

        // A pipeline without steps says so.
        s.insert_resource(
            &resource("b"),
            &run("R2", "b", Some("empty"), "create", &[]),
        )
        .unwrap();
        let r2 = s.run("R2").unwrap().unwrap();
        assert_eq!(r2.status, RunStatus::NoDriver);
        assert_eq!(
            r2.message,
            "no driver handled the change: pipeline empty has no steps"
        );
    }

    #[test]
    fn a_failed_pipeline_step_is_delivered_again_as_its_next_attempt() {
        let (_d, s) = store();
        s.insert_resource(
            &resource("a"),
            &run("R", "a", Some("p"), "create", &["x", "y"]),
        )
        .unwrap();
        let q = s.claim_next("x", 0).unwrap().unwrap();
        assert_eq!(
            s.write(|tx| retry_run(tx, "R")).unwrap(),
            Retried::NotFailed(RunStatus::Running)
        );
        s.complete(q.id, &result_for(&q, false, "broken")).unwrap();
        assert_eq!(
            s.run("R").unwrap().unwrap().steps[1].status,
            StepStatus::Skipped
        );
        assert_eq!(
            s.write(|tx| retry_run(tx, "R")).unwrap(),
            Retried::Queued(vec![1])
        );
        let run = s.run("R").unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(run.message, "");
        assert_eq!(run.steps[0].status, StepStatus::Queued);
        assert_eq!(run.steps[1].status, StepStatus::Pending, "its turn is back");
        let q = s.claim_next("x", 0).unwrap().unwrap();
        assert_eq!(q.attempt, 2, "the next attempt of the same step");
        assert_eq!(q.event.event, "create");
        assert_eq!(
            q.event.payload,
            serde_json::to_string(&resource("a")).unwrap()
        );
        s.complete(q.id, &result_for(&q, true, "ok")).unwrap();
        let q = s.claim_next("y", 0).unwrap().unwrap();
        s.complete(q.id, &result_for(&q, true, "ok")).unwrap();
        assert_eq!(s.run("R").unwrap().unwrap().status, RunStatus::Succeeded);
        assert_eq!(
            s.write(|tx| retry_run(tx, "R")).unwrap(),
            Retried::NotFailed(RunStatus::Succeeded)
        );
        assert_eq!(
            s.write(|tx| retry_run(tx, "nope")).unwrap(),
            Retried::NotFound
        );
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
        let s = open(&path);
        let old = s.run("OLD").unwrap().unwrap();
        assert_eq!(old.status, RunStatus::Failed);
        assert_eq!(old.steps[0].result.as_ref().unwrap().result.message, "no");
        let q = s.claim_next("d1", 0).unwrap().unwrap();
        assert_eq!(q.event.step, 1);
        assert!(s.complete(q.id, &result_for(&q, true, "ok")).unwrap());
        assert_eq!(s.run("OLD2").unwrap().unwrap().status, RunStatus::Succeeded);
    }

    #[test]
    fn a_store_with_runs_keyed_by_id_alone_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            // A store as the host wrote it, with runs one after another; then the tables of
            // runs and their steps, and the results, as they were before runs had a sequence
            // number.
            let s = open(&path);
            s.insert_resource(&resource("a"), &event("x", "a")).unwrap();
            let q = s.claim_next("x", 0).unwrap().unwrap();
            assert!(s.complete(q.id, &result_for(&q, true, "done")).unwrap());
            let mut second = run("R2", "b", None, "create", &["x"]);
            second.replay_of = Some("R".into());
            s.insert_resource(&resource("b"), &second).unwrap();
        }
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "ALTER TABLE runs RENAME TO runs_now; ALTER TABLE run_steps RENAME TO steps_now;
                 CREATE TABLE runs (run_id TEXT PRIMARY KEY, resource_type TEXT NOT NULL,
                    resource_name TEXT NOT NULL, pipeline TEXT, event TEXT NOT NULL,
                    status TEXT NOT NULL, message TEXT NOT NULL DEFAULT '',
                    created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, payload TEXT,
                    replay_of TEXT);
                 INSERT INTO runs SELECT run_id, resource_type, resource_name, pipeline, event,
                    status, message, created_at, started_at, finished_at, payload, replay_of
                    FROM runs_now ORDER BY seq;
                 CREATE TABLE run_steps (run_id TEXT NOT NULL, step INTEGER NOT NULL,
                    name TEXT NOT NULL, driver TEXT NOT NULL, event TEXT, status TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT '',
                    started_at TEXT, finished_at TEXT, PRIMARY KEY (run_id, step));
                 INSERT INTO run_steps SELECT r.run_id, s.step, s.name, s.driver, s.event,
                    s.status, s.attempts, s.message, s.started_at, s.finished_at
                    FROM steps_now s JOIN runs_now r ON r.seq = s.run;
                 DROP TABLE runs_now; DROP TABLE steps_now;
                 DROP INDEX results_by_run; DROP INDEX results_without_run;
                 ALTER TABLE results DROP COLUMN run;
                 CREATE INDEX results_run ON results (run_id);",
            )
            .unwrap();
        }
        let s = open(&path);
        let first = s.run("R").unwrap().unwrap();
        assert_eq!(first.status, RunStatus::Succeeded);
        assert_eq!(first.steps[0].status, StepStatus::Succeeded);
        assert_eq!(
            first.steps[0].result.as_ref().unwrap().result.message,
            "done"
        );
        // The waiting run moves on through the upgraded tables.
        let q = s.claim_next("x", 0).unwrap().unwrap();
        assert_eq!(q.event.run_id, "R2");
        assert_eq!(
            s.run("R2").unwrap().unwrap().steps[0].status,
            StepStatus::Running
        );
        assert!(s.complete(q.id, &result_for(&q, true, "ok")).unwrap());
        let second = s.run("R2").unwrap().unwrap();
        assert_eq!(second.status, RunStatus::Succeeded);
        assert_eq!(second.replay_of.as_deref(), Some("R"));
        // Newest first, the upgraded runs after a new one; filters use the indexes again.
        s.insert_resource(&resource("c"), &run("R3", "c", None, "create", &["x"]))
            .unwrap();
        let all = RunFilter {
            limit: 10,
            ..Default::default()
        };
        let ids: Vec<_> = s.runs(&all).unwrap().into_iter().map(|r| r.runid).collect();
        assert_eq!(ids, ["R3", "R2", "R"]);
        let succeeded = RunFilter {
            status: Some(RunStatus::Succeeded),
            ..all
        };
        assert_eq!(s.runs(&succeeded).unwrap().len(), 2);
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
            let s = open(&path);
            s.insert_resource(&resource("a"), &event("d1", "a"))
                .unwrap();
            let q = s.claim_next("d1", 0).unwrap().unwrap();
            assert_eq!(q.attempt, 1);
            assert!(s.claim_next("d1", 0).unwrap().is_none());
        }
        let s = open(&path);
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
            result: RunResult {
                run_id: "R".into(),
                driver: "d1".into(),
                message_id: "m".into(),
                event: "create".into(),
                resource_type: "pipe".into(),
                resource_name: "a".into(),
                outcome: Outcome::Success,
                message: "ok".into(),
                data: serde_json::json!({"k": 1}),
                attempts: q.attempt,
                started_at: "t0".into(),
                finished_at: "t1".into(),
            },
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
    fn a_cancelled_run_drops_its_queued_steps() {
        let (_d, s) = store();
        s.insert_resource(
            &resource("a"),
            &run("R", "a", Some("p"), "create", &["x", "y"]),
        )
        .unwrap();
        let why = "cancelled by an operator";
        assert_eq!(s.write(|tx| cancel_run(tx, "R", why)).unwrap(), Some(true));
        assert_eq!(s.queue_depth().unwrap(), 0);
        let run = s.run("R").unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Cancelled);
        assert_eq!(run.steps[0].status, StepStatus::Skipped);
        assert_eq!(run.steps[0].message, why);
        assert_eq!(s.write(|tx| cancel_run(tx, "R", why)).unwrap(), Some(false));
        assert_eq!(s.write(|tx| cancel_run(tx, "nope", why)).unwrap(), None);
    }

    #[test]
    fn a_broadcast_cancelled_during_a_delivery_stays_cancelled_after_its_result() {
        let (_d, s) = store();
        s.insert_resource(&resource("a"), &run("R", "a", None, "create", &["x", "y"]))
            .unwrap();
        let q = s.claim_next("x", 0).unwrap().unwrap();
        let why = "cancelled by an operator";
        assert_eq!(s.write(|tx| cancel_run(tx, "R", why)).unwrap(), Some(true));
        // The delivery that was under way ends; its result is stored, the run stays as it was.
        assert!(s.complete(q.id, &result_for(&q, true, "ok")).unwrap());
        let run = s.run("R").unwrap().unwrap();
        assert_eq!(
            (run.status, run.message.as_str()),
            (RunStatus::Cancelled, why)
        );
        assert_eq!(run.steps[0].status, StepStatus::Succeeded);
        assert_eq!(run.steps[1].status, StepStatus::Skipped);
    }

    #[test]
    fn a_pending_create_stays_a_create() {
        assert_eq!(coalesced_event("create", "update"), "create");
        assert_eq!(coalesced_event("update", "update"), "update");
        assert_eq!(coalesced_event("create", "delete"), "delete");
    }

    #[test]
    fn a_broadcast_ends_when_every_step_has() {
        let step = |n: u32, s: StepStatus, m: &str| (n, format!("d{n}"), s, m.to_string());
        assert_eq!(
            broadcast_end(&[
                step(1, StepStatus::Succeeded, ""),
                step(2, StepStatus::Running, "")
            ]),
            None
        );
        assert_eq!(
            broadcast_end(&[
                step(1, StepStatus::Skipped, "no"),
                step(2, StepStatus::Failed, "bad")
            ]),
            Some((RunStatus::Failed, "step 2 (d2) failed: bad".into()))
        );
        assert_eq!(
            broadcast_end(&[step(1, StepStatus::Superseded, "superseded by run R2")]),
            Some((RunStatus::Superseded, "superseded by run R2".into()))
        );
    }
}
