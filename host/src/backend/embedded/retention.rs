//! The pruner: applies `[retention]` to the store in the background, a small batch at a time
//! off the async workers, with a pause between batches so that the API's requests are never
//! held up behind it for more than one batch.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Keep, RetentionConfig};
use crate::store::{Store, StoreError};

/// The first look, after start-up settles (or sooner, with a shorter interval).
const FIRST: Duration = Duration::from_secs(5);
/// The pause between two batches of one pass.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// Until `shutdown`, removes what `retention` does not keep. Does nothing when it keeps
/// everything.
pub async fn run(store: Arc<Store>, retention: RetentionConfig, shutdown: CancellationToken) {
    if retention.runs.is_none() && retention.logs.is_none() {
        return;
    }
    // An interval of 0 would be a busy loop.
    let interval = retention.interval.max(Duration::from_millis(10));
    let mut wait = FIRST.min(interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        wait = interval;
        let (runs, lines) = (
            pass(&store, retention.runs, Store::prune_runs, &shutdown).await,
            pass(&store, retention.logs, Store::prune_logs, &shutdown).await,
        );
        match (runs, lines) {
            (Ok(0), Ok(0)) => {}
            (Ok(runs), Ok(lines)) => tracing::info!(runs, lines, "retention: removed"),
            (Err(e), _) | (_, Err(e)) => tracing::error!(error = %e, "retention: a pass failed"),
        }
    }
}

type Prune = fn(&Store, Keep, time::OffsetDateTime) -> Result<usize, StoreError>;

/// One pass: batches until one removes less than a full batch. Returns how many were removed.
async fn pass(
    store: &Arc<Store>,
    keep: Option<Keep>,
    prune: Prune,
    shutdown: &CancellationToken,
) -> Result<usize, StoreError> {
    let Some(keep) = keep else { return Ok(0) };
    let mut total = 0;
    while !shutdown.is_cancelled() {
        let store = store.clone();
        let now = time::OffsetDateTime::now_utc();
        let removed = tokio::task::spawn_blocking(move || prune(&store, keep, now))
            .await
            .unwrap_or(Ok(0))?;
        total += removed;
        if removed < crate::store::retention::BATCH {
            break;
        }
        tokio::time::sleep(BETWEEN_BATCHES).await;
    }
    Ok(total)
}
