//! Giving freed heap memory back to the operating system.
//!
//! glibc's malloc keeps what a burst of connections freed in its per-thread arenas: 2,000 log
//! streams opened and closed left the process tens of MiB larger for good, which an operator
//! reads as a leak. After such a burst the host asks malloc to return what it holds free
//! ([`release_soon`]); other allocators (and other C libraries) do this themselves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long after the first call a release runs: later calls meanwhile share it, so a burst
/// of closes costs one release.
const DELAY: Duration = Duration::from_secs(1);

static PENDING: AtomicBool = AtomicBool::new(false);

/// Returns free heap memory to the operating system about a second from now, on a blocking
/// thread, once for all calls made meanwhile. Outside a Tokio runtime this does nothing.
pub fn release_soon() {
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        PENDING.store(false, Ordering::Release);
        return;
    };
    runtime.spawn(async {
        tokio::time::sleep(DELAY).await;
        PENDING.store(false, Ordering::Release);
        let _ = tokio::task::spawn_blocking(trim).await;
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks malloc's own arenas; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
