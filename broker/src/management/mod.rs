//! The management HTTP API: the subset of RabbitMQ's management plugin API that `lepusctl`
//! and dashboards use (`/api/overview`, `/api/queues`, `/api/exchanges`, `/api/bindings`,
//! `/api/connections`, `/api/channels`, `/api/consumers`, `/api/users`, `/api/vhosts`,
//! `/api/permissions`, and their write endpoints), with RabbitMQ's JSON shapes, plus
//! Prometheus text at `/metrics`.
//!
//! Authentication is HTTP basic auth against the broker's own users (with `loopback_users`
//! applied to the HTTP peer, as RabbitMQ does); reads need the `administrator`,
//! `monitoring` or `management` tag, writes need `administrator`. `/metrics` needs no login,
//! like `rabbitmq_prometheus`.
//!
//! Task ownership: [`start`] spawns one axum server task; [`crate::BrokerHandle`] owns its
//! `JoinHandle` and stops it through the broker's shutdown signal (graceful: in-flight
//! requests finish).

mod api;
mod prometheus;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::access::UserInfo;
use crate::server::BrokerShared;
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
    mut shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let ctx = Ctx { broker };
    let app = api::routes()
        .route_layer(middleware::from_fn_with_state(ctx.clone(), authenticate))
        .merge(prometheus::routes())
        .with_state(ctx);
    let task = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.recv().await })
        .await;
        if let Err(err) = served {
            error!(cause = %err, "management API failed");
        }
    });
    info!(%local, "management API listening");
    Ok((local, task))
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = match self.status {
            StatusCode::NOT_FOUND => "Object Not Found",
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

/// Basic auth and tag check for every `/api` route; the user goes into the request's
/// extensions for handlers that want it (`/api/whoami`).
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
    let Some(info) = ctx.broker.access.authenticate(user, password, peer.ip()) else {
        return ApiError::unauthorized("Login failed").into_response();
    };
    let write = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let allowed = if write {
        info.is_administrator()
    } else {
        info.is_monitoring() || info.tags.iter().any(|t| t == "management")
    };
    if !allowed {
        return ApiError {
            status: StatusCode::FORBIDDEN,
            reason: format!(
                "user '{}' lacks the {} tag",
                info.name,
                if write { "administrator" } else { "monitoring" }
            ),
        }
        .into_response();
    }
    req.extensions_mut().insert::<UserInfo>(info);
    next.run(req).await
}
