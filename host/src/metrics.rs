//! The host's Prometheus metrics, all named here so the names cannot drift apart.
//!
//! Counters and histograms are updated where things happen (the manager, the log writer);
//! gauges that describe the store (queue depth, runs by status) are read from it when
//! `GET /metrics` is scraped, so they are right after a restart too.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::store::{RunStatus, Store, StoreError};

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
    queue_depth: IntGaugeVec,
    runs_in_flight: IntGauge,
    runs: IntGaugeVec,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
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

    /// Records one finished reconcile attempt.
    pub fn reconciled(
        &self,
        driver: &str,
        outcome: &str,
        took: Duration,
        instantiate: Option<Duration>,
    ) {
        self.reconciles.with_label_values(&[driver, outcome]).inc();
        self.reconcile_seconds
            .with_label_values(&[driver])
            .observe(took.as_secs_f64());
        if let Some(i) = instantiate {
            self.instantiate_seconds
                .with_label_values(&[driver])
                .observe(i.as_secs_f64());
        }
    }

    /// Reads the store's gauges and renders every metric in Prometheus' text format. Every
    /// driver in `drivers` gets a queue depth, 0 included.
    pub fn render(&self, store: &Store, drivers: &[String]) -> Result<String, StoreError> {
        self.queue_depth.reset();
        for driver in drivers {
            for state in ["waiting", "delivering"] {
                self.queue_depth
                    .with_label_values(&[driver.as_str(), state])
                    .set(0);
            }
        }
        for (driver, waiting, delivering) in store.queue_depths()? {
            self.queue_depth
                .with_label_values(&[driver.as_str(), "waiting"])
                .set(i64::try_from(waiting).unwrap_or(i64::MAX));
            self.queue_depth
                .with_label_values(&[driver.as_str(), "delivering"])
                .set(i64::try_from(delivering).unwrap_or(i64::MAX));
        }
        self.runs.reset();
        for status in [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Superseded,
        ] {
            self.runs.with_label_values(&[status.as_str()]).set(0);
        }
        let mut active = 0;
        for (status, n) in store.runs_by_status()? {
            if !status.is_final() {
                active += n;
            }
            self.runs
                .with_label_values(&[status.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.runs_in_flight
            .set(i64::try_from(active).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which `register`
        // already refused.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
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

    #[test]
    fn every_series_renders() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        METRICS.reconciled(
            "d",
            "success",
            Duration::from_millis(3),
            Some(Duration::from_micros(40)),
        );
        METRICS.retries.with_label_values(&["d"]).inc();
        METRICS.in_flight.with_label_values(&["d"]).set(0);
        METRICS.log_lines.with_label_values(&["d"]).inc();
        let text = METRICS.render(&store, &["d".to_string()]).unwrap();
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
    }
}
