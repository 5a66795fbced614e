//! `conveyor-host check <file.wasm>`: loads and links a component the way the host would and
//! prints what it is, or says exactly why it would not load.

use std::fmt::Write;
use std::path::Path;

use crate::wasm::Sandbox;
use crate::wasm::cache::compile_uncached;
use crate::wasm::engine::{self, EngineSettings};
use crate::wasm::imports::log::{RunLogger, TracingSink};

/// Checks a driver file; `Ok` holds the report, `Err` the reason it would not load.
pub async fn check(path: &Path) -> anyhow::Result<String> {
    let engine = engine::build(&EngineSettings {
        pool_instances: 4,
        max_memory: 256 << 20,
    })?;
    engine::start_epoch_ticker(&engine)?;
    let sandbox = Sandbox::new(engine.clone())?;
    let file = path.display();
    let compiled = {
        let engine = engine.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || compile_uncached(&engine, &path)).await?
    }
    .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;

    let mut imports: Vec<String> = compiled
        .component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    imports.sort();
    let exports: Vec<String> = compiled
        .component
        .component_type()
        .exports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();

    let pre = sandbox.prepare(&compiled.component).map_err(|e| {
        anyhow::anyhow!(
            "{file}: it does not fit the conveyor:driver@0.1.0 `driver` world: {e:#}\n  it exports: {}\n  it imports:\n    {}",
            list(&exports),
            imports.join("\n    ")
        )
    })?;
    let logger = RunLogger::new(std::sync::Arc::new(TracingSink), "check", "check", None);
    let info = sandbox
        .info(&pre, logger)
        .await
        .map_err(|f| anyhow::anyhow!("{file}: its info() failed: {f}"))?;

    let mut out = String::new();
    writeln!(out, "{file}: ok")?;
    writeln!(out, "  name:      {}", info.name)?;
    writeln!(out, "  resources: {}", list(&info.resources))?;
    let events = if info.events.is_empty() {
        "all".to_string()
    } else {
        list(&info.events)
    };
    writeln!(out, "  events:    {events}")?;
    writeln!(out, "  sha256:    {}", compiled.sha256)?;
    writeln!(
        out,
        "  compiled in {:.0} ms",
        compiled.elapsed.as_secs_f64() * 1e3
    )?;
    writeln!(out, "  imports:")?;
    for i in &imports {
        writeln!(out, "    {i}")?;
    }
    let check = crate::wasm::driver::DriverInfo {
        name: info.name,
        resources: info.resources,
        events: info.events,
    }
    .validate();
    if let Err(e) = check {
        anyhow::bail!("{out}{file}: its info() is not usable: {e}");
    }
    Ok(out)
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}
