//! The driver author's loop, without a server: [`scaffold`] makes a project
//! (`conveyor-host new`), and `conveyor-host test` runs a driver on [`fixture`] files in the
//! host's own sandbox ([`runner`]) with its API client answered from an in-memory store
//! ([`store`], the host's control plane), checks what it did against the expectations
//! ([`report`]), reruns on change (`--watch`), and turns a stored run into a fixture
//! ([`from_run`]).

pub mod fixture;
pub mod from_run;
pub mod report;
pub mod runner;
pub mod scaffold;
pub mod store;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;

use crate::config::Config;
use fixture::Fixture;
use runner::{TestDriver, Tester};

pub use scaffold::{Lang, scaffold as new_project};

/// What `conveyor-host test` was asked.
#[derive(Debug, Clone)]
pub struct TestCommand {
    /// The driver component.
    pub wasm: PathBuf,
    /// Fixture files, or directories of `*.toml` fixtures.
    pub fixtures: Vec<PathBuf>,
    /// A host configuration for the driver's budgets and grants.
    pub config: Option<PathBuf>,
    /// Rerun whenever the component or a fixture changes.
    pub watch: bool,
    /// Make a fixture of a stored run first (and run it with the others).
    pub from_run: Option<FromRun>,
}

/// `--from-run RUNID --data-dir DIR [--out FILE]`.
#[derive(Debug, Clone)]
pub struct FromRun {
    /// The run.
    pub run_id: String,
    /// The host's data directory.
    pub data_dir: PathBuf,
    /// The fixture file to write (`run-<RUNID>.toml` by default).
    pub out: Option<PathBuf>,
}

/// How many fixtures passed and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Passed (or ran, for a fixture without expectations).
    pub passed: usize,
    /// Failed, or could not be run.
    pub failed: usize,
}

/// Runs `conveyor-host test`, printing a line per fixture and a closing summary to stdout;
/// `Ok(false)` when a fixture failed. With `watch`, reruns on every change until Ctrl-C and
/// returns how the last round went.
pub async fn test(cmd: TestCommand) -> anyhow::Result<bool> {
    let config = match &cmd.config {
        Some(path) => Some(Config::load(path)?),
        None => None,
    };
    let tester = Tester::new(config)?;
    let mut fixtures = cmd.fixtures.clone();
    if let Some(from) = &cmd.from_run {
        let driver = tester.load(&cmd.wasm).await?;
        let out = from
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("run-{}.toml", from.run_id)));
        let written = from_run::write_fixture(&from.data_dir, &from.run_id, &driver.name, &out)?;
        for f in &written {
            println!("wrote {}", f.display());
        }
        fixtures.push(out);
    }
    let mut summary = round(&tester, &cmd.wasm, &fixtures).await;
    if !cmd.watch {
        return Ok(summary.failed == 0);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watched = watched(&cmd.wasm, &fixtures);
    let mut debouncer = notify_debouncer_mini::new_debouncer(
        Duration::from_millis(300),
        move |events: notify_debouncer_mini::DebounceEventResult| {
            let relevant = events.is_ok_and(|events| {
                events.iter().any(|e| {
                    e.path
                        .extension()
                        .is_some_and(|x| x == "wasm" || x == "toml" || x == "json")
                })
            });
            if relevant {
                // The receiver is gone only once the command ends.
                let _ = tx.send(());
            }
        },
    )?;
    for dir in &watched {
        debouncer
            .watcher()
            .watch(dir, RecursiveMode::NonRecursive)?;
    }
    println!("watching {} for changes (Ctrl-C to stop)", list(&watched));
    loop {
        tokio::select! {
            changed = rx.recv() => if changed.is_none() { break },
            _ = tokio::signal::ctrl_c() => break,
        }
        // Drain what came with the same change.
        while rx.try_recv().is_ok() {}
        println!("\nchanged: running again");
        summary = round(&tester, &cmd.wasm, &fixtures).await;
    }
    Ok(summary.failed == 0)
}

/// The directories to watch: the component's and each fixture's.
fn watched(wasm: &Path, fixtures: &[PathBuf]) -> BTreeSet<PathBuf> {
    std::iter::once(wasm)
        .chain(fixtures.iter().map(PathBuf::as_path))
        .map(|p| {
            if p.is_dir() {
                p.to_path_buf()
            } else {
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf()
            }
        })
        .collect()
}

fn list(paths: &BTreeSet<PathBuf>) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One round: load the driver, run every fixture, print the summary.
async fn round(tester: &Tester, wasm: &Path, fixtures: &[PathBuf]) -> Summary {
    let mut summary = Summary::default();
    let driver = match tester.load(wasm).await {
        Ok(d) => d,
        Err(e) => {
            println!("ERROR {e:#}");
            summary.failed = fixtures.len().max(1);
            println!("\n{} passed, {} failed", summary.passed, summary.failed);
            return summary;
        }
    };
    let files = match fixture_files(fixtures) {
        Ok(files) => files,
        Err(e) => {
            println!("ERROR {e}");
            summary.failed = 1;
            println!("\n{} passed, {} failed", summary.passed, summary.failed);
            return summary;
        }
    };
    for file in &files {
        if one(tester, &driver, file).await {
            summary.passed += 1;
        } else {
            summary.failed += 1;
        }
    }
    println!("\n{} passed, {} failed", summary.passed, summary.failed);
    summary
}

/// Runs one fixture and prints its line (and, when it failed, what differed and what the run
/// did); `true` when it passed.
async fn one(tester: &Tester, driver: &TestDriver, file: &Path) -> bool {
    let name = file.display();
    let fixture = match Fixture::read(file) {
        Ok(f) => f,
        Err(e) => {
            println!("ERROR {e}");
            return false;
        }
    };
    let ran = match tester.run(driver, &fixture).await {
        Ok(r) => r,
        Err(e) => {
            println!("ERROR {name}: {e}");
            return false;
        }
    };
    let ms = ran.elapsed.as_secs_f64() * 1e3;
    let Some(expect) = &fixture.expect else {
        println!("RAN  {name} ({ms:.0} ms, no expectations)");
        print!("{}", report::describe(&ran, "    "));
        return true;
    };
    let differences = report::differences(expect, &ran);
    if differences.is_empty() {
        println!("PASS {name} ({ms:.0} ms)");
        return true;
    }
    println!("FAIL {name} ({ms:.0} ms)");
    for d in &differences {
        println!("  - {d}");
    }
    println!("  the run:");
    print!("{}", report::describe(&ran, "    "));
    false
}

/// The fixture files: each file given, and the `*.toml` files of each directory given (in
/// name order). None given: `fixtures/` in the current directory.
fn fixture_files(given: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let given = if given.is_empty() {
        vec![PathBuf::from("fixtures")]
    } else {
        given.to_vec()
    };
    let mut out = Vec::new();
    for path in given {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| format!("{}: cannot list it: {e}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(format!("{}: no *.toml fixtures in it", path.display()));
            }
            out.extend(found);
        } else if path.is_file() {
            out.push(path);
        } else {
            return Err(format!(
                "{}: no such fixture file or directory",
                path.display()
            ));
        }
    }
    Ok(out)
}
