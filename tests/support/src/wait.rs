//! Polling until something holds.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Calls `probe` every `every` until it returns `Ok`, and returns that; after `within`
/// returns the last `Err` instead (the caller panics with it and whatever else helps).
pub async fn poll<T, E, F, Fut>(within: Duration, every: Duration, mut probe: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// Waits until `check` holds, checking every 100 ms; panics naming `what` after `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waited = poll(within, Duration::from_millis(100), || {
        let done = check();
        async move { if done.await { Ok(()) } else { Err(()) } }
    })
    .await;
    if waited.is_err() {
        panic!("{what}: not within {within:?}");
    }
}

/// Waits until the host at `url` lists no driver file as loading in `GET /health`; false if
/// that takes longer than `within`. Runs on a thread and runtime of its own, so it can be
/// called from sync code and from inside a test's runtime alike.
pub fn wait_for_drivers(url: &str, within: Duration) -> bool {
    let url = format!("{url}/health");
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return false;
        };
        rt.block_on(async {
            // Readiness only: a host serving TLS with a certificate of the test's own CA is
            // checked by the test itself.
            let Ok(client) = reqwest::Client::builder()
                .danger_accept_invalid_certs(url.starts_with("https:"))
                .build()
            else {
                return false;
            };
            poll(within, Duration::from_millis(50), || async {
                let health: Value = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(drop)?
                    .json()
                    .await
                    .map_err(drop)?;
                match health["drivers"]["loading"].as_array() {
                    Some(loading) if loading.is_empty() => Ok(()),
                    _ => Err(()),
                }
            })
            .await
            .is_ok()
        })
    })
    .join()
    .unwrap_or(false)
}
