//! The guarantees of docs/drivers.md#guarantees that need several events to show.

use std::time::Duration;

use serde_json::json;
use support::http::run_id_of;
use support::{Host, parse_time};

use crate::workdir;

/// Twenty updates of one resource to a driver with `concurrency = 8`: every run ends (run, or
/// superseded by a later update while it waited), and no two reconciles of the resource
/// overlap in time.
#[tokio::test]
async fn one_reconcile_per_resource_at_a_time() {
    let dir = workdir(&["test-driver"]);
    let host = Host::start(dir.path(), "[drivers.test-driver]\nconcurrency = 8\n");
    host.define("test", json!({"type": "object"})).await;
    let spec = json!({"action": "sleep", "ms": 100});
    let mut runs = vec![host.create("test", "one", spec.clone()).await];
    let client = reqwest::Client::new();
    for _ in 0..19 {
        let response = client
            .put(host.at("/resources/test/one"))
            .json(&json!({"name": "one", "resource": "test", "spec": spec}))
            .send()
            .await
            .expect("PUT the resource");
        assert_eq!(response.status(), 200);
        runs.push(run_id_of(&response));
    }
    let mut spans = Vec::new();
    for run in &runs {
        let over = host.finished_run(run, Duration::from_secs(120)).await;
        match over["status"].as_str() {
            Some("succeeded") => {
                let r = &over["results"][0];
                spans.push((parse_time(&r["started_at"]), parse_time(&r["finished_at"])));
            }
            Some("superseded") => {}
            other => panic!("run {run} ended {other:?}: {over}"),
        }
    }
    assert!(spans.len() >= 2, "only {} of the updates ran", spans.len());
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "reconciles overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// The host's store, opened beside the host (WAL: both can write), for injecting faults.
fn store_of(dir: &std::path::Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(dir.join("data").join("conveyor-host.db"))
        .expect("open the host's store");
    db.busy_timeout(Duration::from_secs(5))
        .expect("a busy timeout");
    db
}

/// Makes every insert into `table` fail, as a full disk or a broken file would.
fn fail_inserts_into(db: &rusqlite::Connection, table: &str) {
    db.execute_batch(&format!(
        "CREATE TRIGGER injected_fault BEFORE INSERT ON {table} \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END;"
    ))
    .expect("install the fault");
}

fn heal(db: &rusqlite::Connection) {
    db.execute_batch("DROP TRIGGER injected_fault")
        .expect("remove the fault");
}

/// A change whose event cannot be stored is not stored at all: no resource, no run; once the
/// store works again, the same change succeeds.
#[tokio::test]
async fn a_change_that_fails_to_store_leaves_nothing_behind() {
    let dir = workdir(&["test-driver"]);
    let host = Host::start(dir.path(), "");
    host.define("test", json!({"type": "object"})).await;
    let db = store_of(dir.path());
    fail_inserts_into(&db, "queue");
    let (status, body) = host
        .post(
            "/resources",
            &json!({"name": "half", "resource": "test", "spec": {}}),
        )
        .await;
    assert_eq!(status, 500, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(host.get("/resources/test/half").await.0, 404);
    let (_, runs) = host.get("/runs?resource=half").await;
    assert_eq!(runs, json!([]));
    heal(&db);
    let run = host.create("test", "half", json!({})).await;
    assert_eq!(host.result(&run).await["success"], true);
}

/// A result that cannot be stored leaves its event in the queue and its run going (nothing
/// half-stored); the event runs again once the store works, and its run ends with one result.
#[tokio::test]
async fn a_result_that_fails_to_store_is_delivered_again() {
    let dir = workdir(&["test-driver"]);
    let host = Host::start(dir.path(), "");
    host.define("test", json!({"type": "object"})).await;
    let db = store_of(dir.path());
    fail_inserts_into(&db, "results");
    let run = host.create("test", "again", json!({"lines": 1})).await;
    // The driver ran (its line is stored before the result is), and the result was refused.
    support::wait_until(
        Duration::from_secs(30),
        "the first attempt's log line",
        || async { !host.logs(&run).await.is_empty() },
    )
    .await;
    support::wait_until(
        Duration::from_secs(30),
        "the refused settlement",
        || async { host.log().contains("could not settle the event") },
    )
    .await;
    let (_, during) = host.get(&format!("/runs/{run}")).await;
    assert_eq!(during["results"], json!([]), "{during}");
    assert!(
        matches!(during["status"].as_str(), Some("queued" | "running")),
        "{during}"
    );
    heal(&db);
    let over = host.finished_run(&run, Duration::from_secs(30)).await;
    assert_eq!(over["status"], "succeeded", "{over}");
    let results = over["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{over}");
    assert!(results[0]["attempts"].as_u64() >= Some(2), "{over}");
}

/// Coalescing never drops an event in flight: while a resource's create runs, two updates of
/// the same resource arrive; the first is superseded by the second while it waits, and the
/// create in flight and the newest update both run.
#[tokio::test]
async fn coalescing_keeps_the_event_in_flight_for_the_same_resource() {
    let dir = workdir(&["test-driver"]);
    let host = Host::start(dir.path(), "");
    host.define("test", json!({"type": "object"})).await;
    let created = host
        .create("test", "same", json!({"action": "sleep", "ms": 1000}))
        .await;
    host.wait_for_run(&created, "/status", "running").await;
    let client = reqwest::Client::new();
    let mut updates = Vec::new();
    for lines in [2, 3] {
        let response = client
            .put(host.at("/resources/test/same"))
            .json(&json!({"spec": {"action": "ok", "lines": lines}}))
            .send()
            .await
            .expect("PUT the resource");
        assert_eq!(response.status(), 200);
        updates.push(run_id_of(&response));
    }
    let in_flight = host.finished_run(&created, Duration::from_secs(30)).await;
    assert_eq!(in_flight["status"], "succeeded", "{in_flight}");
    let superseded = host
        .finished_run(&updates[0], Duration::from_secs(30))
        .await;
    assert_eq!(superseded["status"], "superseded", "{superseded}");
    assert_eq!(
        superseded["steps"][0]["message"],
        format!("superseded by run {}", updates[1]),
        "{superseded}"
    );
    let newest = host
        .finished_run(&updates[1], Duration::from_secs(30))
        .await;
    assert_eq!(newest["status"], "succeeded", "{newest}");
    // The driver saw the create, so the newest state comes as an update, at version 3.
    assert_eq!(newest["results"][0]["data"]["event"], "update", "{newest}");
    assert_eq!(newest["results"][0]["data"]["version"], "3", "{newest}");
}

/// The test driver as a second version: its build marker patched from `v1` to `v2`.
pub(crate) fn test_driver_v2() -> Vec<u8> {
    patched_test_driver(b"conveyor-test-build:v1", b"conveyor-test-build:v2")
}

/// The test driver with `marker`, which appears once in the component, replaced by `with`
/// (of the same length).
pub(crate) fn patched_test_driver(marker: &[u8], with: &[u8]) -> Vec<u8> {
    assert_eq!(marker.len(), with.len());
    let mut bytes = std::fs::read(support::rust_driver("test-driver")).expect("read test-driver");
    let at: Vec<usize> = bytes
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the marker appears once in the component");
    bytes[at[0]..at[0] + with.len()].copy_from_slice(with);
    bytes
}

/// Writes a file beside the target and renames it into place, as a deploy would.
pub(crate) fn drop_in(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write the new file");
    std::fs::rename(&tmp, dir.join(name)).expect("rename it into place");
}

/// A new version dropped in while a reconcile runs and five events wait: the reconcile in
/// flight finishes on the old version, and each of the five runs on the new one.
#[tokio::test]
async fn hot_reload_finishes_in_flight_on_the_old_version_and_queued_on_the_new() {
    let dir = workdir(&["test-driver"]);
    let host = Host::start(dir.path(), "");
    host.define("test", json!({"type": "object"})).await;
    let in_flight = host
        .create("test", "long", json!({"action": "sleep", "ms": 10_000}))
        .await;
    host.wait_for_run(&in_flight, "/status", "running").await;
    let mut queued = Vec::new();
    for i in 0..5 {
        queued.push(host.create("test", &format!("q{i}"), json!({})).await);
    }
    let v2 = test_driver_v2();
    drop_in(&dir.path().join("drivers"), "test-driver.wasm", &v2);
    host.wait_for_driver_list("the new version", |list| {
        support::http::find_driver(list, "test-driver")
            .filter(|d| d["loads"].as_u64().is_some_and(|n| n >= 2))
    })
    .await;
    let (_, during) = host.get(&format!("/runs/{in_flight}")).await;
    assert_eq!(
        during["status"], "running",
        "the swap came after the reconcile: {during}"
    );
    for run in &queued {
        assert_eq!(
            host.get(&format!("/runs/{run}")).await.1["status"],
            "queued",
            "an event waited at the swap"
        );
    }
    let old = host.finished_run(&in_flight, Duration::from_secs(30)).await;
    assert_eq!(old["results"][0]["data"]["build"], "v1", "{old}");
    for run in &queued {
        let new = host.finished_run(run, Duration::from_secs(30)).await;
        let results = new["results"].as_array().expect("results");
        assert_eq!(results.len(), 1, "{new}");
        assert_eq!(results[0]["data"]["build"], "v2", "{new}");
    }
}

/// A driver whose file is removed while an event of it waits in the queue: the event stays
/// queued (it does not fail while the driver is away, up to `runs.missing_driver_wait`), and
/// runs when the driver returns.
#[tokio::test]
async fn a_removed_drivers_queued_events_wait_for_its_return() {
    let dir = workdir(&["test-driver"]);
    let drivers = dir.path().join("drivers");
    let host = Host::start(dir.path(), "");
    host.define("test", json!({"type": "object"})).await;
    let busy = host
        .create("test", "busy", json!({"action": "sleep", "ms": 2_000}))
        .await;
    host.wait_for_run(&busy, "/status", "running").await;
    let waiting = host.create("test", "waiting", json!({})).await;
    let file = drivers.join("test-driver.wasm");
    let bytes = std::fs::read(&file).expect("read the driver");
    std::fs::remove_file(&file).expect("remove the driver");
    host.wait_for_driver_list("the driver unloaded", |list| {
        support::http::find_driver(list, "test-driver")
            .is_none()
            .then_some(serde_json::Value::Null)
    })
    .await;
    // The reconcile in flight finishes on the instance it had; the waiting event stays.
    let finished = host.finished_run(&busy, Duration::from_secs(30)).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    let (_, run) = host.get(&format!("/runs/{waiting}")).await;
    assert!(
        matches!(run["status"].as_str(), Some("queued" | "running")) && run["results"] == json!([]),
        "the waiting event is still waiting: {run}"
    );
    drop_in(&drivers, "test-driver.wasm", &bytes);
    let over = host.finished_run(&waiting, Duration::from_secs(60)).await;
    assert_eq!(over["status"], "succeeded", "{over}");
    assert_eq!(over["results"].as_array().map(Vec::len), Some(1), "{over}");
}

/// A settlement that fails after its result is written (here: removing the event from the
/// queue fails) stores no result: the result, the event's removal and the run's next state
/// are one transaction. Once the store heals, the run ends with exactly one result.
#[tokio::test]
async fn a_settlement_that_fails_midway_stores_no_result() {
    let dir = workdir(&["test-driver"]);
    let host = Host::start(dir.path(), "");
    host.define("test", json!({"type": "object"})).await;
    let db = store_of(dir.path());
    db.execute_batch(
        "CREATE TRIGGER injected_fault BEFORE DELETE ON queue \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
    )
    .expect("install the fault");
    let run = host.create("test", "midway", json!({})).await;
    support::wait_until(
        Duration::from_secs(30),
        "the refused settlement",
        || async { host.log().contains("could not settle the event") },
    )
    .await;
    let (_, during) = host.get(&format!("/runs/{run}")).await;
    assert_eq!(
        during["results"],
        json!([]),
        "a result outlived its transaction: {during}"
    );
    heal(&db);
    let over = host.finished_run(&run, Duration::from_secs(30)).await;
    assert_eq!(over["status"], "succeeded", "{over}");
    assert_eq!(over["results"].as_array().map(Vec::len), Some(1), "{over}");
}
