//! A driver's pulls from its durable consumer: one task per driver asks JetStream, in one pull
//! request, for as many messages as there are slots waiting in `next`, and hands each message
//! to a waiting slot as it arrives. While a request is open, slots that free up get a request
//! of their own, so the messages asked for never outnumber the slots waiting for them: nothing
//! sits in a local buffer with its ack timer running while another host could start it.
//!
//! A request lasts at most [`PULL_EXPIRES`]; one lost with the server (a restart) ends at
//! async-nats's own timeout a few seconds later, and its slots ask again. (Idle heartbeats are
//! not requested: async-nats 0.51's batch reader swallows them without waking its task.)

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long one pull request waits for messages before it is renewed.
pub const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// A driver's puller; pulling stops when it is dropped.
pub struct Puller {
    demand: mpsc::UnboundedSender<()>,
    pulled: Mutex<mpsc::UnboundedReceiver<jetstream::Message>>,
    _stop: DropGuard,
}

enum Pulled {
    Message(Box<jetstream::Message>),
    /// A request ended with `unfilled` of its messages not delivered.
    Ended {
        unfilled: usize,
    },
}

impl Puller {
    /// Starts pulling from `consumer` for `driver`'s slots.
    pub fn start(consumer: consumer::PullConsumer, driver: String) -> Puller {
        let (demand, wanted) = mpsc::unbounded_channel();
        let (deliver, pulled) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        tokio::spawn(pull_loop(consumer, driver, wanted, deliver, stop.clone()));
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
        while let Ok(message) = pulled.try_recv() {
            tokio::spawn(async move {
                let _ = message
                    .ack_with(jetstream::AckKind::Nak(Some(Duration::ZERO)))
                    .await;
            });
        }
    }
}

async fn pull_loop(
    consumer: consumer::PullConsumer,
    driver: String,
    mut wanted: mpsc::UnboundedReceiver<()>,
    deliver: mpsc::UnboundedSender<jetstream::Message>,
    stop: CancellationToken,
) {
    let (events, mut ended) = mpsc::unbounded_channel();
    let mut credit = 0usize;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            w = wanted.recv() => match w {
                Some(()) => credit += 1,
                None => return,
            },
            Some(event) = ended.recv() => match event {
                Pulled::Message(m) => {
                    if let Err(unsent) = deliver.send(*m) {
                        let _ = unsent.0.ack_with(jetstream::AckKind::Nak(None)).await;
                        return;
                    }
                }
                Pulled::Ended { unfilled } => credit += unfilled,
            },
        }
        while wanted.try_recv().is_ok() {
            credit += 1;
        }
        if credit > 0 {
            tokio::spawn(pull(
                consumer.clone(),
                driver.clone(),
                std::mem::take(&mut credit),
                events.clone(),
                stop.clone(),
            ));
        }
    }
}

/// One pull request for `n` messages, each passed on as it arrives.
async fn pull(
    consumer: consumer::PullConsumer,
    driver: String,
    n: usize,
    events: mpsc::UnboundedSender<Pulled>,
    stop: CancellationToken,
) {
    let mut got = 0;
    let failed = match consumer
        .batch()
        .max_messages(n)
        .expires(PULL_EXPIRES)
        .messages()
        .await
    {
        Ok(mut batch) => loop {
            let next = tokio::select! {
                next = batch.next() => next,
                _ = stop.cancelled() => return,
            };
            match next {
                None => break false,
                Some(Ok(message)) => {
                    got += 1;
                    if events.send(Pulled::Message(Box::new(message))).is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(%driver, error = %e, "pull failed; asking again in 1s");
                    break true;
                }
            }
        },
        Err(e) => {
            tracing::warn!(%driver, error = %e, "pull request failed; asking again in 1s");
            true
        }
    };
    if failed {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
    let _ = events.send(Pulled::Ended {
        unfilled: n.saturating_sub(got),
    });
}
