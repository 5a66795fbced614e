//! The `log` import: the run's logger, which is also the capability's context: the guest's
//! lines, its stdout and stderr and the host's own notes about the run all go through it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::conveyor::Log;
use crate::wasm::bindings::conveyor::driver::log::Host;
use crate::wasm::redact::Redactor;

/// Where stamped log lines go (the host's log pipeline).
pub trait LogSink: Send + Sync {
    /// Takes one line. Must not block: it is called from inside a running guest.
    fn write(&self, line: Log);
}

/// Field names of Conveyor's `types.Log`; a label with one of these names would clash with
/// the field once labels are flattened into the line, so it is kept under `label.<name>`.
const RESERVED: [&str; 5] = ["runid", "driver", "pipeline", "timestamp", "message"];

/// Raised when a run writes more log lines or bytes than its budget allows; it stops the
/// run, which ends as `log-limit`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the driver wrote more than its log budget of {lines} lines or {bytes} bytes per run")]
pub struct LogLimitExceeded {
    /// The line budget.
    pub lines: u64,
    /// The byte budget.
    pub bytes: u64,
}

/// A run's log budget, shared by its logger clones (the log import, stdout, stderr).
struct LogBudget {
    max_lines: u64,
    max_bytes: u64,
    lines: AtomicU64,
    bytes: AtomicU64,
    exceeded: AtomicBool,
}

/// Stamps a run's lines with its driver, run id, pipeline and the time, masks the driver's
/// secrets (in the message and in the labels' names and values), and enforces the run's log
/// budget.
#[derive(Clone)]
pub struct RunLogger {
    sink: Arc<dyn LogSink>,
    // Shared, so that the clones a run hands to stdout, stderr and the HTTP hooks cost no
    // allocation.
    driver: Arc<str>,
    run_id: Arc<str>,
    pipeline: Arc<str>,
    redactor: Redactor,
    budget: Option<Arc<LogBudget>>,
}

impl RunLogger {
    /// A logger for one run of one driver.
    pub fn new(sink: Arc<dyn LogSink>, driver: &str, run_id: &str, pipeline: Option<&str>) -> Self {
        RunLogger {
            sink,
            driver: driver.into(),
            run_id: run_id.into(),
            pipeline: pipeline.unwrap_or_default().into(),
            redactor: Redactor::default(),
            budget: None,
        }
    }

    /// Masks these secrets in every line.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// Limits the driver's own lines (not the host's) to `lines` lines and `bytes` bytes of
    /// messages and label values.
    pub fn with_budget(mut self, lines: u32, bytes: u64) -> Self {
        self.budget = Some(Arc::new(LogBudget {
            max_lines: lines.into(),
            max_bytes: bytes,
            lines: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
        }));
        self
    }

    /// The redactor of this run.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Records one line of the driver's, within the run's budget. Past the budget the line
    /// is dropped, the host notes it once, and the error tells the caller to stop the run.
    pub fn log(
        &self,
        labels: impl IntoIterator<Item = (String, String)>,
        message: String,
    ) -> Result<(), LogLimitExceeded> {
        let labels: Vec<(String, String)> = labels.into_iter().collect();
        if let Some(b) = &self.budget {
            let size = message.len() as u64
                + labels
                    .iter()
                    .map(|(k, v)| (k.len() + v.len()) as u64)
                    .sum::<u64>();
            let lines = b.lines.fetch_add(1, Ordering::Relaxed) + 1;
            let bytes = b.bytes.fetch_add(size, Ordering::Relaxed) + size;
            if lines > b.max_lines || bytes > b.max_bytes {
                let error = LogLimitExceeded {
                    lines: b.max_lines,
                    bytes: b.max_bytes,
                };
                if !b.exceeded.swap(true, Ordering::Relaxed) {
                    self.host_line(format!(
                        "{error}; further lines are dropped and the run is stopped (log-limit)"
                    ));
                }
                return Err(error);
            }
        }
        self.write(labels, message);
        Ok(())
    }

    fn write(&self, labels: Vec<(String, String)>, mut message: String) {
        self.redactor.string(&mut message);
        let labels: BTreeMap<String, String> = labels
            .into_iter()
            .map(|(mut k, mut v)| {
                // A label's name is the driver's text as much as its value is.
                self.redactor.string(&mut k);
                self.redactor.string(&mut v);
                if RESERVED.contains(&k.as_str()) {
                    (format!("label.{k}"), v)
                } else {
                    (k, v)
                }
            })
            .collect();
        self.sink.write(Log {
            runid: self.run_id.to_string(),
            driver: self.driver.to_string(),
            pipeline: self.pipeline.to_string(),
            timestamp: crate::clock::now_rfc3339(),
            message,
            labels,
        });
    }

    /// Records a line written by the host itself about the run (a trap, a retry), labelled
    /// `source=host` so it stands apart from the driver's own lines.
    pub fn host_line(&self, message: String) {
        self.write(vec![("source".to_string(), "host".to_string())], message);
    }
}

/// Sends lines to the host's own log (tracing), for calls outside any run such as `info()`.
pub struct TracingSink;

impl LogSink for TracingSink {
    fn write(&self, line: Log) {
        tracing::info!(driver = %line.driver, labels = ?line.labels, "{}", line.message);
    }
}

impl Host for RunLogger {
    async fn log(
        &mut self,
        labels: Vec<(String, String)>,
        message: String,
    ) -> wasmtime::Result<()> {
        RunLogger::log(self, labels, message).map_err(wasmtime::Error::new)
    }
}

/// A sink that keeps every line, for tests.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Collect(pub(crate) std::sync::Mutex<Vec<Log>>);

#[cfg(test)]
impl LogSink for Collect {
    fn write(&self, line: Log) {
        self.0.lock().unwrap().push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_protects_reserved_labels() {
        let sink = Arc::new(Collect::default());
        let logger = RunLogger::new(sink.clone(), "d", "R", Some("p"));
        logger
            .log(
                [
                    ("step".to_string(), "1".to_string()),
                    ("driver".to_string(), "evil".to_string()),
                ],
                "hello".into(),
            )
            .unwrap();
        let lines = sink.0.lock().unwrap();
        assert_eq!(lines[0].driver, "d");
        assert_eq!(lines[0].runid, "R");
        assert_eq!(lines[0].pipeline, "p");
        assert_eq!(lines[0].labels["step"], "1");
        assert_eq!(lines[0].labels["label.driver"], "evil");
    }

    #[test]
    fn redacts_and_enforces_the_budget() {
        let sink = Arc::new(Collect::default());
        let logger = RunLogger::new(sink.clone(), "d", "R", None)
            .with_redactor(Redactor::new(["tok3n".to_string()]))
            .with_budget(2, 1000);
        logger
            .log([("k".to_string(), "v tok3n".to_string())], "a tok3n".into())
            .unwrap();
        logger.log([], "b".into()).unwrap();
        assert!(logger.log([], "c".into()).is_err());
        assert!(logger.log([], "d".into()).is_err());
        logger.host_line("host tok3n".into());
        let lines = sink.0.lock().unwrap();
        let texts: Vec<_> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(texts[0], "a ***");
        assert_eq!(lines[0].labels["k"], "v ***");
        assert_eq!(texts[1], "b");
        assert!(texts[2].contains("log budget"), "{texts:?}");
        assert_eq!(texts[3], "host ***");
        assert_eq!(texts.len(), 4);
    }

    #[test]
    fn a_secret_in_a_label_name_is_masked() {
        let sink = Arc::new(Collect::default());
        let logger = RunLogger::new(sink.clone(), "d", "R", None)
            .with_redactor(Redactor::new(["tok3n".to_string()]));
        logger
            .log(
                [
                    ("tok3n".to_string(), "v".to_string()),
                    ("key-tok3n-x".to_string(), "w".to_string()),
                ],
                "m".into(),
            )
            .unwrap();
        let lines = sink.0.lock().unwrap();
        let keys: Vec<&str> = lines[0].labels.keys().map(String::as_str).collect();
        assert_eq!(keys, ["***", "key-***-x"]);
        assert_eq!(lines[0].labels["***"], "v");
        let json = serde_json::to_string(&lines[0]).unwrap();
        assert!(!json.contains("tok3n"), "{json}");
    }

    #[tokio::test]
    async fn the_import_stops_the_run_past_the_budget() {
        let sink = Arc::new(Collect::default());
        let mut logger = RunLogger::new(sink.clone(), "d", "R", None).with_budget(1, 1000);
        Host::log(&mut logger, vec![], "one".into()).await.unwrap();
        let err = Host::log(&mut logger, vec![], "two".into())
            .await
            .unwrap_err();
        assert!(err.is::<LogLimitExceeded>(), "{err}");
    }
}
