//! Reading the host's log streams: server-sent events ([`Sse`]) and WebSocket ([`Ws`]). Every
//! read waits 30 s at most and panics after that.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// How long a stream may stay silent before a read panics.
const SILENCE: Duration = Duration::from_secs(30);

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseFrame {
    /// Its `event:` name, if it has one (`end` closes a run's stream).
    pub event: Option<String>,
    /// Its `data:` (JSON), if it has any.
    pub data: Option<Value>,
}

/// A server-sent event stream, read frame by frame.
pub struct Sse {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    text: String,
}

impl Sse {
    /// Reads the body of a response (the caller checks its status and headers first).
    pub fn new(response: reqwest::Response) -> Sse {
        Sse {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            text: String::new(),
        }
    }

    /// GETs `url` and reads its stream.
    pub async fn get(url: &str) -> Sse {
        Sse::new(reqwest::get(url).await.expect("GET the SSE stream"))
    }

    /// Everything received so far, as sent.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The next frame, or `None` when the stream ends.
    pub async fn next_frame(&mut self) -> Option<SseFrame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut event = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = Some(e.to_string());
                    }
                    if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(
                            serde_json::from_str(d)
                                .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {d}")),
                        );
                    }
                }
                return Some(SseFrame { event, data });
            }
            let chunk = tokio::time::timeout(SILENCE, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("an SSE chunk within {SILENCE:?}"))?
                .expect("read the SSE stream");
            let chunk = String::from_utf8_lossy(&chunk);
            self.buffer.push_str(&chunk);
            self.text.push_str(&chunk);
        }
    }

    /// The data of the next `n` frames that carry data; panics if the stream ends first.
    pub async fn data(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let frame = self.next_frame().await.unwrap_or_else(|| {
                panic!("the SSE stream ended after {} of {n} frames", out.len())
            });
            out.extend(frame.data);
        }
        out
    }

    /// Reads frames until an `end` event: the data of the frames before it, and the end's
    /// data. Panics if the stream ends first.
    pub async fn until_end(&mut self) -> (Vec<Value>, Value) {
        let mut lines = Vec::new();
        loop {
            let frame = self
                .next_frame()
                .await
                .expect("the stream ends only after the end frame");
            match (frame.event.as_deref(), frame.data) {
                (Some("end"), Some(d)) => return (lines, d),
                (_, Some(d)) => lines.push(d),
                _ => {}
            }
        }
    }
}

/// A WebSocket log stream, read message by message.
pub struct Ws {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Ws {
    /// Connects to a `ws://` URL.
    pub async fn connect(url: &str) -> Ws {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect the websocket {url}: {e}"));
        Ws { socket }
    }

    /// Connects to a `ws://` URL, or returns the HTTP status the server refused the upgrade
    /// with (panics on any other error).
    pub async fn try_connect(url: &str) -> Result<Ws, u16> {
        match tokio_tungstenite::connect_async(url).await {
            Ok((socket, _)) => Ok(Ws { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("cannot connect the websocket {url}: {e}"),
        }
    }

    /// The next text message, as JSON; `None` at the close frame or the end of the stream.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(SILENCE, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("a websocket message within {SILENCE:?}"));
            match message {
                Some(Ok(Message::Text(t))) => {
                    return Some(
                        serde_json::from_str(&t)
                            .unwrap_or_else(|e| panic!("websocket text is not JSON ({e}): {t}")),
                    );
                }
                Some(Ok(Message::Close(_))) | None => return None,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("websocket error: {e}"),
            }
        }
    }

    /// The next `n` text messages; panics if the stream closes first.
    pub async fn take(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let message = self.next().await.unwrap_or_else(|| {
                panic!("the websocket closed after {} of {n} messages", out.len())
            });
            out.push(message);
        }
        out
    }

    /// Every text message until the close frame.
    pub async fn until_close(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(message) = self.next().await {
            out.push(message);
        }
        out
    }
}
