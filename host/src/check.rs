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
    writeln!(out, "  capabilities it imports:")?;
    let caps = capabilities(&imports);
    if caps.is_empty() {
        writeln!(out, "    (none beyond logging and the API client)")?;
    }
    for c in caps {
        writeln!(out, "    {c}")?;
    }
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

/// The capabilities behind a component's imports, each with what grants it: importing an
/// interface only says the driver may ask; the host config decides what it gets.
pub fn capabilities(imports: &[String]) -> Vec<&'static str> {
    const KNOWN: [(&str, &str); 5] = [
        (
            "wasi:http/",
            "wasi:http        outbound HTTP (granted by [drivers.<name>.http] allow)",
        ),
        (
            "wasi:filesystem/",
            "wasi:filesystem  files (granted by [[drivers.<name>.dirs]]; none by default)",
        ),
        (
            "wasi:cli/environment",
            "wasi:cli/environment  environment variables (granted by [drivers.<name>.env] and .secrets)",
        ),
        (
            "wasi:sockets/",
            "wasi:sockets     raw sockets (always denied by this host)",
        ),
        (
            "wasi:random/",
            "wasi:random      random numbers (always available)",
        ),
    ];
    let mut out: Vec<&'static str> = KNOWN
        .iter()
        .filter(|(prefix, _)| imports.iter().any(|i| i.starts_with(prefix)))
        .map(|(_, text)| *text)
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_named() {
        let imports = [
            "wasi:http/outgoing-handler@0.2.4".to_string(),
            "wasi:filesystem/preopens@0.2.4".to_string(),
            "conveyor:driver/log@0.1.0".to_string(),
        ];
        let caps = capabilities(&imports);
        assert_eq!(caps.len(), 2);
        assert!(caps[0].starts_with("wasi:http"));
        assert!(caps[1].starts_with("wasi:filesystem"));
    }
}
