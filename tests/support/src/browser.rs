//! A real headless Chromium, driven over the DevTools protocol (CDP), for the dashboard's
//! tests: open a page, evaluate JavaScript in it, wait for a condition, take a screenshot, and
//! collect every error the page reports (exceptions, `console.error`, failed loads).
//!
//! The protocol is JSON over one WebSocket, and these tests use six of its methods, so this
//! speaks it directly with the WebSocket client the harness already has. A CDP crate
//! (chromiumoxide) compiles the whole generated protocol, minutes of every cold CI build.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// The Chromium binary: `$CHROMIUM`, else the first of Debian's names on `PATH`.
pub fn chromium_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|dir| Path::new(dir).join(name))
                .find(|p| p.is_file())
        })
}

/// Something the page reported as an error.
#[derive(Debug, Clone)]
pub struct PageError {
    /// `exception`, `console` or the log entry's source (`network`, `javascript`, `security`...).
    pub source: String,
    /// Its text (with the URL, for a failed load).
    pub text: String,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A running headless Chromium with one page (tab).
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    outgoing: mpsc::UnboundedSender<String>,
    pending: Pending,
    next_id: AtomicU64,
    session: String,
    errors: Arc<Mutex<Vec<PageError>>>,
}

impl Browser {
    /// Starts Chromium headless with a fresh profile and opens a page of `width`×`height`.
    pub async fn launch(width: u32, height: u32) -> Result<Browser> {
        let binary = chromium_binary().context("no Chromium: install Debian's `chromium`")?;
        let profile = tempfile::tempdir()?;
        let mut child = Command::new(&binary)
            .args([
                "--headless=new",
                // Tests run as root in CI containers, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().context("Chromium's stderr")?;
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        // Reads stderr to its end, or Chromium blocks once the pipe is full.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if !sent && let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = url_tx.send(url.trim().to_string());
                    sent = true;
                }
            }
        });
        let url = tokio::task::spawn_blocking(move || url_rx.recv_timeout(Duration::from_secs(60)))
            .await?
            .context("Chromium did not print its DevTools address")?;
        let (socket, _) = tokio_tungstenite::connect_async(&url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut out_rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let errors: Arc<Mutex<Vec<PageError>>> = Arc::default();
        {
            let pending = pending.clone();
            let errors = errors.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = stream.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if let Some(id) = v["id"].as_u64() {
                        if let Some(tx) = pending.lock().expect("pending").remove(&id) {
                            let _ = tx.send(v);
                        }
                    } else if let Some(e) = page_error(&v) {
                        errors.lock().expect("errors").push(e);
                    }
                }
            });
        }
        let mut browser = Browser {
            child,
            _profile: profile,
            outgoing,
            pending,
            next_id: AtomicU64::new(1),
            session: String::new(),
            errors,
        };
        let target = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = target["targetId"].as_str().context("targetId")?.to_string();
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        browser.session = attached["sessionId"]
            .as_str()
            .context("sessionId")?
            .to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({})).await?;
        }
        // A headless page has no window focus; without it, key presses move no focus.
        browser
            .call(
                "Emulation.setFocusEmulationEnabled",
                json!({ "enabled": true }),
            )
            .await?;
        browser.resize(width, height).await?;
        Ok(browser)
    }

    /// Sends one command (to the page, once attached) and returns its `result`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = self.session.clone().into();
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(id, tx);
        self.outgoing
            .send(msg.to_string())
            .map_err(|_| anyhow!("the DevTools connection is closed"))?;
        let answer = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .with_context(|| format!("{method}: no answer in 30 s"))??;
        if let Some(err) = answer.get("error") {
            bail!("{method}: {err}");
        }
        Ok(answer["result"].clone())
    }

    /// Sets the page's viewport.
    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await
        .map(drop)
    }

    /// Opens `url` and waits for its document to finish loading.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.call("Page.navigate", json!({ "url": url })).await?;
        self.wait_for("document.readyState === 'complete'", "the page to load")
            .await
            .map(drop)
    }

    /// Reloads the page and waits for the new document to finish loading.
    pub async fn reload(&self) -> Result<()> {
        self.eval("window.__beforeReload = true").await?;
        self.call("Page.reload", json!({})).await?;
        self.wait_for(
            "!window.__beforeReload && document.readyState === 'complete'",
            "the page to reload",
        )
        .await
        .map(drop)
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON.
    pub async fn eval(&self, expression: &str) -> Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            bail!("{expression}: {}", exception_text(ex));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Waits (up to 30 s) until `expression` is truthy, returning its value; the error names
    /// `what` and shows the page's text.
    pub async fn wait_for(&self, expression: &str, what: &str) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Before the page's document exists, evaluation can fail: that is "not yet".
            if let Ok(v) = self.eval(expression).await
                && !matches!(v, Value::Null | Value::Bool(false))
                && v != json!(0)
                && v != json!("")
            {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                let text = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await
                    .unwrap_or_default();
                bail!("timed out waiting for {what} ({expression}); the page shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Presses and releases a key (`Tab`, `Enter`, ...) in the page, as a keyboard would.
    pub async fn press(&self, key: &str) -> Result<()> {
        let (code, text) = match key {
            "Tab" => (9, ""),
            "Enter" => (13, "\r"),
            "Escape" => (27, ""),
            other => bail!("press: no key code for {other}"),
        };
        for kind in ["keyDown", "keyUp"] {
            let mut event = json!({
                "type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code,
            });
            if kind == "keyDown" && !text.is_empty() {
                event["text"] = text.into();
            }
            self.call("Input.dispatchKeyEvent", event).await?;
        }
        Ok(())
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().context("screenshot data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
    }

    /// Every error the page reported so far.
    pub fn errors(&self) -> Vec<PageError> {
        self.errors.lock().expect("errors").clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The error an event reports, if it is one: an uncaught exception, a `console.error` or
/// `console.assert`, or a log entry of level error (a failed load among them).
fn page_error(v: &Value) -> Option<PageError> {
    let params = &v["params"];
    match v["method"].as_str()? {
        "Runtime.exceptionThrown" => Some(PageError {
            source: "exception".into(),
            text: exception_text(&params["exceptionDetails"]),
        }),
        "Runtime.consoleAPICalled"
            if matches!(params["type"].as_str(), Some("error" | "assert")) =>
        {
            let text = params["args"]
                .as_array()
                .map(|args| {
                    args.iter()
                        .map(|a| {
                            a["value"]
                                .as_str()
                                .map(str::to_string)
                                .or_else(|| a["description"].as_str().map(str::to_string))
                                .unwrap_or_else(|| a["value"].to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            Some(PageError {
                source: "console".into(),
                text,
            })
        }
        "Log.entryAdded" if params["entry"]["level"] == "error" => {
            let e = &params["entry"];
            Some(PageError {
                source: e["source"].as_str().unwrap_or("log").into(),
                text: format!(
                    "{} {}",
                    e["text"].as_str().unwrap_or_default(),
                    e["url"].as_str().unwrap_or_default()
                ),
            })
        }
        _ => None,
    }
}

fn exception_text(details: &Value) -> String {
    let description = details["exception"]["description"].as_str();
    let text = details["text"].as_str().unwrap_or("exception");
    format!(
        "{} at {}:{}",
        description.unwrap_or(text),
        details["url"].as_str().unwrap_or_default(),
        details["lineNumber"]
    )
}
