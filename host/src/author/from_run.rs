//! `conveyor-host test DRIVER.wasm --from-run RUNID --data-dir DIR`: a stored run turned
//! into a fixture, so a failure seen in a host can be rerun, fixed and kept as a test. The
//! fixture gets the driver's step's event and the run's stored payload (written beside it as
//! JSON, with the resource type's definition), and expects what the fix should bring:
//! `outcome = "success"`. How the run ended is noted in the fixture's comments.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::store::{Store, StoreError};

/// Why no fixture was made from the run.
#[derive(Debug, thiserror::Error)]
pub enum FromRunError {
    /// The data directory holds no store.
    #[error("{} holds no conveyor-host store (conveyor-host.db)", .0.display())]
    NoStore(PathBuf),
    /// The store could not be read.
    #[error("cannot read the store: {0}")]
    Store(#[from] StoreError),
    /// No such run.
    #[error("run {0} not found")]
    NotFound(String),
    /// The run has no step for the driver.
    #[error("run {run} has no step for driver {driver} (its steps' drivers: {steps})")]
    NoStep {
        /// The run.
        run: String,
        /// The driver.
        driver: String,
        /// The drivers it has steps for.
        steps: String,
    },
    /// The run was stored without its payload.
    #[error("run {0} was stored without its payload (by an older version of the host)")]
    NoPayload(String),
    /// Writing the fixture failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Writes the fixture for `driver`'s step of run `run_id` in `data_dir`'s store to `out`, with
/// its resource (and the resource type's definition, when stored) as JSON files beside it.
/// Returns the files written.
pub fn write_fixture(
    data_dir: &Path,
    run_id: &str,
    driver: &str,
    out: &Path,
) -> Result<Vec<PathBuf>, FromRunError> {
    let db = data_dir.join("conveyor-host.db");
    if !db.is_file() {
        return Err(FromRunError::NoStore(data_dir.to_path_buf()));
    }
    let store = Store::open_read_only(&db)?;
    let run = store
        .run(run_id)?
        .ok_or_else(|| FromRunError::NotFound(run_id.to_string()))?;
    let step = run
        .steps
        .iter()
        .find(|s| s.driver == driver)
        .ok_or_else(|| FromRunError::NoStep {
            run: run_id.to_string(),
            driver: driver.to_string(),
            steps: run
                .steps
                .iter()
                .map(|s| s.driver.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let payload = store
        .run_payload(run_id)?
        .ok_or_else(|| FromRunError::NoPayload(run_id.to_string()))?;
    let definition = store.definition(&run.resource_type)?;

    let stem = out.file_stem().map_or_else(
        || "fixture".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let dir = out.parent().unwrap_or(Path::new(""));
    let write = |path: &Path, text: &str| {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| FromRunError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(path, text).map_err(|source| FromRunError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut written = Vec::new();
    let resource_file = format!("{stem}.resource.json");
    write(&dir.join(&resource_file), &pretty(&payload))?;
    written.push(dir.join(&resource_file));
    let definition_file = format!("{stem}.definition.json");
    if let Some(def) = &definition {
        let json = serde_json::to_string_pretty(def).map_err(StoreError::from)?;
        write(&dir.join(&definition_file), &json)?;
        written.push(dir.join(&definition_file));
    }

    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let ended = match &step.result {
        Some(r) => format!("{}: {}", r.result.outcome, one_line(&r.result.message)),
        None => format!("{}: {}", step.status.as_str(), one_line(&step.message)),
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# Made by `conveyor-host test --from-run {run_id}` from step {} ({driver}) of run {run_id}",
        step.step
    );
    let _ = writeln!(
        text,
        "# ({} of {}/{}), which ended {ended}",
        run.event, run.resource_type, run.resource_name
    );
    let _ = writeln!(
        text,
        "# It expects what the fix should bring: success. Edit as needed."
    );
    let _ = writeln!(
        text,
        "event = {}",
        quote(step.event.as_deref().unwrap_or(&run.event))
    );
    let _ = writeln!(text, "resource_file = {}", quote(&resource_file));
    if definition.is_some() {
        let _ = writeln!(text, "definition_files = [{}]", quote(&definition_file));
    }
    if let Some(p) = &run.pipeline {
        let _ = writeln!(text, "pipeline = {}", quote(p));
    }
    let _ = writeln!(text, "\n[expect]\noutcome = \"success\"");
    write(out, &text)?;
    written.insert(0, out.to_path_buf());
    Ok(written)
}

/// The payload, pretty-printed when it is JSON.
fn pretty(payload: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| payload.to_string())
}
