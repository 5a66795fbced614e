//! A driver's worker slots: the driver is attached to the event source once, then
//! `concurrency` workers each take their next delivery only when free, so the slots fetch in
//! parallel and nothing is taken that cannot start at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Manager;
use crate::backend::EventSource;
use crate::error_chain;

impl<S: EventSource> Manager<S> {
    /// Serves one driver until `shutdown`.
    pub(super) async fn serve_driver(self: Arc<Self>, driver: String, shutdown: CancellationToken) {
        let Some(info) = self.registry.get(&driver).map(|d| d.info.clone()) else {
            return;
        };
        let policy = self.policies.for_driver(&driver);
        loop {
            let attached = tokio::select! {
                a = self.source.attach(&info, &policy) => a,
                _ = shutdown.cancelled() => return,
            };
            match attached {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(%driver, error = %error_chain(&e), "cannot attach to the event source; retrying in 2s");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        let mut workers = JoinSet::new();
        for _ in 0..policy.concurrency {
            let (this, driver, shutdown) = (self.clone(), driver.clone(), shutdown.clone());
            workers.spawn(async move {
                loop {
                    let delivery = tokio::select! {
                        d = this.source.next(&driver) => d,
                        _ = shutdown.cancelled() => break,
                    };
                    match delivery {
                        Ok(d) => this.handle(d, &shutdown).await,
                        Err(e) => {
                            tracing::error!(%driver, error = %error_chain(&e), "event source failed; retrying in 1s");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
    }
}
