//! `[retention]`: the pruner removes the oldest finished runs (their steps, results and
//! lines with them) and the oldest log lines past what is kept, and never a run that is not
//! over, nor its lines. By count here, where what must go is exact; the age rule's
//! comparisons are unit-tested in the store.

use std::time::Duration;

use serde_json::json;
use tokio::sync::OnceCell;

use crate::Fixture;

/// What was pruned: the test runs in creation order, the sample run (running throughout),
/// and what the API said of each once the pruner was done.
struct Pruned {
    /// `GET /runs/{id}` status of each of the six test runs, oldest first.
    runs: Vec<u16>,
    /// Stored lines of each of the six test runs.
    lines: Vec<usize>,
    /// The sample run's status and stored lines at that moment.
    running: (String, usize),
}

async fn pruned() -> &'static Pruned {
    static PRUNED: OnceCell<Pruned> = OnceCell::const_new();
    PRUNED
        .get_or_init(|| async {
            let fixture = Fixture::start(
                &["sample-driver", "test-driver"],
                "[retention]\nruns = 3\nlogs = 4\ninterval = \"100ms\"\n",
            );
            let host = &fixture.host;
            host.define("resource-1", json!({"type": "object"})).await;
            host.define("test", json!({"type": "object"})).await;
            // A run that goes on while the others come and go: five lines, 2 s apart.
            let sample = host
                .create("resource-1", "long", json!({"delay_ms": 2000}))
                .await;
            support::wait_until(
                Duration::from_secs(30),
                "the long run's first line",
                || async { !host.logs(&sample).await.is_empty() },
            )
            .await;
            let mut runs = Vec::new();
            for i in 0..6 {
                let run = host
                    .create(
                        "test",
                        &format!("t{i}"),
                        json!({"action": "ok", "lines": 2}),
                    )
                    .await;
                host.finished_run(&run, Duration::from_secs(30)).await;
                runs.push(run);
            }
            // Done when the third-oldest run is gone and the fourth's lines are (the two
            // rules, each applied to its end).
            support::wait_until(Duration::from_secs(30), "the pruner", || async {
                host.get(&format!("/runs/{}", runs[2])).await.0 == 404
                    && host.logs(&runs[3]).await.is_empty()
            })
            .await;
            let mut statuses = Vec::new();
            let mut lines = Vec::new();
            for run in &runs {
                statuses.push(host.get(&format!("/runs/{run}")).await.0);
                lines.push(host.logs(run).await.len());
            }
            let (_, long) = host.get(&format!("/runs/{sample}")).await;
            let running = (
                long["status"].as_str().unwrap_or_default().to_string(),
                host.logs(&sample).await.len(),
            );
            Pruned {
                runs: statuses,
                lines,
                running,
            }
        })
        .await
}

/// The three oldest finished runs are removed; the three newest are kept.
#[tokio::test]
async fn the_oldest_finished_runs_are_removed_the_newest_kept() {
    assert_eq!(pruned().await.runs, [404, 404, 404, 200, 200, 200]);
}

/// The four newest lines are kept (the two newest runs' two each); older ones go, those of
/// removed runs with them.
#[tokio::test]
async fn the_oldest_lines_are_removed_the_newest_kept() {
    assert_eq!(pruned().await.lines, [0, 0, 0, 0, 2, 2]);
}

/// A run that is not over is never removed, nor are its lines, however old.
#[tokio::test]
async fn a_running_run_and_its_lines_are_kept() {
    let (status, lines) = &pruned().await.running;
    assert_eq!(status, "running");
    assert!(*lines >= 1, "{lines} lines");
}

/// `[retention]` values are an age or a count; anything else is refused naming the key.
#[test]
fn a_bad_retention_value_is_refused() {
    let dir = support::tempdir();
    std::fs::write(
        dir.path().join("host.toml"),
        "drivers_dir = \"d\"\ndata_dir = \"x\"\n[retention]\nruns = \"soon\"\n",
    )
    .expect("write a config");
    let config = dir.path().join("host.toml");
    let (code, _, err) = crate::run_cli(&["run", "--config", config.to_str().unwrap_or("")]);
    assert_ne!(code, 0);
    assert!(err.contains("runs") && err.contains("soon"), "{err}");
}
