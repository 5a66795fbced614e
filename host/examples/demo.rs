//! The demo behind `examples/demo.sh`: starts the real `conveyor-host` binary in embedded mode
//! with the example drivers (the Rust sample driver, the Python driver and the JavaScript
//! driver), and for each creates a resource definition and a resource over HTTP, prints the
//! driver's log lines as they stream (Server-Sent Events) and its result; then stops the host.
//!
//! Usage: `demo <examples dir>` (the directory holding `drivers/` and `resources/`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::Value;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let examples = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("examples"));
    let examples = std::path::absolute(&examples)?;
    let host_bin = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("conveyor-host"))
        .context("cannot locate the conveyor-host binary next to the demo")?;
    if !host_bin.exists() {
        bail!("{} is missing: run examples/demo.sh", host_bin.display());
    }

    // A fresh data directory and a free port, so the demo never collides with a running host.
    let data = tempfile::tempdir()?;
    let config = data.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "drivers_dir = {:?}\ndata_dir = \"data\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n[defaults]\ntimeout = \"30s\"\nmemory = \"64MiB\"\n\n# A capability: the Python driver may read GREETING.\n[drivers.python-driver]\nenv = {{ GREETING = \"Hello from the host config\" }}\n",
            examples.join("drivers")
        ),
    )?;
    println!("==> starting conveyor-host (embedded mode)");
    let mut child = Command::new(&host_bin)
        .args(["run", "--config"])
        .arg(&config)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", host_bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("conveyor-host listening on ") {
                    break url.to_string();
                }
            }
            _ => bail!("the host exited before it was ready"),
        }
    };
    println!("    listening on {url}");

    let outcome = demo(&url, &examples).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait()?;
    println!("==> host stopped ({status})");
    outcome
}

/// The demo's drivers: (driver, definition file, resource file) under `examples/resources/`.
const DEMOS: [(&str, &str, &str); 3] = [
    ("sample-driver", "definition.json", "resource.json"),
    (
        "python-driver",
        "python-task.definition.json",
        "python-task.json",
    ),
    ("js-driver", "js-task.definition.json", "js-task.json"),
];

async fn demo(url: &str, examples: &Path) -> anyhow::Result<()> {
    let http = reqwest::Client::new();

    // The API serves at once; a Python or JavaScript component compiles for seconds on its
    // first load (then it comes from the compile cache).
    let mut announced = false;
    loop {
        let health: Value = http
            .get(format!("{url}/health"))
            .send()
            .await?
            .json()
            .await?;
        let loading = health["drivers"]["loading"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if loading.is_empty() {
            break;
        }
        if !announced {
            let files: Vec<&str> = loading.iter().filter_map(Value::as_str).collect();
            println!("    compiling (first load only): {}", files.join(", "));
            announced = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drivers: Value = http
        .get(format!("{url}/drivers"))
        .send()
        .await?
        .json()
        .await?;
    for d in drivers.as_array().into_iter().flatten() {
        match d["name"].as_str() {
            Some(name) => println!(
                "    driver {name} listens to {} ({}, {} in {:.0} ms)",
                d["resources"],
                d["state"].as_str().unwrap_or(""),
                d["loaded_from"].as_str().unwrap_or(""),
                d["load_ms"].as_f64().unwrap_or(0.0)
            ),
            None => println!("    {} {}: {}", d["file"], d["state"], d["error"]),
        }
    }

    let mut failed = Vec::new();
    for (driver, definition, resource) in DEMOS {
        let result = run_one(&http, url, examples, driver, definition, resource).await?;
        if result["success"] != true {
            failed.push(driver);
        }
    }
    if !failed.is_empty() {
        bail!("these drivers did not succeed: {}", failed.join(", "));
    }
    Ok(())
}

/// Creates one driver's definition and resource, streams its log and prints its result.
async fn run_one(
    http: &reqwest::Client,
    url: &str,
    examples: &Path,
    driver: &str,
    definition: &str,
    resource: &str,
) -> anyhow::Result<Value> {
    let read = |name: &str| -> anyhow::Result<Value> {
        let path = examples.join("resources").join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
    };

    println!();
    println!("==> {driver}: POST /resource-definitions (examples/resources/{definition})");
    let response = http
        .post(format!("{url}/resource-definitions"))
        .json(&read(definition)?)
        .send()
        .await?;
    println!("    {} {}", response.status(), response.text().await?);

    println!("==> {driver}: POST /resources (examples/resources/{resource})");
    let response = http
        .post(format!("{url}/resources"))
        .json(&read(resource)?)
        .send()
        .await?;
    let status = response.status();
    let created: Value = response.json().await?;
    println!("    {status} {created}");
    let run = created["runid"]
        .as_str()
        .context("the create response has no runid")?
        .to_string();

    println!("==> GET /logs/streams/{driver}/{run} (Server-Sent Events)");
    let mut stream = http
        .get(format!("{url}/logs/streams/{driver}/{run}"))
        .send()
        .await?
        .bytes_stream();
    let mut buf = String::new();
    let mut seen = 0;
    let result = loop {
        // Print what has arrived; stop once the result is stored and every stored line shown.
        if let Ok(Some(chunk)) =
            tokio::time::timeout(Duration::from_millis(200), stream.next()).await
        {
            buf.push_str(&String::from_utf8_lossy(&chunk?));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                // The stream's last frame, `event: end`, carries the run's status, not a line.
                if frame.lines().any(|l| l == "event: end") {
                    continue;
                }
                for data in frame.lines().filter_map(|l| l.strip_prefix("data: ")) {
                    let line: Value = serde_json::from_str(data)?;
                    seen += 1;
                    // Every label of the line, in order, before its message.
                    let labels: Vec<String> = line
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, _)| {
                            !["runid", "driver", "pipeline", "timestamp", "message"]
                                .contains(&k.as_str())
                        })
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect();
                    println!(
                        "    [{}] {} {}",
                        line["timestamp"].as_str().unwrap_or(""),
                        labels.join(" "),
                        line["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
        let run_state: Value = http
            .get(format!("{url}/runs/{run}"))
            .send()
            .await?
            .json()
            .await?;
        if let Some(result) = run_state["results"].get(0) {
            let stored: Value = http
                .get(format!("{url}/logs?runid={run}"))
                .send()
                .await?
                .json()
                .await?;
            if seen >= stored.as_array().map_or(0, Vec::len) {
                break result.clone();
            }
        }
    };

    println!("==> GET /runs/{run}");
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(result)
}
