//! A driver's pulls from its durable consumer. One task per driver keeps one inbox
//! subscription and asks JetStream, in pull requests sent to it, for exactly as many messages
//! as there are slots waiting in `next`: one request for all the slots free at that moment,
//! and another for slots that free up while it is open. Each message goes to a waiting slot
//! as it arrives. So the messages asked for never outnumber the slots waiting for them, and
//! nothing sits in a local buffer with its ack timer running while another host could start
//! it.
//!
//! The server fills and expires one consumer's requests in the order they were sent, so the
//! task keeps its open requests in that order: a message counts against the oldest, a
//! `408` (expired) closes the oldest and gives its unfilled messages back to be asked for
//! again, a `409` (the consumer was deleted or moved) voids them all, to be asked for again on
//! a fresh inbox. A request lasts [`PULL_EXPIRES`] with an idle heartbeat every
//! [`HEARTBEAT`]; requests that hear nothing for two heartbeats were lost with the server (a
//! restart) and are asked for again. Credit is asked for before each wait, so a request that
//! failed to send is sent again even when no other slot frees up.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use async_nats::{StatusCode, Subscriber};
use futures::StreamExt;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long one pull request waits for messages before the server expires it.
pub const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// How often the server says an open request is still alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// A driver's puller; pulling stops when it is dropped.
pub struct Puller {
    demand: mpsc::UnboundedSender<()>,
    pulled: Mutex<mpsc::UnboundedReceiver<jetstream::Message>>,
    _stop: DropGuard,
}

impl Puller {
    /// Starts pulling from `consumer` for `driver`'s slots.
    pub fn start(
        js: jetstream::Context,
        client: async_nats::Client,
        consumer: consumer::PullConsumer,
        driver: String,
    ) -> Puller {
        let (demand, wanted) = mpsc::unbounded_channel();
        let (deliver, pulled) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = PullTask {
            js,
            client,
            consumer,
            driver,
            wanted,
            deliver,
            stop: stop.clone(),
        };
        tokio::spawn(task.run());
        Puller {
            demand,
            pulled: Mutex::new(pulled),
            _stop: stop.drop_guard(),
        }
    }

    /// The next message for one free slot; `None` once the puller has stopped. A slot that
    /// stops waiting leaves the message asked for it to the next slot that calls.
    pub async fn next(&self) -> Option<jetstream::Message> {
        self.demand.send(()).ok()?;
        self.pulled.lock().await.recv().await
    }
}

impl Drop for Puller {
    fn drop(&mut self) {
        // Messages pulled for slots that no longer wait go back at once, not after ack_wait.
        let pulled = self.pulled.get_mut();
        pulled.close();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        while let Ok(message) = pulled.try_recv() {
            runtime.spawn(async move {
                let _ = message
                    .ack_with(jetstream::AckKind::Nak(Some(Duration::ZERO)))
                    .await;
            });
        }
    }
}

struct PullTask {
    js: jetstream::Context,
    client: async_nats::Client,
    consumer: consumer::PullConsumer,
    driver: String,
    wanted: mpsc::UnboundedReceiver<()>,
    deliver: mpsc::UnboundedSender<jetstream::Message>,
    stop: CancellationToken,
}

/// The open requests, oldest first: how many messages each still owes.
#[derive(Default)]
struct Open {
    owed: VecDeque<usize>,
    /// When the server last said anything on the inbox.
    heard: Option<Instant>,
}

impl Open {
    fn total(&self) -> usize {
        self.owed.iter().sum()
    }

    /// A message arrived: it fills the oldest request.
    fn filled(&mut self) {
        if let Some(front) = self.owed.front_mut() {
            *front -= 1;
            if *front == 0 {
                self.owed.pop_front();
            }
        }
    }

    /// The oldest request expired: what it still owed.
    fn expired(&mut self) -> usize {
        self.owed.pop_front().unwrap_or(0)
    }

    /// Every open request is void: what they owed.
    fn voided(&mut self) -> usize {
        let total = self.total();
        self.owed.clear();
        total
    }
}

impl PullTask {
    async fn run(mut self) {
        let mut credit = 0usize;
        loop {
            let inbox = self.client.new_inbox();
            let sub = match self.client.subscribe(inbox.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(driver = %self.driver, error = %e, "cannot subscribe for pulls; retrying in 1s");
                    if self.pause(Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            match self.serve(sub, inbox, &mut credit).await {
                Served::Stopped => return,
                Served::Resubscribe => {}
            }
        }
    }

    /// Waits `d`; `true` when stopped meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.stop.cancelled() => true,
        }
    }

    async fn serve(&mut self, mut sub: Subscriber, inbox: String, credit: &mut usize) -> Served {
        let mut open = Open::default();
        loop {
            // Asked for before waiting, so that credit carried over (from a request that
            // failed to send, or from the subscription this one replaces) is asked for
            // again now, not only when another slot frees up: every slot may already be
            // waiting, and none would ever call again.
            while self.wanted.try_recv().is_ok() {
                *credit += 1;
            }
            if *credit > 0 {
                let request = consumer::pull::BatchConfig {
                    batch: *credit,
                    expires: Some(PULL_EXPIRES),
                    idle_heartbeat: HEARTBEAT,
                    ..Default::default()
                };
                match self
                    .consumer
                    .request_batch(request, inbox.clone().into())
                    .await
                {
                    Ok(()) => {
                        open.owed.push_back(std::mem::take(credit));
                        open.heard = Some(Instant::now());
                    }
                    Err(e) => {
                        tracing::warn!(driver = %self.driver, error = %e, "pull request failed; asking again in 1s");
                        if self.pause(Duration::from_secs(1)).await {
                            return Served::Stopped;
                        }
                        continue;
                    }
                }
            }
            let silent = open
                .heard
                .filter(|_| !open.owed.is_empty())
                .map(|h| h + HEARTBEAT * 2);
            tokio::select! {
                _ = self.stop.cancelled() => return Served::Stopped,
                w = self.wanted.recv() => match w {
                    Some(()) => *credit += 1,
                    None => return Served::Stopped,
                },
                m = sub.next() => {
                    let Some(message) = m else {
                        *credit += open.voided();
                        return Served::Resubscribe;
                    };
                    open.heard = Some(Instant::now());
                    match message.status {
                        None | Some(StatusCode::OK) => {
                            open.filled();
                            let message = jetstream::Message { message, context: self.js.clone() };
                            if let Err(unsent) = self.deliver.send(message) {
                                let _ = unsent.0.ack_with(jetstream::AckKind::Nak(None)).await;
                                return Served::Stopped;
                            }
                        }
                        Some(StatusCode::IDLE_HEARTBEAT) => {}
                        Some(StatusCode::TIMEOUT) => *credit += open.expired(),
                        Some(status) => {
                            tracing::warn!(driver = %self.driver, %status, description = ?message.description, "pull requests ended by the server; asking again in 1s");
                            *credit += open.voided();
                            if self.pause(Duration::from_secs(1)).await {
                                return Served::Stopped;
                            }
                            // On a fresh inbox: a late reply to a voided request must not
                            // count against the new ones.
                            return Served::Resubscribe;
                        }
                    }
                }
                _ = sleep_until(silent) => {
                    tracing::warn!(driver = %self.driver, "no heartbeat from the server for the open pull requests; asking again");
                    *credit += open.voided();
                }
            }
        }
    }
}

enum Served {
    Stopped,
    Resubscribe,
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::Open;

    #[test]
    fn messages_fill_the_oldest_request_and_expiry_returns_what_it_owed() {
        let mut open = Open::default();
        open.owed.extend([2, 3]);
        open.filled();
        open.filled();
        assert_eq!(open.owed, [3], "the first request is complete");
        open.filled();
        assert_eq!(open.expired(), 2, "the second expires owing two");
        assert_eq!(open.total(), 0);
        open.owed.extend([1, 4]);
        assert_eq!(open.voided(), 5);
        assert!(open.owed.is_empty());
    }
}
