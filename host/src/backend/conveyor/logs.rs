//! The log pipeline in NATS mode: every line goes, as upstream's Go logger sends it, to
//! JetStream `logs.<runid>` (stored by the Conveyor server) and to core NATS
//! `live.logs.<runid>.<driver>` (its live streams), in the server's `types.Log` shape with the
//! labels as extra fields.
//!
//! One task publishes in order and keeps the JetStream acknowledgements it is owed; `flush`
//! waits for those of every line sent before it, so a result is published only after its
//! run's lines are stored, while the task goes on publishing the other runs' lines.

use std::collections::VecDeque;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};

use crate::backend::LogPipeline;
use crate::conveyor::Log;
use crate::wasm::LogSink;

enum Command {
    Line(Log),
    Flush(oneshot::Sender<()>),
}

/// Publishes log lines to a Conveyor deployment's NATS.
pub struct NatsLogs {
    tx: mpsc::UnboundedSender<Command>,
}

impl NatsLogs {
    /// Starts the publishing task on a connected client.
    pub fn start(client: async_nats::Client) -> NatsLogs {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(publish_loop(client, rx));
        NatsLogs { tx }
    }
}

impl LogSink for NatsLogs {
    fn write(&self, line: Log) {
        let _ = self.tx.send(Command::Line(line));
    }
}

#[async_trait::async_trait]
impl LogPipeline for NatsLogs {
    async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn publish_loop(client: async_nats::Client, mut rx: mpsc::UnboundedReceiver<Command>) {
    let js = async_nats::jetstream::new(client.clone());
    // Acknowledgements in the order their lines were sent, each with the line's number: when
    // one is taken from the front, every line up to that number is settled.
    let mut pending = FuturesOrdered::new();
    let mut sent: u64 = 0;
    // Flushes waiting for the lines sent before them, oldest first: each waits for the
    // number of lines sent when it came, not for the set to empty, so that the loop keeps
    // publishing other runs' lines meanwhile and one acknowledgement can answer many
    // flushes. (A flush that drained the set in place stopped the loop for a round trip per
    // flush: every slot's result waited behind every other slot's flush.)
    let mut flushes: VecDeque<(u64, oneshot::Sender<()>)> = VecDeque::new();
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                None => break,
                Some(Command::Line(line)) => {
                    let body = match serde_json::to_vec(&line) {
                        Ok(b) => bytes::Bytes::from(b),
                        Err(e) => {
                            tracing::error!(error = %e, "could not encode a log line");
                            continue;
                        }
                    };
                    let live = format!("live.logs.{}.{}", line.runid, line.driver);
                    if let Err(e) = client.publish(live, body.clone()).await {
                        tracing::warn!(error = %e, "could not publish a live log line");
                    }
                    match js.publish(format!("logs.{}", line.runid), body).await {
                        Ok(ack) => {
                            sent += 1;
                            let n = sent;
                            pending.push_back(async move { (n, ack.await) });
                        }
                        Err(e) => tracing::warn!(run_id = %line.runid, error = %e, "could not publish a log line"),
                    }
                }
                Some(Command::Flush(done)) => {
                    if pending.is_empty() {
                        let _ = done.send(());
                    } else {
                        flushes.push_back((sent, done));
                    }
                }
            },
            // Reap acknowledgements as they come, so the set stays small between flushes.
            Some((n, ack)) = pending.next(), if !pending.is_empty() => {
                if let Err(e) = ack {
                    tracing::warn!(error = %e, "JetStream did not store a log line");
                }
                while flushes.front().is_some_and(|(upto, _)| *upto <= n) {
                    if let Some((_, done)) = flushes.pop_front() {
                        let _ = done.send(());
                    }
                }
            }
        }
    }
    // The sender is gone: what is owed is still reaped for the flushes waiting.
    while let Some((_, ack)) = pending.next().await {
        if let Err(e) = ack {
            tracing::warn!(error = %e, "JetStream did not store a log line");
        }
    }
    for (_, done) in flushes.drain(..) {
        let _ = done.send(());
    }
}
