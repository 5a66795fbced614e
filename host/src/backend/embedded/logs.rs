//! The embedded log pipeline: every driver line (from the `log` import, or the guest's stdout
//! and stderr) is stored in order, and then handed to live subscribers.
//!
//! One writer task owns the order: it batches lines into one SQLite transaction, handed to the
//! store's writer, and a second task, in the same order, broadcasts them with their sequence
//! numbers only after their commit. A subscriber that replays the store and then follows the
//! broadcast can therefore drop every live line whose sequence number it has already
//! replayed: no gap, no duplicate. A slot settling its run needs its lines only ordered
//! before its result ([`LogPipeline::order`]), which the store's writer does by committing in
//! order: it is answered at the hand-over, not after the commit.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::backend::LogPipeline;
use crate::conveyor::Log;
use crate::metrics::Metrics;
use crate::store::{LogFilter, Store, StoreError, StoredLog};
use crate::wasm::LogSink;

const BATCH: usize = 512;
const LIVE_CAPACITY: usize = 4096;

enum Command {
    Line(Log),
    /// Answered once the lines before it are committed.
    Flush(oneshot::Sender<()>),
    /// Answered once the lines before it are handed to the store's writer.
    Order(oneshot::Sender<()>),
}

/// The commit of a batch of lines handed to the store's writer.
type Commit = std::pin::Pin<Box<dyn Future<Output = Result<Vec<StoredLog>, StoreError>> + Send>>;

/// A batch for the announcer: its commit (none when it had no lines), its size, and the
/// flushes waiting for it and for every batch before it.
type Handed = (Option<Commit>, usize, Vec<oneshot::Sender<()>>);

/// The host's log pipeline in embedded mode: SQLite plus live subscribers.
pub struct LogHub {
    tx: mpsc::UnboundedSender<Command>,
    live: broadcast::Sender<Arc<StoredLog>>,
    store: Arc<Store>,
}

impl LogHub {
    /// Starts the writer task. It runs until every `LogHub` handle is dropped.
    pub fn start(store: Arc<Store>, metrics: Arc<Metrics>) -> Arc<LogHub> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        tokio::spawn(write_loop(rx, store.clone(), live.clone(), metrics));
        Arc::new(LogHub { tx, live, store })
    }

    /// Follows lines as they are stored.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredLog>> {
        self.live.subscribe()
    }

    /// Reads stored lines in order.
    pub fn query(&self, filter: &LogFilter) -> Result<Vec<StoredLog>, StoreError> {
        self.store.logs(filter)
    }
}

#[async_trait::async_trait]
impl LogPipeline for LogHub {
    async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    async fn order(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Order(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

impl LogSink for LogHub {
    fn write(&self, line: Log) {
        // The writer only stops when the hub is dropped, so a failed send means the host is
        // shutting down and the line has nowhere to go.
        let _ = self.tx.send(Command::Line(line));
    }
}

async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<Command>,
    store: Arc<Store>,
    live: broadcast::Sender<Arc<StoredLog>>,
    metrics: Arc<Metrics>,
) {
    let (handed, commits) = mpsc::unbounded_channel::<Handed>();
    let announcer = tokio::spawn(announce_loop(commits, live, metrics));
    let mut commands = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut commands, BATCH).await > 0 {
        let mut lines = Vec::new();
        let mut flushes = Vec::new();
        let mut orders = Vec::new();
        for c in commands.drain(..) {
            match c {
                Command::Line(l) => lines.push(l),
                Command::Flush(done) => flushes.push(done),
                Command::Order(done) => orders.push(done),
            }
        }
        let count = lines.len();
        // Handed over now; the announcer awaits the commit. A batch of flushes alone still
        // goes to it, to be answered after the commits before it.
        let commit = (count > 0).then(|| Box::pin(store.append_logs(lines)) as Commit);
        if (commit.is_some() || !flushes.is_empty())
            && handed.send((commit, count, flushes)).is_err()
        {
            break;
        }
        answer(orders);
    }
    drop(handed);
    let _ = announcer.await;
}

/// Awaits each handed-over batch's commit in order, then broadcasts its lines and answers
/// the flushes that waited for it.
async fn announce_loop(
    mut commits: mpsc::UnboundedReceiver<Handed>,
    live: broadcast::Sender<Arc<StoredLog>>,
    metrics: Arc<Metrics>,
) {
    while let Some((commit, count, flushes)) = commits.recv().await {
        let Some(commit) = commit else {
            answer(flushes);
            continue;
        };
        match commit.await {
            Ok(stored) => {
                // One counter lookup per driver's run of lines, not per line: a batch is
                // mostly a few drivers' consecutive lines.
                for same in stored.chunk_by(|a, b| a.log.driver == b.log.driver) {
                    metrics
                        .log_lines
                        .with_label_values(&[same[0].log.driver.as_str()])
                        .inc_by(same.len() as u64);
                }
                for line in stored {
                    // No subscriber is not an error.
                    let _ = live.send(Arc::new(line));
                }
            }
            Err(e) => tracing::error!(lines = count, error = %e, "could not store log lines"),
        }
        answer(flushes);
    }
}

fn answer(waiting: Vec<oneshot::Sender<()>>) {
    for done in waiting {
        let _ = done.send(());
    }
}
