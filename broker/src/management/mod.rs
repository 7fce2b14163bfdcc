//! The management HTTP API: RabbitMQ's management plugin API in its JSON shapes (overview,
//! vhosts, users, permissions, queues, exchanges, bindings, connections, channels, consumers,
//! nodes, health checks, definitions, publish and get), the web dashboard over it, and
//! Prometheus text at `/metrics` in RabbitMQ's metric names.
//!
//! # Layout
//! - `api`: the read endpoints and the user, vhost, permission and queue-delete/purge writes.
//! - `topology`: declaring and deleting queues and exchanges, bindings (shared with
//!   definitions import).
//! - `messages`: publishing and getting messages over HTTP.
//! - `definitions`: RabbitMQ's definitions JSON, export and import (`--definitions` too).
//! - `health`: RabbitMQ's health checks, `/api/nodes`, the listener list.
//! - `rates`: the sampler task and its ring buffers: rates over time for `*_details`.
//! - `node`: process and host figures (RSS, file descriptors, free disk).
//! - `field_table`: AMQP field tables to and from JSON.
//! - `prometheus` (routes) and `rabbitmq_metrics` (the families): `/metrics`,
//!   `/metrics/per-object`, `/metrics/detailed`.
//! - `dashboard`: the embedded web page (`assets/`).
//! - `caller`: what each user tag may see and do; `listener`: the bounded HTTP listener.
//!
//! Authentication is HTTP basic auth against the broker's own users (with `loopback_users`
//! applied to the HTTP peer, as RabbitMQ does) on every `/api` route and on
//! `/metrics/per-object` and `/metrics/detailed`; `caller` says what each user tag may see and
//! do (RabbitMQ's rules). `/metrics` and the dashboard's files need no login (`/metrics`
//! carries totals only, no object names). `listener` bounds what any one HTTP client can hold.
//!
//! Task ownership: [`start`] spawns the listener task ([`listener::serve`]), which owns one
//! task per HTTP connection, and the rate sampler (`rates::run`), which the listener task
//! awaits when it ends; [`crate::BrokerHandle`] owns the listener task's `JoinHandle` and
//! stops both through the broker's shutdown signal (graceful: in-flight requests finish,
//! within a grace period).

mod api;
mod caller;
mod dashboard;
mod definitions;
mod field_table;
mod health;
mod listener;
mod messages;
mod node;
mod prometheus;
mod rabbitmq_metrics;
mod rates;
mod shapes;
mod topology;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::info;

pub(crate) use caller::{Caller, Level};

use crate::broker_state::BrokerShared;
use crate::shutdown::Shutdown;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// The broker's state (vhosts, users, connections).
    pub(crate) broker: Arc<BrokerShared>,
    /// The rate history the sampler task fills (see `rates`).
    pub(crate) rates: Arc<rates::Rates>,
    /// When the management API started (with the broker): uptime.
    pub(crate) started: std::time::Instant,
}

/// Binds `addr` and serves the API until the broker stops.
pub(crate) async fn start(
    addr: &str,
    broker: Arc<BrokerShared>,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let limits = listener::Limits::default();
    let sockets = broker.sockets.clone();
    let ctx = Ctx {
        broker,
        rates: Arc::default(),
        started: std::time::Instant::now(),
    };
    let sampler = tokio::spawn(rates::run(ctx.clone(), shutdown.clone()));
    let app = api::routes()
        .merge(health::routes())
        .merge(topology::routes())
        .merge(messages::routes())
        .merge(definitions::routes())
        .merge(prometheus::authenticated_routes())
        .route_layer(middleware::from_fn_with_state(ctx.clone(), authenticate))
        .merge(prometheus::routes())
        .merge(dashboard::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            request_timeout,
        ))
        .with_state(ctx);
    // The management task owns the sampler: both stop on the shutdown signal.
    let task = tokio::spawn(async move {
        listener::serve(listener, app, limits, sockets, shutdown).await;
        let _ = sampler.await;
    });
    info!(%local, "management API listening");
    Ok((local, task))
}

/// Percent-encodes one URL path segment (everything but RFC 3986's unreserved characters), as
/// the management API's paths take vhost, queue and user names: `percent_encode("/")` is `%2F`.
/// Shared with `lepusctl` and the tests that call the API.
///
/// ```
/// assert_eq!(lepus_broker::percent_encode("/"), "%2F");
/// assert_eq!(lepus_broker::percent_encode("a b.c_d-e~%"), "a%20b.c_d-e~%25");
/// ```
pub fn percent_encode(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Any other path: RabbitMQ's 404 body.
async fn not_found() -> Response {
    ApiError::not_found("Not Found").into_response()
}

/// Answers 408 when a request (its body read included) takes longer than `limit`.
async fn request_timeout(
    State(limit): State<std::time::Duration>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            reason: "request took too long".to_owned(),
        }
        .into_response(),
    }
}

/// The status of a successful PUT, as RabbitMQ answers it: 201 when it created the object,
/// 204 when the object was already there.
pub(crate) fn put_status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
}

/// An API error in RabbitMQ's shape: `{"error": "...", "reason": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    /// 400 Bad Request.
    pub(crate) fn bad_request(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
        }
    }

    /// 404 Not Found.
    pub(crate) fn not_found(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            reason: reason.into(),
        }
    }

    /// 403 Forbidden: authenticated, but not allowed.
    pub(crate) fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
        }
    }

    fn unauthorized(reason: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            reason: reason.to_owned(),
        }
    }

    /// 415 Unsupported Media Type.
    pub(crate) fn unsupported_media_type(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reason: reason.into(),
        }
    }

    /// 500 Internal Server Error (the store failed).
    pub(crate) fn internal(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.status)
    }
}

/// Imports the definitions file at `path` into a starting broker (`--definitions`).
pub(crate) async fn import_definitions_file(
    broker: &Arc<BrokerShared>,
    path: &std::path::Path,
) -> Result<(), String> {
    let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
    let defs = definitions::parse(&bytes)?;
    let skipped = definitions::import(broker, defs, None)
        .await
        .map_err(|e| e.to_string())?;
    info!(path = %path.display(), skipped = ?skipped.sections, "definitions imported");
    Ok(())
}

/// Runs `work` on tokio's blocking pool and waits for it without blocking: for the
/// synchronous admin operations (each saves `access.json` with an fsync; deleting a vhost also
/// waits for the store's commit). Run inline in a handler, they would park a tokio worker for
/// that long, and with it every AMQP connection scheduled on that worker. A panic in `work`
/// goes on in the caller, as if `work` had run inline.
pub(crate) async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only when the runtime is shutting down.
            Err(_) => Err(ApiError::internal("the broker is shutting down")),
        },
    }
}

impl From<crate::error::AdminError> for ApiError {
    fn from(e: crate::error::AdminError) -> Self {
        let status = if e.is_not_found() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        Self {
            status,
            reason: e.to_string(),
        }
    }
}

/// A body the JSON extractor refused: its status (413 over the body limit, 400 or 422 for
/// bad JSON, 415 without the JSON content type), in RabbitMQ's error shape.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        Self {
            status: e.status(),
            reason: e.body_text(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = match self.status {
            StatusCode::NOT_FOUND => "Object Not Found",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::UNAUTHORIZED => "not_authorised",
            StatusCode::FORBIDDEN => "not_authorised",
            _ => "bad_request",
        };
        let body = Json(serde_json::json!({ "error": error, "reason": self.reason }));
        let mut resp = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"Lepus Management\""),
            );
        }
        resp
    }
}

/// Basic auth for every `/api` route and `/metrics/per-object`: the user must exist, give
/// the right password (compared in constant time, see `access::password`) and hold a tag
/// that opens the management API. The [`Caller`] goes into the request's extensions; each
/// handler applies the finer rules.
async fn authenticate(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let creds = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    // The dashboard's own requests (`X-Requested-With: XMLHttpRequest`) get no Basic
    // challenge back, so that a wrong password shows its login form, not the browser's.
    let challenge = req
        .headers()
        .get("x-requested-with")
        .is_none_or(|v| !v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    let refuse = |reason: &str| {
        let mut resp = ApiError::unauthorized(reason).into_response();
        if !challenge {
            resp.headers_mut().remove(header::WWW_AUTHENTICATE);
        }
        resp
    };
    let Some((user, password)) = creds.as_deref().and_then(|c| c.split_once(':')) else {
        return refuse("credentials required");
    };
    let Some(user) = ctx.broker.access.authenticate(user, password, peer.ip()) else {
        return refuse("Login failed");
    };
    let Some(level) = Level::of(&user) else {
        return ApiError::forbidden("Not management user").into_response();
    };
    req.extensions_mut().insert(Caller { user, level });
    next.run(req).await
}
