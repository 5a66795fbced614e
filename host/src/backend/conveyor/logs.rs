//! The log pipeline in NATS mode: every line goes, as upstream's Go logger sends it, to
//! JetStream `logs.<runid>` (stored by the Conveyor server) and to core NATS
//! `live.logs.<runid>.<driver>` (its live streams), in the server's `types.Log` shape with the
//! labels as extra fields.
//!
//! One task publishes in order and keeps the JetStream acknowledgements it is owed; `flush`
//! waits for those of every line sent before it (each stored, or given up on and logged), so
//! a result is published only after its run's lines, while the task goes on publishing the
//! other runs' lines.

use std::collections::VecDeque;

use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::publish::PublishAck;
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

/// Lines whose JetStream acknowledgement the task may wait for at once. Below the JetStream
/// context's own bound (async-nats: 5,000 permits, a publish waits for one): a publish waiting
/// for a permit inside the loop would stop the loop that frees them, for good.
const IN_FLIGHT: usize = 1024;

/// A line's JetStream acknowledgement, as async-nats hands it out.
type Ack = <async_nats::jetstream::context::PublishAckFuture as IntoFuture>::IntoFuture;

/// What the task is owed: acknowledgements in the order their lines were sent (so the
/// `settled + 1`th line is the one at the front), and the flushes waiting for them.
#[derive(Default)]
struct Owed {
    acks: FuturesOrdered<Ack>,
    /// Lines acknowledged or given up on so far; with `acks`, the lines sent.
    settled: u64,
    /// Flushes waiting for the lines sent before them, oldest first: each waits for the
    /// number of lines sent when it came, not for every acknowledgement owed, so that the
    /// task goes on publishing other runs' lines meanwhile and one acknowledgement answers
    /// many flushes. (A flush that drained the set in place stopped the task for a round trip
    /// per flush: every slot's result waited behind every other slot's flush.)
    flushes: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Owed {
    fn sent(&mut self, ack: async_nats::jetstream::context::PublishAckFuture) {
        self.acks.push_back(ack.into_future());
    }

    fn flush(&mut self, done: oneshot::Sender<()>) {
        if self.acks.is_empty() {
            let _ = done.send(());
        } else {
            let sent = self.settled + self.acks.len() as u64;
            self.flushes.push_back((sent, done));
        }
    }

    /// The oldest line owed is acknowledged (or given up on), and with it every line before.
    fn settled(&mut self, ack: Result<PublishAck, PublishError>) {
        if let Err(e) = ack {
            tracing::warn!(error = %e, "JetStream did not store a log line");
        }
        self.settled += 1;
        while self
            .flushes
            .front()
            .is_some_and(|(upto, _)| *upto <= self.settled)
        {
            if let Some((_, done)) = self.flushes.pop_front() {
                let _ = done.send(());
            }
        }
    }
}

async fn publish_loop(client: async_nats::Client, mut rx: mpsc::UnboundedReceiver<Command>) {
    let js = async_nats::jetstream::new(client.clone());
    let mut owed = Owed::default();
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
                    while owed.acks.len() >= IN_FLIGHT {
                        if let Some(acked) = owed.acks.next().await {
                            owed.settled(acked);
                        }
                    }
                    match js.publish(format!("logs.{}", line.runid), body).await {
                        Ok(ack) => owed.sent(ack),
                        Err(e) => tracing::warn!(run_id = %line.runid, error = %e, "could not publish a log line"),
                    }
                }
                Some(Command::Flush(done)) => owed.flush(done),
            },
            // Reap acknowledgements as they come, so the set stays small between flushes.
            Some(acked) = owed.acks.next(), if !owed.acks.is_empty() => owed.settled(acked),
        }
    }
}
