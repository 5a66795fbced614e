//! Shared harness for the end-to-end tests: builds the example and test drivers for
//! wasm32-wasip2 (once per test binary), starts the real `conveyor-host` binary on an
//! ephemeral port with a temporary data directory, and talks to it over HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The host binary under test.
pub const HOST_BIN: &str = env!("CARGO_BIN_EXE_conveyor-host");

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// The cargo target directory the host binary was built in (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    Path::new(HOST_BIN)
        .ancestors()
        .nth(2)
        .expect("the binary lives in <target>/<profile>/")
        .to_path_buf()
}

/// The path of a driver component, building every test driver the first time.
pub fn driver_wasm(crate_name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .args([
                "-p",
                "sample-driver",
                "-p",
                "rust-driver",
                "-p",
                "test-driver",
                "-p",
                "noop-driver",
                "-p",
                "step-a",
                "-p",
                "step-b",
                "-p",
                "step-c",
            ])
            .current_dir(workspace())
            .env("CARGO_TARGET_DIR", target_dir())
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building the drivers for wasm32-wasip2 failed"
        );
    });
    target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// A driver written in another language, built by its `examples/<name>/build.sh` (the
/// Python driver with componentize-py, the JavaScript one with jco; tests/run.sh installs
/// both), once per test binary, into the target directory.
pub fn example_driver(name: &str) -> PathBuf {
    example_driver_variant(name, "", &[])
}

/// [`example_driver`] with extra arguments for the build script, under its own file name
/// (`<name>-<variant>.wasm`).
pub fn example_driver_variant(name: &str, variant: &str, args: &[&str]) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let file = if variant.is_empty() {
        format!("{name}.wasm")
    } else {
        format!("{name}-{variant}.wasm")
    };
    let out = target_dir().join("example-drivers").join(file);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.contains(&out) {
        std::fs::create_dir_all(out.parent().expect("has a parent")).expect("output dir");
        let script = workspace().join("examples").join(name).join("build.sh");
        let started = Instant::now();
        let output = Command::new(&script)
            .arg(&out)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} failed:\n{}{}",
            script.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!(
            "built {} in {:.1} s ({} KiB)",
            out.display(),
            started.elapsed().as_secs_f64(),
            std::fs::metadata(&out).map_or(0, |m| m.len() / 1024)
        );
        built.push(out.clone());
    }
    out
}

/// A driver component by name: an example with its own build script (Python, JavaScript), or
/// a Rust driver crate of the workspace.
pub fn driver_file(name: &str) -> PathBuf {
    if workspace()
        .join("examples")
        .join(name)
        .join("build.sh")
        .is_file()
    {
        example_driver(name)
    } else {
        driver_wasm(name)
    }
}

/// A temporary directory with a `drivers/` folder holding the named drivers.
pub fn workdir(drivers: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("drivers")).expect("drivers dir");
    for d in drivers {
        std::fs::copy(
            driver_file(d),
            dir.path().join("drivers").join(format!("{d}.wasm")),
        )
        .expect("copy driver");
    }
    dir
}

/// A running host process.
pub struct Host {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    log: PathBuf,
}

impl Host {
    /// Starts the host in `dir` (which holds `drivers/`), with extra TOML appended to a
    /// config that listens on an ephemeral port and keeps its data in `dir/data`.
    pub fn start(dir: &Path, extra_config: &str) -> Host {
        Host::start_with_env(dir, extra_config, &[])
    }

    /// [`Host::start`] with extra variables in the host's environment.
    pub fn start_with_env(dir: &Path, extra_config: &str, env: &[(&str, &str)]) -> Host {
        let mut host = Host::start_serving(dir, extra_config, env);
        // The API serves while drivers load; tests start once every file is settled.
        if !wait_for_drivers(&host.url, Duration::from_secs(120)) {
            host.kill();
            panic!("the drivers did not finish loading; log:\n{}", host.log());
        }
        host
    }

    /// Starts the host and returns as soon as its API serves, while drivers may still load.
    pub fn start_serving(dir: &Path, extra_config: &str, env: &[(&str, &str)]) -> Host {
        let config = dir.join("host.toml");
        std::fs::write(
            &config,
            format!(
                "drivers_dir = \"drivers\"\ndata_dir = \"data\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n{extra_config}\n"
            ),
        )
        .expect("write config");
        let log = dir.join("host.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = Command::new(HOST_BIN)
            .args(["run", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start conveyor-host");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("conveyor-host listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => Host { child, url, log },
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the host did not start; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }

    /// The host's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the host gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a graceful exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for the host")
    }

    /// A full URL for a path.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// POSTs JSON and returns the status and the JSON body (`null` when not JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        send(reqwest::Client::new().post(self.at(path)).json(body)).await
    }

    /// PUTs JSON.
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        send(reqwest::Client::new().put(self.at(path)).json(body)).await
    }

    /// GETs JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        send(reqwest::Client::new().get(self.at(path))).await
    }

    /// Creates a definition (any schema) for `kind`.
    pub async fn define(&self, kind: &str, schema: Value) {
        let (status, body) = self
            .post(
                "/resource-definitions",
                &json!({"name": kind, "schema": schema}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// Creates a resource and returns its run id.
    pub async fn create(&self, kind: &str, name: &str, spec: Value) -> String {
        let (status, body) = self
            .post(
                "/resources",
                &json!({"name": name, "resource": kind, "spec": spec}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["runid"].as_str().expect("runid").to_string()
    }

    /// Waits until the run has `n` results and returns them.
    pub async fn results(&self, run_id: &str, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let (_, body) = self.get(&format!("/runs/{run_id}")).await;
            let results = body["results"].as_array().cloned().unwrap_or_default();
            if results.len() >= n {
                return results;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} has {} of {n} results after {within:?}; host log:\n{}",
                results.len(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for one result.
    pub async fn result(&self, run_id: &str) -> Value {
        self.results(run_id, 1, Duration::from_secs(60))
            .await
            .remove(0)
    }

    /// The stored log lines of a run.
    pub async fn logs(&self, run_id: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/logs?runid={run_id}")).await;
        assert_eq!(status, 200);
        body.as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `GET /health` lists no driver file as loading. Runs on its own thread and
/// runtime, so it can be called from sync code and from inside a test's runtime alike.
pub fn wait_for_drivers(url: &str, within: Duration) -> bool {
    let url = format!("{url}/health");
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return false;
        };
        rt.block_on(async {
            let deadline = Instant::now() + within;
            let client = reqwest::Client::new();
            while Instant::now() < deadline {
                if let Ok(r) = client.get(&url).send().await
                    && let Ok(v) = r.json::<Value>().await
                    && v["drivers"]["loading"]
                        .as_array()
                        .is_some_and(|l| l.is_empty())
                {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        })
    })
    .join()
    .unwrap_or(false)
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Runs the host binary with arguments and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(HOST_BIN)
        .args(args)
        .output()
        .expect("run conveyor-host");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub mod nats;
