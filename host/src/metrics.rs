//! The host's Prometheus metrics, all named here so the names cannot drift apart. Each host
//! has its own [`Metrics`]; they are also the one source of the run counters `GET /drivers`
//! shows.
//!
//! Counters and histograms are updated where things happen (the manager, the log writer);
//! gauges that describe a backend's state (queue depth, runs by status) are read from it
//! through [`Gauges`] when `GET /metrics` is scraped, so they are right after a restart too.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::result::Outcome;

/// Reconcile attempts by driver and outcome (`success`, `failure`, `retry`, or a sandbox
/// failure kind such as `trap`).
pub const RECONCILES: &str = "conveyor_reconciles_total";
/// Wall time of one reconcile attempt, instantiation included, by driver.
pub const RECONCILE_SECONDS: &str = "conveyor_reconcile_duration_seconds";
/// Time to instantiate a driver's component for one event, by driver.
pub const INSTANTIATE_SECONDS: &str = "conveyor_instantiate_duration_seconds";
/// Attempts that ended in a retry, by driver.
pub const RETRIES: &str = "conveyor_retries_total";
/// Reconciles running now, by driver.
pub const RECONCILES_IN_FLIGHT: &str = "conveyor_reconciles_in_flight";
/// Events in the queue, by driver and state (`waiting`, `delivering`).
pub const QUEUE_DEPTH: &str = "conveyor_queue_depth";
/// Runs not yet over (queued or running).
pub const RUNS_IN_FLIGHT: &str = "conveyor_runs_in_flight";
/// Stored runs by status.
pub const RUNS: &str = "conveyor_runs";
/// Log lines stored, by driver.
pub const LOG_LINES: &str = "conveyor_log_lines_total";
/// Events put back because another host was reconciling the same resource, by driver.
pub const HELD_ELSEWHERE: &str = "conveyor_held_elsewhere_total";

/// The host's metrics.
pub struct Metrics {
    registry: Registry,
    /// See [`RECONCILES`].
    pub reconciles: IntCounterVec,
    /// See [`RECONCILE_SECONDS`].
    pub reconcile_seconds: HistogramVec,
    /// See [`INSTANTIATE_SECONDS`].
    pub instantiate_seconds: HistogramVec,
    /// See [`RETRIES`].
    pub retries: IntCounterVec,
    /// See [`RECONCILES_IN_FLIGHT`].
    pub in_flight: IntGaugeVec,
    /// See [`LOG_LINES`].
    pub log_lines: IntCounterVec,
    /// See [`HELD_ELSEWHERE`].
    pub held_elsewhere: IntCounterVec,
    queue_depth: IntGaugeVec,
    runs_in_flight: IntGauge,
    runs: IntGaugeVec,
}

/// A backend's state, read when the metrics are scraped.
#[derive(Debug, Clone, Default)]
pub struct RunGauges {
    /// `(driver, waiting, in delivery)` events per driver.
    pub queue_depths: Vec<(String, u64, u64)>,
    /// Stored runs per status.
    pub runs_by_status: Vec<(&'static str, u64)>,
}

/// Why a backend's gauges could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the gauges")]
pub struct GaugesError(#[source] Box<dyn std::error::Error + Send + Sync>);

impl GaugesError {
    /// Wraps the backend's error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        GaugesError(Box::new(e))
    }
}

/// A backend that keeps run and queue state (the embedded store does; a Conveyor server
/// keeps its own).
pub trait Gauges: Send + Sync {
    /// The current state.
    fn read(&self) -> Result<RunGauges, GaugesError>;
}

/// Run statuses the `conveyor_runs` gauge always shows (0 included).
const RUN_STATUSES: [&str; 7] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "superseded",
    "cancelled",
    "no-driver",
];
/// Statuses of runs that are not over.
const ACTIVE_STATUSES: [&str; 2] = ["queued", "running"];

/// One driver's run counters, derived from the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunCounts {
    /// Runs started.
    pub started: u64,
    /// Runs that ended in success.
    pub succeeded: u64,
    /// Runs that ended in a final failure.
    pub failed: u64,
    /// Runs that ended with the event put back for another attempt.
    pub retried: u64,
    /// Runs in flight now.
    pub in_flight: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        // The names and label sets are constants: registering them cannot fail, so a
        // failure here is a programming error caught by the unit test below.
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone()))
                .expect("metric names and labels are valid and unique");
            c
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            reg(
                &registry,
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["driver"])
                    .expect("valid metric"),
            )
        };
        Metrics {
            reconciles: counter(
                RECONCILES,
                "Reconcile attempts by driver and outcome.",
                &["driver", "outcome"],
            ),
            reconcile_seconds: histogram(
                RECONCILE_SECONDS,
                "Wall time of one reconcile attempt, instantiation included.",
                prometheus::exponential_buckets(0.001, 4.0, 10).expect("valid buckets"),
            ),
            instantiate_seconds: histogram(
                INSTANTIATE_SECONDS,
                "Time to instantiate a driver's component for one event.",
                prometheus::exponential_buckets(0.000_01, 4.0, 10).expect("valid buckets"),
            ),
            retries: counter(RETRIES, "Attempts that ended in a retry.", &["driver"]),
            in_flight: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(RECONCILES_IN_FLIGHT, "Reconciles running now."),
                    &["driver"],
                )
                .expect("valid metric"),
            ),
            log_lines: reg(
                &registry,
                IntCounterVec::new(Opts::new(LOG_LINES, "Log lines stored."), &["driver"])
                    .expect("valid metric"),
            ),
            held_elsewhere: counter(
                HELD_ELSEWHERE,
                "Events put back because another host was reconciling the same resource.",
                &["driver"],
            ),
            queue_depth: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        QUEUE_DEPTH,
                        "Events in the queue, waiting or being delivered.",
                    ),
                    &["driver", "state"],
                )
                .expect("valid metric"),
            ),
            runs_in_flight: reg(
                &registry,
                IntGauge::new(RUNS_IN_FLIGHT, "Runs not yet over (queued or running).")
                    .expect("valid metric"),
            ),
            runs: reg(
                &registry,
                IntGaugeVec::new(Opts::new(RUNS, "Stored runs by status."), &["status"])
                    .expect("valid metric"),
            ),
            registry,
        }
    }

    /// Records an event put back because another host holds its resource.
    pub fn held_elsewhere(&self, driver: &str) {
        self.held_elsewhere.with_label_values(&[driver]).inc();
    }

    /// Records that a reconcile started.
    pub fn started(&self, driver: &str) {
        self.in_flight.with_label_values(&[driver]).inc();
    }

    /// Records one finished reconcile attempt, and whether the event goes back for another.
    pub fn reconciled(
        &self,
        driver: &str,
        outcome: Outcome,
        retried: bool,
        took: Duration,
        instantiate: Option<Duration>,
    ) {
        self.in_flight.with_label_values(&[driver]).dec();
        if retried {
            self.retries.with_label_values(&[driver]).inc();
        }
        self.reconciles
            .with_label_values(&[driver, outcome.as_str()])
            .inc();
        self.reconcile_seconds
            .with_label_values(&[driver])
            .observe(took.as_secs_f64());
        if let Some(i) = instantiate {
            self.instantiate_seconds
                .with_label_values(&[driver])
                .observe(i.as_secs_f64());
        }
    }

    /// A driver's run counters: every finished attempt is a success, a retry or a final
    /// failure, and every started one is finished or in flight.
    pub fn runs(&self, driver: &str) -> RunCounts {
        let mut finished = 0;
        let mut succeeded = 0;
        for family in self.reconciles.collect() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                };
                if label("driver").as_deref() != Some(driver) {
                    continue;
                }
                let n = m.get_counter().get_value() as u64;
                finished += n;
                if label("outcome").as_deref() == Some(Outcome::Success.as_str()) {
                    succeeded += n;
                }
            }
        }
        let retried = self.retries.with_label_values(&[driver]).get();
        let in_flight =
            u64::try_from(self.in_flight.with_label_values(&[driver]).get()).unwrap_or(0);
        RunCounts {
            started: finished + in_flight,
            succeeded,
            failed: finished.saturating_sub(succeeded + retried),
            retried,
            in_flight,
        }
    }

    /// Renders every metric in Prometheus' text format, with the backend's gauges when it
    /// keeps them. Every driver in `drivers` gets a queue depth, 0 included.
    pub fn render(
        &self,
        gauges: Option<&dyn Gauges>,
        drivers: &[String],
    ) -> Result<String, GaugesError> {
        if let Some(gauges) = gauges {
            let state = gauges.read()?;
            self.queue_depth.reset();
            for driver in drivers {
                for s in ["waiting", "delivering"] {
                    self.queue_depth
                        .with_label_values(&[driver.as_str(), s])
                        .set(0);
                }
            }
            for (driver, waiting, delivering) in state.queue_depths {
                self.queue_depth
                    .with_label_values(&[driver.as_str(), "waiting"])
                    .set(i64::try_from(waiting).unwrap_or(i64::MAX));
                self.queue_depth
                    .with_label_values(&[driver.as_str(), "delivering"])
                    .set(i64::try_from(delivering).unwrap_or(i64::MAX));
            }
            self.runs.reset();
            for status in RUN_STATUSES {
                self.runs.with_label_values(&[status]).set(0);
            }
            let mut active = 0;
            for (status, n) in state.runs_by_status {
                if ACTIVE_STATUSES.contains(&status) {
                    active += n;
                }
                self.runs
                    .with_label_values(&[status])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            self.runs_in_flight
                .set(i64::try_from(active).unwrap_or(i64::MAX));
        }
        let mut families = self.registry.gather();
        if gauges.is_none() {
            // Without a backend that keeps them, the store's gauges would only ever read 0.
            families.retain(|f| ![QUEUE_DEPTH, RUNS_IN_FLIGHT, RUNS].contains(&f.name()));
        }
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which `register`
        // already refused.
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::FailureKind;

    struct Fixed;
    impl Gauges for Fixed {
        fn read(&self) -> Result<RunGauges, GaugesError> {
            Ok(RunGauges {
                queue_depths: vec![("d".into(), 2, 1)],
                runs_by_status: vec![("running", 1), ("succeeded", 4)],
            })
        }
    }

    #[test]
    fn every_series_renders() {
        let metrics = Metrics::new();
        metrics.started("d");
        metrics.reconciled(
            "d",
            Outcome::Success,
            false,
            Duration::from_millis(3),
            Some(Duration::from_micros(40)),
        );
        metrics.retries.with_label_values(&["d"]).inc();
        metrics.in_flight.with_label_values(&["d"]).set(0);
        metrics.log_lines.with_label_values(&["d"]).inc();
        let text = metrics.render(Some(&Fixed), &["d".to_string()]).unwrap();
        for name in [
            RECONCILES,
            RECONCILE_SECONDS,
            INSTANTIATE_SECONDS,
            RETRIES,
            RECONCILES_IN_FLIGHT,
            RUNS_IN_FLIGHT,
            RUNS,
            QUEUE_DEPTH,
            LOG_LINES,
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
        assert!(text.contains("conveyor_runs_in_flight 1"), "{text}");
        assert!(
            text.contains("conveyor_runs{status=\"no-driver\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn the_runs_gauge_lists_every_run_status() {
        let listed: Vec<&str> = crate::store::RunStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(RUN_STATUSES.as_slice(), listed.as_slice());
    }

    #[test]
    fn without_a_store_its_gauges_are_left_out() {
        let metrics = Metrics::new();
        metrics.started("d");
        let text = metrics.render(None, &["d".to_string()]).unwrap();
        assert!(text.contains(RECONCILES_IN_FLIGHT), "{text}");
        assert!(!text.contains(QUEUE_DEPTH), "{text}");
    }

    #[test]
    fn run_counters_follow_the_outcomes() {
        let m = Metrics::new();
        let t = Duration::from_millis(1);
        for (outcome, retried) in [
            (Outcome::Success, false),
            (Outcome::Failed(FailureKind::Trap), true),
            (Outcome::Failed(FailureKind::Trap), false),
            (Outcome::Retry, true),
        ] {
            m.started("d");
            m.reconciled("d", outcome, retried, t, None);
        }
        m.started("d");
        assert_eq!(
            m.runs("d"),
            RunCounts {
                started: 5,
                succeeded: 1,
                failed: 1,
                retried: 2,
                in_flight: 1,
            }
        );
        assert_eq!(m.runs("other"), RunCounts::default());
    }
}
