//! The management HTTP API: the subset of RabbitMQ's management plugin API that `lepusctl`
//! and dashboards use (`/api/overview`, `/api/queues`, `/api/exchanges`, `/api/bindings`,
//! `/api/connections`, `/api/channels`, `/api/consumers`, `/api/users`, `/api/vhosts`,
//! `/api/permissions`, and their write endpoints), with RabbitMQ's JSON shapes, plus
//! Prometheus text at `/metrics` and `/metrics/per-object`.
//!
//! Authentication is HTTP basic auth against the broker's own users (with `loopback_users`
//! applied to the HTTP peer, as RabbitMQ does) on every `/api` route and on
//! `/metrics/per-object`; `caller` says what each user tag may see and do (RabbitMQ's rules).
//! `/metrics` needs no login, like `rabbitmq_prometheus`, and so carries totals only, no
//! object names (see `prometheus`). `listener` bounds what any one HTTP client can hold.
//!
//! Task ownership: [`start`] spawns the listener task ([`listener::serve`]), which owns one
//! task per HTTP connection; [`crate::BrokerHandle`] owns its `JoinHandle` and stops it
//! through the broker's shutdown signal (graceful: in-flight requests finish, within a grace
//! period).

mod api;
mod caller;
mod listener;
mod prometheus;

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
    let ctx = Ctx { broker };
    let app = api::routes()
        .merge(prometheus::authenticated_routes())
        .route_layer(middleware::from_fn_with_state(ctx.clone(), authenticate))
        .merge(prometheus::routes())
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            request_timeout,
        ))
        .with_state(ctx);
    let task = tokio::spawn(listener::serve(listener, app, limits, shutdown));
    info!(%local, "management API listening");
    Ok((local, task))
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
    let Some((user, password)) = creds.as_deref().and_then(|c| c.split_once(':')) else {
        return ApiError::unauthorized("credentials required").into_response();
    };
    let Some(user) = ctx.broker.access.authenticate(user, password, peer.ip()) else {
        return ApiError::unauthorized("Login failed").into_response();
    };
    let Some(level) = Level::of(&user) else {
        return ApiError::forbidden("Not management user").into_response();
    };
    req.extensions_mut().insert(Caller { user, level });
    next.run(req).await
}
