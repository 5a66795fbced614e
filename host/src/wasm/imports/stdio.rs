//! The guest's stdout and stderr, turned into log lines of the run (labelled
//! `stream=stdout|stderr`) as they are written. The last few KiB of stderr are also kept, so
//! that a trap can be reported with the panic message that preceded it.
//!
//! Secrets are masked per line by the run's logger, so the stream is never cut inside one:
//! a line longer than [`MAX_LINE`] is cut where no secret lies across the cut (before the
//! secret, or after it when it starts the line), and a line break inside a secret (a
//! multi-line key, say) does not end the line. To tell, the stream keeps back up to the
//! longest secret's length past a cut until it has seen enough, or until it ends.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use super::log::{LogLimitExceeded, RunLogger};
use crate::wasm::redact::{Across, Redactor};

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
        s.drain(false)
    }

    /// Logs what is left, the last line that did not end with a newline included.
    pub fn finish(&self) {
        let mut s = self.state();
        // Past the log budget the lines are dropped; the run already ends as log-limit.
        let _ = s.drain(true);
        let rest = std::mem::take(&mut s.partial);
        if !rest.is_empty() {
            let _ = s.emit(&rest);
        }
    }

    /// The end of what was written, as text.
    pub fn tail(&self) -> String {
        String::from_utf8_lossy(&self.state().tail).into_owned()
    }
}

/// Where the buffered bytes end their first line.
#[derive(Debug, PartialEq, Eq)]
enum LineEnd {
    /// At the line break at this index.
    At(usize),
    /// Not yet: there is no line break, or the first one that is not inside a secret may be
    /// inside one still being written.
    NotYet,
}

impl State {
    /// Logs every line that can be logged now; with `complete`, the stream has ended, so
    /// nothing more can complete a secret and the rest is cut to at most [`MAX_LINE`] (the
    /// caller logs what is left).
    fn drain(&mut self, complete: bool) -> Result<(), LogLimitExceeded> {
        let redactor = self.logger.redactor();
        // A cut at MAX_LINE is only safe once the bytes a secret across it could reach are
        // here.
        let hold = redactor.longest().saturating_sub(1);
        loop {
            let end = line_end(redactor, &self.partial, complete);
            let line_len = match end {
                LineEnd::At(n) => n,
                LineEnd::NotYet => self.partial.len(),
            };
            let long = if complete {
                line_len > MAX_LINE
            } else {
                line_len >= MAX_LINE + hold
            };
            if long {
                let at = cut_point(redactor, &self.partial, MAX_LINE);
                let line: Vec<u8> = self.partial.drain(..at).collect();
                self.emit(&line)?;
                continue;
            }
            match end {
                LineEnd::At(n) => {
                    let line: Vec<u8> = self.partial.drain(..=n).collect();
                    self.emit(&line[..n])?;
                }
                LineEnd::NotYet => return Ok(()),
            }
        }
    }

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

/// The first line break of `buf` that is not inside a secret. A line break inside a secret is
/// not one (the secret stays whole on one line, and is masked there); one that may be inside
/// a secret still being written waits for more bytes, unless the stream is `complete`.
fn line_end(redactor: &Redactor, buf: &[u8], complete: bool) -> LineEnd {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|b| *b == b'\n') {
        let n = from + i;
        match redactor.across(buf, n..n + 1, complete) {
            Across::Clear => return LineEnd::At(n),
            Across::Secret(_) => from = n + 1,
            Across::Unknown => return LineEnd::NotYet,
        }
    }
    LineEnd::NotYet
}

/// Where to cut a line longer than `max`: at `max`, unless a secret lies across it; then just
/// before the secret, or, for a secret that starts the line (one longer than `max`, say),
/// just after it. Always at least 1, and the caller has kept back enough bytes past `max`
/// for a secret across it to be seen whole.
fn cut_point(redactor: &Redactor, buf: &[u8], max: usize) -> usize {
    let mut at = max.min(buf.len());
    while at > 0 && at < buf.len() {
        match redactor.across(buf, at - 1..at + 1, true) {
            Across::Secret(r) if r.start > 0 => at = r.start,
            Across::Secret(r) => return r.end,
            Across::Clear | Across::Unknown => break,
        }
    }
    at.max(1)
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

    const SECRET: &str = "S3CR3T-VALUE-42";

    fn stream(secrets: &[String]) -> (Arc<Collect>, LogStream) {
        let sink = Arc::new(Collect::default());
        let logger = RunLogger::new(sink.clone(), "d", "R", None)
            .with_redactor(Redactor::new(secrets.iter().cloned()));
        (sink.clone(), LogStream::new(logger, "stdout"))
    }

    fn messages(sink: &Collect) -> Vec<String> {
        sink.0
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.message.clone())
            .collect()
    }

    /// No line shows any 4 bytes of the secret in a row.
    fn assert_no_part_of(secret: &str, lines: &[String]) {
        for part in secret.as_bytes().windows(4.min(secret.len())) {
            let part = std::str::from_utf8(part).unwrap();
            for (i, l) in lines.iter().enumerate() {
                assert!(!l.contains(part), "line {i} shows {part:?} of the secret");
            }
        }
    }

    fn push_in_chunks(s: &LogStream, bytes: &[u8], chunk: usize) {
        for c in bytes.chunks(chunk) {
            s.push(c).unwrap();
        }
    }

    #[test]
    fn a_long_line_is_not_cut_inside_a_secret() {
        // Every position of the secret across the 16 KiB cut, in chunks of several sizes.
        for offset in 1..SECRET.len() {
            for chunk in [1000, 4096, MAX_LINE + 100] {
                let (sink, s) = stream(&[SECRET.to_string()]);
                let mut text = "a".repeat(MAX_LINE - offset);
                text.push_str(SECRET);
                text.push_str(&"b".repeat(100));
                text.push('\n');
                push_in_chunks(&s, text.as_bytes(), chunk);
                s.finish();
                let lines = messages(&sink);
                assert_no_part_of(SECRET, &lines);
                assert_eq!(
                    lines.concat(),
                    format!("{}***{}", "a".repeat(MAX_LINE - offset), "b".repeat(100)),
                    "offset {offset}, chunk {chunk}"
                );
                assert!(lines.len() >= 2, "the line is still cut: {}", lines.len());
            }
        }
    }

    #[test]
    fn a_secret_longer_than_a_line_is_kept_whole() {
        let secret: String = (0..MAX_LINE + 500)
            .map(|i| char::from(b'A' + (i % 26) as u8))
            .collect();
        for prefix in [0, 10, MAX_LINE - 3] {
            let (sink, s) = stream(std::slice::from_ref(&secret));
            let text = format!("{}{secret}{}\n", ".".repeat(prefix), ".".repeat(20));
            push_in_chunks(&s, text.as_bytes(), 4096);
            s.finish();
            let lines = messages(&sink);
            assert_no_part_of(&secret, &lines);
            assert_eq!(
                lines.concat(),
                format!("{}***{}", ".".repeat(prefix), ".".repeat(20))
            );
        }
        // Unterminated, and only at the stream's end.
        let (sink, s) = stream(std::slice::from_ref(&secret));
        push_in_chunks(&s, format!("..{secret}").as_bytes(), 1000);
        s.finish();
        let lines = messages(&sink);
        assert_no_part_of(&secret, &lines);
        assert_eq!(lines.concat(), "..***");
    }

    #[test]
    fn a_multi_line_secret_stays_on_one_line() {
        let key = "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END KEY-----";
        let (sink, s) = stream(&[format!("{key}\n")]);
        // Byte by byte: each line break is judged only once enough has been written.
        push_in_chunks(&s, format!("key:\n{key}\nafter\n").as_bytes(), 1);
        assert_eq!(messages(&sink), ["key:", "***", "after"]);
        s.finish();
        assert_eq!(messages(&sink).len(), 3);
    }

    #[test]
    fn a_line_that_only_starts_like_a_secret_is_logged_once_it_is_not_one() {
        let (sink, s) = stream(&["ab\ncd".to_string()]);
        s.push(b"ab\n").unwrap();
        assert!(messages(&sink).is_empty(), "it may be the secret");
        s.push(b"cx\n").unwrap();
        assert_eq!(messages(&sink), ["ab", "cx"]);
        s.push(b"ab\n").unwrap();
        s.finish();
        assert_eq!(messages(&sink), ["ab", "cx", "ab"]);
    }

    #[test]
    fn without_secrets_long_lines_are_cut_at_the_limit() {
        let (sink, s) = stream(&[]);
        s.push(&vec![b'x'; 2 * MAX_LINE + 10]).unwrap();
        let lens: Vec<usize> = messages(&sink).iter().map(String::len).collect();
        assert_eq!(lens, [MAX_LINE, MAX_LINE]);
        s.finish();
        let lens: Vec<usize> = messages(&sink).iter().map(String::len).collect();
        assert_eq!(lens, [MAX_LINE, MAX_LINE, 10]);
    }
}
