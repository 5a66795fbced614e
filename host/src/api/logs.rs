//! `/logs`: stored lines in chronological order, and live streams of one driver's run as a
//! WebSocket (when the client asks for an upgrade) or Server-Sent Events (otherwise).
//!
//! A stream subscribes to live lines *before* it reads the store, then skips every live line
//! whose sequence number it already replayed: stored and live lines join with no gap and no
//! duplicate. A subscriber that falls behind the live buffer catches up from the store.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{ApiError, AppState, Body};
use crate::conveyor::Log;
use crate::logs::{LogHub, LogPipeline};
use crate::store::{LogFilter, StoredLog};
use crate::wasm::LogSink;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/logs", get(query).post(append))
        .route("/logs/", get(query).post(append))
        .route("/logs/streams/{driver}/{runid}", get(stream))
}

#[derive(serde::Deserialize)]
struct LogQuery {
    driver: Option<String>,
    runid: Option<String>,
    pipeline: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

async fn query(
    State(s): State<AppState>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Vec<Log>>, ApiError> {
    let filter = LogFilter {
        run_id: non_empty(q.runid),
        driver: non_empty(q.driver),
        pipeline: non_empty(q.pipeline),
        after_seq: None,
    };
    let lines = s.logs.query(&filter)?;
    Ok(Json(lines.into_iter().map(|l| l.log).collect()))
}

/// `POST /logs`: stores a line sent by an outside producer (upstream's route), and streams it.
async fn append(
    State(s): State<AppState>,
    Body(mut log): Body<Log>,
) -> Result<(StatusCode, &'static str), ApiError> {
    if log.timestamp.is_empty() {
        log.timestamp = crate::clock::now_rfc3339();
    }
    s.logs.write(log);
    s.logs.flush().await;
    Ok((StatusCode::CREATED, "Created"))
}

async fn stream(
    State(s): State<AppState>,
    Path((driver, runid)): Path<(String, String)>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let filter = LogFilter {
        run_id: Some(runid),
        driver: Some(driver),
        pipeline: None,
        after_seq: None,
    };
    let lines = follow(s.logs.clone(), filter);
    match ws {
        Ok(ws) => ws.on_upgrade(move |socket| send_ws(socket, lines)),
        // Not an upgrade request: Server-Sent Events.
        Err(_) => {
            let events = ReceiverStream::new(lines).map(|l| {
                let json = serde_json::to_string(&l.log).unwrap_or_default();
                Ok::<_, Infallible>(Event::default().id(l.seq.to_string()).data(json))
            });
            Sse::new(events)
                .keep_alive(
                    KeepAlive::new()
                        .interval(Duration::from_secs(15))
                        .text("heartbeat"),
                )
                .into_response()
        }
    }
}

async fn send_ws(mut socket: WebSocket, mut lines: mpsc::Receiver<StoredLog>) {
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                let json = serde_json::to_string(&line.log).unwrap_or_default();
                if socket.send(Message::Text(json.into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Stored lines matching `filter`, then live ones, through a channel that closes when the
/// subscriber goes away.
fn follow(logs: Arc<LogHub>, filter: LogFilter) -> mpsc::Receiver<StoredLog> {
    let (tx, rx) = mpsc::channel(256);
    let mut live = logs.subscribe();
    tokio::spawn(async move {
        let mut last = 0;
        if replay(&logs, &filter, &mut last, &tx).await.is_err() {
            return;
        }
        loop {
            let next = tokio::select! {
                next = live.recv() => next,
                _ = tx.closed() => return,
            };
            match next {
                Ok(line) => {
                    if line.seq > last && matches(&filter, &line.log) {
                        last = line.seq;
                        if tx.send((*line).clone()).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if replay(&logs, &filter, &mut last, &tx).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    rx
}

/// Sends the stored lines after `last`; `Err` when the subscriber is gone.
async fn replay(
    logs: &LogHub,
    filter: &LogFilter,
    last: &mut i64,
    tx: &mpsc::Sender<StoredLog>,
) -> Result<(), ()> {
    let filter = LogFilter {
        after_seq: Some(*last),
        ..filter.clone()
    };
    let lines = match logs.query(&filter) {
        Ok(lines) => lines,
        Err(e) => {
            tracing::error!(error = %e, "could not read logs for a stream");
            return Err(());
        }
    };
    for line in lines {
        *last = line.seq;
        tx.send(line).await.map_err(drop)?;
    }
    Ok(())
}

fn matches(filter: &LogFilter, log: &Log) -> bool {
    filter.run_id.as_ref().is_none_or(|r| *r == log.runid)
        && filter.driver.as_ref().is_none_or(|d| *d == log.driver)
        && filter.pipeline.as_ref().is_none_or(|p| *p == log.pipeline)
}
