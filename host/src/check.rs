//! `conveyor-host check [--config host.toml] <file.wasm>`: loads and links a component the way
//! the host would and prints what it is, or says exactly why it would not load. With a config,
//! it also says which of the capabilities the component imports that config grants it.

use std::fmt::Write;
use std::path::Path;

use crate::config::{Config, DriverSettings};
use crate::wasm::Sandbox;
use crate::wasm::cache::compile_uncached;
use crate::wasm::engine::{self, EngineSettings};
use crate::wasm::imports::log::{RunLogger, TracingSink};

/// Checks a driver file; `Ok` holds the report, `Err` the reason it would not load. With a
/// config, the report says what that config grants the driver.
pub async fn check(path: &Path, config: Option<(&Path, &Config)>) -> anyhow::Result<String> {
    let engine = engine::build(&EngineSettings {
        pool_instances: 4,
        max_memory: config.map_or(256 << 20, |(_, c)| c.max_memory()),
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
    if let Some((config_path, config)) = config {
        let settings = config.driver_settings(&info.name);
        writeln!(out, "  with {}:", config_path.display())?;
        if !config.drivers.contains_key(&info.name) {
            writeln!(
                out,
                "    (no [drivers.{}] section: [defaults] apply and nothing is granted)",
                info.name
            )?;
        }
        writeln!(
            out,
            "    budget: timeout {}, cpu {}, memory {}, concurrency {}",
            humantime::format_duration(settings.timeout),
            humantime::format_duration(settings.cpu),
            bytesize::ByteSize(settings.memory),
            settings.concurrency
        )?;
        for line in grants(&info.name, &imports, &settings) {
            writeln!(out, "    {line}")?;
        }
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

fn list<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", ")
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

/// What a config grants a driver, for each capability the component imports: importing an
/// interface is not using it (componentize-py and jco runtimes import the filesystem and the
/// environment whatever the driver does), so only a missing grant the driver may need is
/// worth a warning.
pub fn grants(name: &str, imports: &[String], s: &DriverSettings) -> Vec<String> {
    let imports_any = |prefix: &str| imports.iter().any(|i| i.starts_with(prefix));
    let mut out = Vec::new();
    if imports_any("wasi:http/") {
        out.push(if s.http.allow.is_empty() {
            format!(
                "wasi:http: NOT granted, every request will be refused. Grant hosts with \
                 [drivers.{name}.http] allow = [\"example.com\"], or build the driver without \
                 it (jco: `--disable http fetch-event`)"
            )
        } else {
            format!(
                "wasi:http: granted to {}{}",
                s.http.allow.join(", "),
                if s.http.allow_private {
                    " (private addresses allowed)"
                } else {
                    ""
                }
            )
        });
    }
    if imports_any("wasi:filesystem/") {
        out.push(if s.dirs.is_empty() {
            format!(
                "wasi:filesystem: no directories granted ([[drivers.{name}.dirs]]); the driver sees no files"
            )
        } else {
            let dirs: Vec<String> = s
                .dirs
                .iter()
                .map(|d| format!("{} -> {} ({:?})", d.host.display(), d.guest, d.mode))
                .collect();
            format!("wasi:filesystem: granted {}", dirs.join(", "))
        });
    }
    if imports_any("wasi:cli/environment") {
        let mut names: Vec<&str> = s.env.iter().map(|(k, _)| k.as_str()).collect();
        let secrets: Vec<&str> = s.secrets.iter().map(|(k, _)| k.as_str()).collect();
        out.push(if names.is_empty() && secrets.is_empty() {
            format!("environment: empty ([drivers.{name}] env and secrets grant variables)")
        } else {
            names.sort();
            format!(
                "environment: {} {}",
                list(&names),
                if secrets.is_empty() {
                    String::new()
                } else {
                    format!("and secrets {} (redacted from logs)", secrets.join(", "))
                }
            )
            .trim_end()
            .to_string()
        });
    }
    if imports_any("wasi:sockets/") {
        out.push("wasi:sockets: denied (this host never grants raw sockets)".into());
    }
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

    #[test]
    fn grants_say_what_the_config_gives() {
        let config = Config::parse(
            "drivers_dir = \".\"\ndata_dir = \".\"\n[drivers.js-driver]\nenv = { MODE = \"ci\" }\n\
             [drivers.js-driver.http]\nallow = [\"example.com\"]\n",
            Path::new("/tmp"),
        )
        .unwrap();
        let imports = [
            "wasi:http/outgoing-handler@0.2.10".to_string(),
            "wasi:cli/environment@0.2.10".to_string(),
        ];
        let granted = grants("js-driver", &imports, &config.driver_settings("js-driver"));
        assert_eq!(granted[0], "wasi:http: granted to example.com");
        assert_eq!(granted[1], "environment: MODE");
        let other = grants("other", &imports, &config.driver_settings("other"));
        assert!(other[0].starts_with("wasi:http: NOT granted"), "{other:?}");
        assert!(other[0].contains("[drivers.other.http]"), "{other:?}");
    }
}
