//! The HTTP server: an accept loop over hyper's HTTP/1 connections with the limits a network
//! needs. Connections are capped in total and per client address; when a cap is reached the
//! oldest idle connection (one with no request in flight) makes room, so a flood of idle
//! connections cannot lock out a real client, and a new connection is refused only when
//! every held one is busy. Request headers must arrive within `header_timeout`, and a
//! connection with no request in flight is closed after `idle_timeout`. A streaming response
//! (SSE) keeps its connection busy for as long as it streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use futures::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a connection asked to close gets to finish what it is doing.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The server's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections held at once.
    pub max_connections: usize,
    /// Connections held at once from one client address.
    pub max_connections_per_client: usize,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// How long a connection with no request in flight is kept.
    pub idle_timeout: Duration,
}

/// One held connection.
struct Conn {
    ip: IpAddr,
    accepted: Instant,
    /// Requests (and streaming responses) in flight.
    busy: AtomicUsize,
    /// Milliseconds since `accepted` when it last became idle.
    idle_since_ms: AtomicU64,
    /// Wakes the connection's task to look at `busy` again.
    changed: Notify,
    /// Asks the connection to close.
    close: CancellationToken,
}

impl Conn {
    fn idle_for(&self) -> Option<Duration> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.accepted.elapsed().saturating_sub(since))
    }
}

/// Marks its connection busy until dropped.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: &Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        conn.changed.notify_one();
        Busy(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let c = &self.0;
        let ms = u64::try_from(c.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        c.idle_since_ms.store(ms, Ordering::Release);
        c.busy.fetch_sub(1, Ordering::AcqRel);
        c.changed.notify_one();
    }
}

#[derive(Default)]
struct Held {
    next: u64,
    conns: HashMap<u64, Arc<Conn>>,
}

impl Held {
    /// Makes room for a connection from `ip`: `false` when every connection that would have
    /// to go is busy.
    fn admit(&mut self, ip: IpAddr, limits: &Limits) -> bool {
        let from_ip = self.conns.values().filter(|c| c.ip == ip).count();
        if from_ip >= limits.max_connections_per_client && !self.evict_idle(|c| c.ip == ip) {
            return false;
        }
        if self.conns.len() >= limits.max_connections && !self.evict_idle(|_| true) {
            return false;
        }
        true
    }

    /// Asks the connection idle the longest among those `which` selects to close, and forgets
    /// it so its slot is free at once.
    fn evict_idle(&mut self, which: impl Fn(&Conn) -> bool) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| which(c) && !c.close.is_cancelled())
            .filter_map(|(id, c)| c.idle_for().map(|idle| (idle, *id)))
            .max();
        match victim.and_then(|(_, id)| self.conns.remove(&id)) {
            Some(c) => {
                c.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown`; then asks
/// every connection to close.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let held = Arc::new(Mutex::new(Held::default()));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: keep serving the connections held.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        while tasks.try_join_next().is_some() {}
        let conn = {
            let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
            if !h.admit(peer.ip(), &limits) {
                tracing::debug!(%peer, "connection refused: every connection slot is busy");
                continue;
            }
            let conn = Arc::new(Conn {
                ip: peer.ip(),
                accepted: Instant::now(),
                busy: AtomicUsize::new(0),
                idle_since_ms: AtomicU64::new(0),
                changed: Notify::new(),
                close: shutdown.child_token(),
            });
            h.next += 1;
            let id = h.next;
            h.conns.insert(id, conn.clone());
            (id, conn)
        };
        let (app, held, limits, tls) = (app.clone(), held.clone(), limits, tls.clone());
        tasks.spawn(async move {
            let (id, conn) = conn;
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve_connection(stream, peer, app, conn, &limits).await,
                Some(tls) => {
                    // The handshake counts as reading the request's headers.
                    match tokio::time::timeout(limits.header_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, peer, app, conn, &limits).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            held.lock()
                .unwrap_or_else(|p| p.into_inner())
                .conns
                .remove(&id);
        });
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    conn: Arc<Conn>,
    limits: &Limits,
) {
    let for_requests = conn.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let (app, conn) = (app.clone(), for_requests.clone());
        async move {
            let busy = Busy::new(&conn);
            req.extensions_mut().insert(ConnectInfo(peer));
            let response = app.oneshot(req.map(Body::new)).await?;
            if response.body().size_hint().exact().is_some() {
                return Ok::<_, Infallible>(response);
            }
            // A streaming body keeps the connection busy until it ends.
            Ok(response.map(|body| {
                Body::from_stream(body.into_data_stream().map(move |chunk| {
                    let _ = &busy;
                    chunk
                }))
            }))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let connection = http
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut closing: Option<Instant> = None;
    loop {
        let idle_left = conn
            .idle_for()
            .map(|idle| limits.idle_timeout.saturating_sub(idle));
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            _ = conn.close.cancelled(), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            _ = tokio::time::sleep(idle_left.unwrap_or(Duration::MAX)), if idle_left.is_some() && closing.is_none() => {
                if conn.idle_for().is_some_and(|idle| idle >= limits.idle_timeout) {
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now());
                }
            }
            _ = conn.changed.notified() => {}
            _ = tokio::time::sleep(CLOSE_GRACE), if closing.is_some() => {
                if closing.is_some_and(|at| at.elapsed() >= CLOSE_GRACE) {
                    return;
                }
            }
        }
    }
}
