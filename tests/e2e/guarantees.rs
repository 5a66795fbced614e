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
