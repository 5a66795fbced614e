//! The host's HTTP API, as methods of [`Host`]: plain requests that return the status and the
//! JSON body, and the steps tests repeat (define, create, wait for a result or a run's end,
//! read a run's log, the driver list, the metrics).

use std::time::Duration;

use serde_json::{Value, json};

use crate::host::Host;
use crate::wait::poll;

/// The header that names the run a resource change started (`PUT`, `DELETE`).
pub const RUN_ID_HEADER: &str = "x-conveyor-run-id";

/// The run id in a response's [`RUN_ID_HEADER`]; panics when it has none.
pub fn run_id_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(RUN_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {RUN_ID_HEADER} header in {response:?}"))
        .to_string()
}

/// Sends a request and returns the status and the JSON body (`null` when not JSON).
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("send the request to the host");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

impl Host {
    /// A full URL for a path.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A full `ws://` URL for a path.
    pub fn ws_at(&self, path: &str) -> String {
        format!("{}{path}", self.url.replacen("http", "ws", 1))
    }

    /// POSTs JSON.
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

    /// DELETEs.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        send(reqwest::Client::new().delete(self.at(path))).await
    }

    /// Creates a definition for `kind` with this schema; panics unless it is created.
    pub async fn define(&self, kind: &str, schema: Value) {
        let (status, body) = self
            .post(
                "/resource-definitions",
                &json!({"name": kind, "schema": schema}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// Creates a resource and returns its run id; panics unless it is created.
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

    /// Waits until the run has `n` results and returns them (all it has, which may be more).
    pub async fn results(&self, run_id: &str, n: usize, within: Duration) -> Vec<Value> {
        let found = poll(within, Duration::from_millis(50), || async {
            let (_, body) = self.get(&format!("/runs/{run_id}")).await;
            let results = body["results"].as_array().cloned().unwrap_or_default();
            if results.len() >= n {
                Ok(results)
            } else {
                Err(results.len())
            }
        })
        .await;
        found.unwrap_or_else(|have| {
            panic!(
                "run {run_id} has {have} of {n} results after {within:?}; host log:\n{}",
                self.log()
            )
        })
    }

    /// Waits (a minute at most) for the run's first result.
    pub async fn result(&self, run_id: &str) -> Value {
        self.results(run_id, 1, Duration::from_secs(60))
            .await
            .remove(0)
    }

    /// Waits until the run is over (neither queued nor running) and returns it.
    pub async fn finished_run(&self, run_id: &str, within: Duration) -> Value {
        let found = poll(within, Duration::from_millis(50), || async {
            let (status, body) = self.get(&format!("/runs/{run_id}")).await;
            if status == 200 && !matches!(body["status"].as_str(), Some("queued" | "running")) {
                Ok(body)
            } else {
                Err(body)
            }
        })
        .await;
        found.unwrap_or_else(|body| {
            panic!(
                "run {run_id} not over after {within:?}: {body}\nhost log:\n{}",
                self.log()
            )
        })
    }

    /// Waits (30 s at most, then panics) until `GET /runs/{run_id}` has `status` at `pointer`
    /// (a JSON pointer: `/status` for the run, `/steps/0/status` for its first step).
    pub async fn wait_for_run(&self, run_id: &str, pointer: &str, status: &str) {
        let within = Duration::from_secs(30);
        let found = poll(within, Duration::from_millis(20), || async {
            let (_, body) = self.get(&format!("/runs/{run_id}")).await;
            if body.pointer(pointer).and_then(Value::as_str) == Some(status) {
                Ok(())
            } else {
                Err(body)
            }
        })
        .await;
        if let Err(body) = found {
            panic!("run {run_id}: {pointer} not {status:?} within {within:?}: {body}");
        }
    }

    /// The stored log lines of a run.
    pub async fn logs(&self, run_id: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/logs?runid={run_id}")).await;
        assert_eq!(status, 200, "GET /logs?runid={run_id}: {body}");
        body.as_array().cloned().unwrap_or_default()
    }

    /// `GET /metrics`: the content type and the text.
    pub async fn metrics(&self) -> (String, String) {
        let response = reqwest::get(self.at("/metrics"))
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (
            content_type,
            response.text().await.expect("the metrics text"),
        )
    }

    /// Waits (`within` at most, then panics) until the host is quiet: no run in flight and no
    /// event waiting or being delivered. A step or result that a settled run would still cause
    /// is committed with its settlement, so once quiet, nothing more comes (a drain, where a
    /// fixed window would let a late one slip past).
    pub async fn quiet(&self, within: Duration) {
        let quiet = poll(within, Duration::from_millis(50), || async {
            let (_, metrics) = self.metrics().await;
            let busy: Vec<&str> = metrics
                .lines()
                .filter(|l| {
                    (l.starts_with("conveyor_runs_in_flight")
                        || l.starts_with("conveyor_queue_depth"))
                        && !l.ends_with(" 0")
                })
                .collect();
            if busy.is_empty() {
                Ok(())
            } else {
                Err(busy.join("\n"))
            }
        })
        .await;
        if let Err(busy) = quiet {
            panic!("the host is not quiet after {within:?}:\n{busy}");
        }
    }

    /// The entry of `GET /drivers` for the driver called `name`, if listed.
    pub async fn driver(&self, name: &str) -> Option<Value> {
        let (_, list) = self.get("/drivers").await;
        find_driver(&list, name)
    }

    /// Polls `GET /drivers` every 100 ms until `f` finds something in the list, and returns
    /// that; panics naming `what` after 30 s.
    pub async fn wait_for_driver_list(
        &self,
        what: &str,
        f: impl Fn(&Value) -> Option<Value>,
    ) -> Value {
        let within = Duration::from_secs(30);
        let found = poll(within, Duration::from_millis(100), || async {
            let (_, list) = self.get("/drivers").await;
            f(&list).ok_or(list)
        })
        .await;
        found.unwrap_or_else(|list| {
            panic!(
                "waited {within:?} for {what}; GET /drivers: {list}\nhost log:\n{}",
                self.log()
            )
        })
    }
}

/// The entry for the driver called `name` in a `GET /drivers` list.
pub fn find_driver(list: &Value, name: &str) -> Option<Value> {
    list.as_array()?.iter().find(|d| d["name"] == name).cloned()
}
