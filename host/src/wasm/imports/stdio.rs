//! The guest's stdout and stderr, turned into log lines of the run (labelled
//! `stream=stdout|stderr`) as they are written. The last few KiB of stderr are also kept, so
//! that a trap can be reported with the panic message that preceded it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use super::log::{LogLimitExceeded, RunLogger};

/// A line longer than this is cut into several log lines.
const MAX_LINE: usize = 16 << 10;
/// How much of the stream's end is kept for failure reports.
const TAIL: usize = 4 << 10;

/// One captured output stream. Clones share the same buffer.
#[derive(Clone)]
pub struct LogStream {
    inner: Arc<Mutex<State>>,
}

struct State {
    logger: RunLogger,
    stream: &'static str,
    partial: Vec<u8>,
    tail: Vec<u8>,
}

impl LogStream {
    /// Captures a stream named `stream` into `logger`'s run.
    pub fn new(logger: RunLogger, stream: &'static str) -> Self {
        LogStream {
            inner: Arc::new(Mutex::new(State {
                logger,
                stream,
                partial: Vec::new(),
                tail: Vec::new(),
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, bytes: &[u8]) -> Result<(), LogLimitExceeded> {
        let mut s = self.state();
        s.tail.extend_from_slice(bytes);
        if s.tail.len() > TAIL {
            let cut = s.tail.len() - TAIL;
            s.tail.drain(..cut);
        }
        s.partial.extend_from_slice(bytes);
        while let Some(pos) = s.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = s.partial.drain(..=pos).collect();
            s.emit(&line[..line.len() - 1])?;
        }
        while s.partial.len() >= MAX_LINE {
            let line: Vec<u8> = s.partial.drain(..MAX_LINE).collect();
            s.emit(&line)?;
        }
        Ok(())
    }

    /// Logs a last line that did not end with a newline.
    pub fn finish(&self) {
        let mut s = self.state();
        let rest = std::mem::take(&mut s.partial);
        if !rest.is_empty() {
            // Past the log budget the line is dropped; the run already ends as log-limit.
            let _ = s.emit(&rest);
        }
    }

    /// The end of what was written, as text.
    pub fn tail(&self) -> String {
        String::from_utf8_lossy(&self.state().tail).into_owned()
    }
}

impl State {
    fn emit(&self, line: &[u8]) -> Result<(), LogLimitExceeded> {
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        // Blank lines carry nothing in a log view (a Rust panic message starts with one).
        if text.trim().is_empty() {
            return Ok(());
        }
        self.logger.log(
            [("stream".to_string(), self.stream.to_string())],
            text.to_string(),
        )
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes)
            .map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(MAX_LINE)
    }
}

#[async_trait::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.push(buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::imports::log::Collect;

    #[test]
    fn splits_lines_and_keeps_partial_until_finish() {
        let sink = Arc::new(Collect::default());
        let s = LogStream::new(RunLogger::new(sink.clone(), "d", "R", None), "stderr");
        s.push(b"thread panicked at x:\nbo").unwrap();
        s.push(b"om\r\nrest").unwrap();
        assert_eq!(sink.0.lock().unwrap().len(), 2);
        s.finish();
        let lines = sink.0.lock().unwrap();
        let texts: Vec<_> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(texts, ["thread panicked at x:", "boom", "rest"]);
        assert_eq!(lines[0].labels["stream"], "stderr");
        assert!(s.tail().contains("boom"));
    }
}
