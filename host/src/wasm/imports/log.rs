//! The `log` import: the run's logger.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::conveyor::Log;
use crate::wasm::bindings::conveyor::driver::log::Host;
use crate::wasm::sandbox::RunState;

/// Where stamped log lines go (the host's log pipeline).
pub trait LogSink: Send + Sync {
    /// Takes one line. Must not block: it is called from inside a running guest.
    fn write(&self, line: Log);
}

/// Field names of Conveyor's `types.Log`; a label with one of these names would clash with
/// the field once labels are flattened into the line, so it is kept under `label.<name>`.
const RESERVED: [&str; 5] = ["runid", "driver", "pipeline", "timestamp", "message"];

/// Stamps a run's lines with its driver, run id, pipeline and the time.
#[derive(Clone)]
pub struct RunLogger {
    sink: Arc<dyn LogSink>,
    driver: String,
    run_id: String,
    pipeline: String,
}

impl RunLogger {
    /// A logger for one run of one driver.
    pub fn new(sink: Arc<dyn LogSink>, driver: &str, run_id: &str, pipeline: Option<&str>) -> Self {
        RunLogger {
            sink,
            driver: driver.to_string(),
            run_id: run_id.to_string(),
            pipeline: pipeline.unwrap_or_default().to_string(),
        }
    }

    /// Records one line now.
    pub fn log(&self, labels: impl IntoIterator<Item = (String, String)>, message: String) {
        let labels: BTreeMap<String, String> = labels
            .into_iter()
            .map(|(k, v)| {
                if RESERVED.contains(&k.as_str()) {
                    (format!("label.{k}"), v)
                } else {
                    (k, v)
                }
            })
            .collect();
        self.sink.write(Log {
            runid: self.run_id.clone(),
            driver: self.driver.clone(),
            pipeline: self.pipeline.clone(),
            timestamp: crate::clock::now_rfc3339(),
            message,
            labels,
        });
    }

    /// Records a line written by the host itself about the run (a trap, a retry), labelled
    /// `source=host` so it stands apart from the driver's own lines.
    pub fn host_line(&self, message: String) {
        self.log([("source".to_string(), "host".to_string())], message);
    }
}

/// Sends lines to the host's own log (tracing), for calls outside any run such as `info()`.
pub struct TracingSink;

impl LogSink for TracingSink {
    fn write(&self, line: Log) {
        tracing::info!(driver = %line.driver, labels = ?line.labels, "{}", line.message);
    }
}

impl Host for RunState {
    async fn log(
        &mut self,
        labels: Vec<(String, String)>,
        message: String,
    ) -> wasmtime::Result<()> {
        self.logger.log(labels, message);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Log>>);
    impl LogSink for Collect {
        fn write(&self, line: Log) {
            self.0.lock().unwrap().push(line);
        }
    }

    #[test]
    fn stamps_and_protects_reserved_labels() {
        let sink = Arc::new(Collect::default());
        let logger = RunLogger::new(sink.clone(), "d", "R", Some("p"));
        logger.log(
            [
                ("step".to_string(), "1".to_string()),
                ("driver".to_string(), "evil".to_string()),
            ],
            "hello".into(),
        );
        let lines = sink.0.lock().unwrap();
        assert_eq!(lines[0].driver, "d");
        assert_eq!(lines[0].runid, "R");
        assert_eq!(lines[0].pipeline, "p");
        assert_eq!(lines[0].labels["step"], "1");
        assert_eq!(lines[0].labels["label.driver"], "evil");
    }
}
