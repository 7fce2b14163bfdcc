//! The management API's HTTP/1.1 listener, with bounds on what any one client can hold
//! (`axum::serve` has none: no header timeout, no connection cap, no idle limit).
//!
//! | bound | value | beyond it |
//! |-------|-------|-----------|
//! | open HTTP connections | [`Limits::max_connections`] (256) | a new connection is closed at once |
//! | time to send a request's headers (also an idle keep-alive connection's wait) | [`Limits::header_read_timeout`] (10 s) | the connection is closed |
//! | request line and headers | [`Limits::max_header_bytes`] (16 KiB), 100 headers | 431 and the connection is closed |
//! | request body | [`Limits::max_body_bytes`] (64 KiB) | 413 |
//! | one request, body read and response included | [`Limits::request_timeout`] (15 s) | 408 |
//! | one connection's life | [`Limits::max_connection_age`] (60 s), then a graceful close | after 10 s more the socket is dropped, so a client that stops reading its response cannot hold a connection |
//!
//! JSON bodies are parsed by `serde_json`, whose nesting limit (128) bounds the recursion.
//!
//! Task ownership: [`serve`] runs as the management task ([`crate::BrokerHandle`] owns it) and
//! owns one task per HTTP connection in a `JoinSet`; on the broker's shutdown signal it stops
//! accepting, asks every connection to finish its request in flight, and waits at most
//! [`Limits::shutdown_grace`] for them before dropping the rest.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower_service::Service;
use tracing::debug;

use crate::shutdown::{AcceptLog, Shutdown, ACCEPT_RETRY};
use crate::sockets::SocketBudget;

/// The bounds in the module table.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Most open HTTP connections.
    pub(crate) max_connections: usize,
    /// Time a client has to send a request's headers, counted from when the connection
    /// starts waiting for them (so it also ends an idle keep-alive connection).
    pub(crate) header_read_timeout: Duration,
    /// Largest request line plus headers.
    pub(crate) max_header_bytes: usize,
    /// Largest request body.
    pub(crate) max_body_bytes: usize,
    /// Longest a request may take, from its handler's start to its response.
    pub(crate) request_timeout: Duration,
    /// After this a connection is closed gracefully (after its request in flight).
    pub(crate) max_connection_age: Duration,
    /// How long a connection asked to close may still take before it is dropped.
    pub(crate) shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(15),
            max_connection_age: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` fires. Each connection also
/// holds a place in the broker's `sockets` budget, shared with the AMQP listeners.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    sockets: SocketBudget,
    mut shutdown: Shutdown,
) {
    // One permit per open connection; a connection task holds its permit until it ends.
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Dropping the sender (when this function returns) or sending asks every connection to
    // close gracefully; each connection task holds a receiver.
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut log = AcceptLog::new("management");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    log.accepted();
                    accepted
                }
                Err(err) => {
                    // Out of file descriptors, most likely: let some connections end.
                    log.failed(&err);
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%peer, "management API connection refused: too many open");
            drop(stream);
            continue;
        };
        let Some(place) = sockets.try_take() else {
            log.refused(sockets.limit());
            drop(stream);
            continue;
        };
        let app = app.clone();
        let limits = limits.clone();
        let closing = closing_rx.clone();
        connections.spawn(async move {
            let _permit = (permit, place);
            serve_connection(stream, peer, app, &limits, closing).await;
        });
    }
    let _ = closing.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

/// Serves one connection until the client closes it, a bound ends it, or the server closes.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: &Limits,
    mut closing: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { Ok::<_, Infallible>(app.call(req).await.unwrap_or_else(|e| match e {})) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let age = tokio::time::sleep(limits.max_connection_age);
    tokio::pin!(age);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(err) = res {
                debug!(%peer, cause = %err, "management API connection ended");
            }
            return;
        }
        _ = &mut age => {}
        _ = closing.wait_for(|closing| *closing) => {}
    }
    conn.as_mut().graceful_shutdown();
    if tokio::time::timeout(limits.shutdown_grace, conn)
        .await
        .is_err()
    {
        debug!(%peer, "management API connection dropped after the grace period");
    }
}
