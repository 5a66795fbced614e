//! `/logs`: stored lines in chronological order, and live streams of a run (one driver's
//! lines, or every driver's for `/logs/pipeline/{runid}`) as a WebSocket (when the client asks
//! for an upgrade) or Server-Sent Events (otherwise).
//!
//! Once the run is over a stream sends an end-of-run message and closes: an SSE frame with
//! `event: end`, or a last WebSocket text message `{"event":"end",...}` and a close frame.
//! Every line of a run is stored before the run's end is recorded, so nothing follows it.
//! A run id the host does not know (lines posted by an outside producer) streams without end.
//!
//! A stream subscribes to live lines *before* it reads the store, then skips every live line
//! whose sequence number it already replayed: stored and live lines join with no gap and no
//! duplicate. A subscriber that falls behind the live buffer catches up from the store.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, Body, EmbeddedState as AppState, page};
use crate::backend::LogPipeline;
use crate::backend::embedded::logs::LogHub;
use crate::conveyor::{ErrorBody, Log};
use crate::store::{LogFilter, RunEnded, Store, StoredLog};
use crate::wasm::LogSink;

/// The prefix of upstream's #93 path for a driver's stream, an alias of `/logs/streams/`.
pub(super) const STREAM_ALIAS: &str = "/drivers/streams/logs/";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(query, append))
        .routes(routes!(driver_stream))
        .routes(routes!(run_stream))
        // The path asked for upstream (its issue #93), the same stream.
        .routes(routes!(driver_stream_alias))
}

/// What a stream carries.
enum Item {
    Line(StoredLog),
    End(RunEnded),
}

/// The end-of-run message.
#[derive(serde::Serialize)]
struct EndMessage<'a> {
    event: &'static str,
    runid: &'a str,
    status: crate::store::RunStatus,
    message: &'a str,
}

fn end_json(end: &RunEnded) -> String {
    serde_json::to_string(&EndMessage {
        event: "end",
        runid: &end.runid,
        status: end.status,
        message: &end.message,
    })
    .unwrap_or_default()
}

/// Lines `GET /logs` returns: 10,000 when the request names no `limit`, at most 100,000.
pub const LOG_PAGE: page::Sizes = page::Sizes {
    default: 10_000,
    max: 100_000,
};

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    driver: Option<String>,
    runid: Option<String>,
    pipeline: Option<String>,
    /// Only lines stored after this cursor (the `X-Conveyor-Next-After` of the last page).
    after: Option<i64>,
    /// At most this many lines.
    limit: Option<u32>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// `GET /logs`: stored lines in order, a page at a time. A full page carries the cursor of
/// the next one in `X-Conveyor-Next-After`.
#[utoipa::path(operation_id = "logs_query", get, path = "/logs", tag = "logs", params(LogQuery),
    responses((status = 200, description = "Stored lines, oldest first", body = Vec<Log>, headers(("X-Conveyor-Next-After" = String, description = "The cursor of the next page, on a full page"))), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn query(
    State(s): State<AppState>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = LOG_PAGE.limit(q.limit)?;
    let filter = LogFilter {
        run_id: non_empty(q.runid),
        driver: non_empty(q.driver),
        pipeline: non_empty(q.pipeline),
        after_seq: q.after,
        limit: Some(limit),
    };
    let lines = s.logs.query(&filter)?;
    let last = lines.last().map(|l| l.seq.to_string()).unwrap_or_default();
    let lines: Vec<Log> = lines.into_iter().map(|l| l.log).collect();
    Ok(page::respond(lines, limit, |_| last.clone()))
}

/// `POST /logs`: stores a line sent by an outside producer (upstream's route), and streams it.
#[utoipa::path(operation_id = "logs_append", post, path = "/logs", tag = "logs", request_body = Log,
    responses((status = 201, description = "Stored", body = String, content_type = "text/plain"), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
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

/// Open log streams, capped in total and per client address: each holds a subscription and
/// a task, so they cannot be opened without bound.
pub struct StreamSlots {
    max: usize,
    per_client: usize,
    open: std::sync::Mutex<(usize, std::collections::HashMap<IpAddr, usize>)>,
}

/// One open stream's slot; dropping it frees the slot.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    ip: IpAddr,
}

impl StreamSlots {
    /// At most `max` streams, `per_client` from one address.
    pub fn new(max: usize, per_client: usize) -> Arc<StreamSlots> {
        Arc::new(StreamSlots {
            max,
            per_client,
            open: std::sync::Mutex::default(),
        })
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_ip) = &mut *open;
        let mine = by_ip.get(&ip).copied().unwrap_or(0);
        if *total >= self.max || mine >= self.per_client {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many open log streams (at most {} in all, {} per client)",
                    self.max, self.per_client
                ),
            ));
        }
        *total += 1;
        by_ip.insert(ip, mine + 1);
        Ok(StreamSlot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
        // What the stream's socket, task and buffers held goes back to the system.
        crate::memory::release_soon();
    }
}

/// The client's address, as the server recorded it (unspecified when served without it).
fn client_ip(info: Option<Extension<ConnectInfo<SocketAddr>>>) -> IpAddr {
    info.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(ConnectInfo(a))| {
        a.ip()
    })
}

/// `GET /logs/streams/{driver}/{runid}`: one driver's lines of a run.
#[utoipa::path(operation_id = "logs_driver_stream", get, path = "/logs/streams/{driver}/{runid}", tag = "logs", params(("driver" = String, Path, description = "The driver"), ("runid" = String, Path, description = "The run"), ("ticket" = Option<String>, Query, description = "A stream ticket (POST /auth/tickets), instead of a bearer token")),
    responses((status = 200, description = "Server-Sent Events (`data:` a log line as JSON, `event: end` at the run's end), or a WebSocket when the request asks for an upgrade", content_type = "text/event-stream", body = Log), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn driver_stream(
    State(s): State<AppState>,
    Path((driver, runid)): Path<(String, String)>,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match s.streams.acquire(client_ip(info)) {
        Ok(slot) => stream(s, runid, Some(driver), ws, slot),
        Err(e) => e.into_response(),
    }
}

/// `GET /drivers/streams/logs/{driver}/{runid}`: upstream's #93 path of
/// [`driver_stream`]; a handler of its own because a documented path names one handler.
#[utoipa::path(operation_id = "logs_driver_stream_alias", get, path = "/drivers/streams/logs/{driver}/{runid}", tag = "logs", params(("driver" = String, Path, description = "The driver"), ("runid" = String, Path, description = "The run"), ("ticket" = Option<String>, Query, description = "A stream ticket (POST /auth/tickets), instead of a bearer token")),
    responses((status = 200, description = "Server-Sent Events (`data:` a log line as JSON, `event: end` at the run's end), or a WebSocket when the request asks for an upgrade", content_type = "text/event-stream", body = Log), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn driver_stream_alias(
    state: State<AppState>,
    path: Path<(String, String)>,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    driver_stream(state, path, info, ws).await
}

/// `GET /logs/pipeline/{runid}`: every driver's lines of a run, in the order they were
/// stored.
#[utoipa::path(operation_id = "logs_run_stream", get, path = "/logs/pipeline/{runid}", tag = "logs", params(("runid" = String, Path, description = "The run"), ("ticket" = Option<String>, Query, description = "A stream ticket (POST /auth/tickets), instead of a bearer token")),
    responses((status = 200, description = "Server-Sent Events (`data:` a log line as JSON, `event: end` at the run's end), or a WebSocket when the request asks for an upgrade", content_type = "text/event-stream", body = Log), (status = "4XX", description = "Refused: `{\"error\": \"...\"}`", body = ErrorBody), (status = "5XX", description = "Failed", body = ErrorBody)))]
async fn run_stream(
    State(s): State<AppState>,
    Path(runid): Path<String>,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match s.streams.acquire(client_ip(info)) {
        Ok(slot) => stream(s, runid, None, ws, slot),
        Err(e) => e.into_response(),
    }
}

fn stream(
    s: AppState,
    runid: String,
    driver: Option<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    slot: StreamSlot,
) -> Response {
    let filter = LogFilter {
        run_id: Some(runid),
        driver,
        pipeline: None,
        after_seq: None,
        limit: None,
    };
    let lines = follow(s.logs.clone(), s.store.clone(), filter);
    match ws {
        // A log stream only sends; what a client sends is a close or a ping. tungstenite's
        // defaults (a 128 KiB read buffer and as much write buffering per socket) made 2,000
        // idle streams cost 256 MiB; these keep an open stream to a few KiB.
        Ok(ws) => ws
            .read_buffer_size(WS_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(WS_MAX_WRITE)
            .max_message_size(WS_MAX_INCOMING)
            .max_frame_size(WS_MAX_INCOMING)
            .on_upgrade(move |socket| send_ws(socket, lines, slot)),
        // Not an upgrade request: Server-Sent Events.
        Err(_) => {
            let events = ReceiverStream::new(lines).map(move |item| {
                let _ = &slot;
                Ok::<_, Infallible>(match item {
                    Item::Line(l) => {
                        let json = serde_json::to_string(&l.log).unwrap_or_default();
                        Event::default().id(l.seq.to_string()).data(json)
                    }
                    Item::End(end) => Event::default().event("end").data(end_json(&end)),
                })
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

async fn send_ws(mut socket: WebSocket, mut lines: mpsc::Receiver<Item>, _slot: StreamSlot) {
    loop {
        tokio::select! {
            item = lines.recv() => match item {
                None => break,
                Some(Item::Line(line)) => {
                    let json = serde_json::to_string(&line.log).unwrap_or_default();
                    if socket.send(Message::Text(json.into())).await.is_err() {
                        break;
                    }
                }
                Some(Item::End(end)) => {
                    let _ = socket.send(Message::Text(end_json(&end).into())).await;
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: close_code::NORMAL,
                            reason: format!("run {}", end.status.as_str()).into(),
                        })))
                        .await;
                    break;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Stored lines matching `filter`, then live ones, then the end of the run, through a
/// channel that closes when the subscriber goes away or after the end.
fn follow(logs: Arc<LogHub>, store: Arc<Store>, filter: LogFilter) -> mpsc::Receiver<Item> {
    let (tx, rx) = mpsc::channel(256);
    // Both subscriptions are taken before the store is read, so nothing stored or ended in
    // between is missed.
    let mut live = logs.subscribe();
    let mut ended = store.subscribe_ended();
    let run_id = filter.run_id.clone().unwrap_or_default();
    tokio::spawn(async move {
        let mut last = 0;
        if replay(&logs, &filter, &mut last, &tx).await.is_err() {
            return;
        }
        if let Some(end) = final_status(&store, &run_id) {
            let _ = finish(&logs, &filter, &mut last, &tx, end).await;
            return;
        }
        loop {
            tokio::select! {
                next = live.recv() => match next {
                    Ok(line) => {
                        if line.seq > last && matches(&filter, &line.log) {
                            last = line.seq;
                            if tx.send(Item::Line((*line).clone())).await.is_err() {
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
                },
                end = ended.recv() => match end {
                    Ok(end) if end.runid == run_id => {
                        let _ = finish(&logs, &filter, &mut last, &tx, end).await;
                        return;
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(end) = final_status(&store, &run_id) {
                            let _ = finish(&logs, &filter, &mut last, &tx, end).await;
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

/// The run's end, if it is over.
fn final_status(store: &Store, run_id: &str) -> Option<RunEnded> {
    match store.run_status(run_id) {
        Ok(status) => status.filter(|s| s.status.is_final()),
        Err(e) => {
            tracing::error!(error = %e, "could not read a run's status for a log stream");
            None
        }
    }
}

/// Sends what is left of the run's lines, then its end.
async fn finish(
    logs: &LogHub,
    filter: &LogFilter,
    last: &mut i64,
    tx: &mpsc::Sender<Item>,
    end: RunEnded,
) -> Result<(), ()> {
    replay(logs, filter, last, tx).await?;
    tx.send(Item::End(end)).await.map_err(drop)
}

/// Lines a stream reads from the store at a time, so a long run's replay holds one page.
const REPLAY_PAGE: u32 = 1_000;
/// A WebSocket stream's read buffer.
const WS_BUFFER: usize = 4 << 10;
/// The most a WebSocket stream buffers for a slow client before the stream ends: a few of the
/// largest lines a run can log.
const WS_MAX_WRITE: usize = 4 << 20;
/// The largest message or frame a client may send on a log stream.
const WS_MAX_INCOMING: usize = 64 << 10;

/// Sends the stored lines after `last`, a page at a time; `Err` when the subscriber is gone.
async fn replay(
    logs: &LogHub,
    filter: &LogFilter,
    last: &mut i64,
    tx: &mpsc::Sender<Item>,
) -> Result<(), ()> {
    loop {
        let page = LogFilter {
            after_seq: Some(*last),
            limit: Some(REPLAY_PAGE),
            ..filter.clone()
        };
        let lines = match logs.query(&page) {
            Ok(lines) => lines,
            Err(e) => {
                tracing::error!(error = %e, "could not read logs for a stream");
                return Err(());
            }
        };
        let full = lines.len() == REPLAY_PAGE as usize;
        for line in lines {
            *last = line.seq;
            tx.send(Item::Line(line)).await.map_err(drop)?;
        }
        if !full {
            return Ok(());
        }
    }
}

fn matches(filter: &LogFilter, log: &Log) -> bool {
    filter.run_id.as_ref().is_none_or(|r| *r == log.runid)
        && filter.driver.as_ref().is_none_or(|d| *d == log.driver)
        && filter.pipeline.as_ref().is_none_or(|p| *p == log.pipeline)
}
