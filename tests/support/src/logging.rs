//! The test process's tracing subscriber. It does two things:
//!
//! - prints events at `RUST_LOG`'s level (`warn` when unset) through the test writer, so a
//!   failing test shows what the hosts it started said;
//! - keeps each in-process host's own log, at the level the `conveyor-host` binary writes to
//!   its stderr (`RUST_LOG`, else `info,wasmtime=warn,cranelift=warn`), for [`crate::Host::log`]:
//!   an in-process host runs on threads named after it, and an event belongs to the host whose
//!   thread emitted it.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// The name prefix of an in-process host's threads; the host's id follows it.
pub(crate) const HOST_THREAD_PREFIX: &str = "conveyor-host-";

/// One host's log so far.
pub(crate) type LogBuffer = Arc<Mutex<Vec<u8>>>;

fn buffers() -> &'static Mutex<HashMap<u64, LogBuffer>> {
    static BUFFERS: OnceLock<Mutex<HashMap<u64, LogBuffer>>> = OnceLock::new();
    BUFFERS.get_or_init(Mutex::default)
}

/// Installs the subscriber, once per process; later calls do nothing. When another global
/// subscriber was installed first (a bench's own, say), that one stays and in-process hosts'
/// logs stay empty.
pub fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let printed = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
        let kept = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
        let _ = tracing_subscriber::registry()
            .with(
                fmt::layer()
                    .with_test_writer()
                    .with_ansi(false)
                    .with_thread_names(true)
                    .with_filter(printed),
            )
            .with(
                fmt::layer()
                    .with_writer(HostWriter)
                    .with_ansi(false)
                    .with_filter(kept),
            )
            .try_init();
    });
}

/// Starts keeping the log of the host with this id.
pub(crate) fn register(id: u64) -> LogBuffer {
    let buffer = LogBuffer::default();
    buffers()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, buffer.clone());
    buffer
}

/// Stops keeping the log of the host with this id (what it kept so far stays in its buffer).
pub(crate) fn unregister(id: u64) {
    buffers()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
}

/// The host whose thread is running, if any.
fn current_host_buffer() -> Option<LogBuffer> {
    let thread = std::thread::current();
    let id: u64 = thread
        .name()?
        .strip_prefix(HOST_THREAD_PREFIX)?
        .parse()
        .ok()?;
    buffers()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .cloned()
}

/// Routes a formatted event to the log of the host whose thread emitted it.
struct HostWriter;

/// The writer for one event: the emitting host's buffer, or nothing.
struct EventWriter(Option<LogBuffer>);

impl<'a> MakeWriter<'a> for HostWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter(current_host_buffer())
    }
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Some(buffer) = &self.0 {
            buffer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
