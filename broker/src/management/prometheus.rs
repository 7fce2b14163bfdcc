//! The Prometheus endpoints, in text exposition format 0.0.4, as `rabbitmq_prometheus` serves
//! them (the families are in `rabbitmq_metrics`):
//!
//! - `GET /metrics`, no login: the aggregated shape, totals only, **no object names**, so no
//!   vhost or queue name leaves the broker unauthenticated (RabbitMQ's default). With
//!   `--prometheus-per-object` (RabbitMQ's `prometheus.return_per_object_metrics`) it is the
//!   per-object shape instead, still without a login, as there.
//! - `GET /metrics/per-object`: the per-object shape (per queue, per channel).
//! - `GET /metrics/detailed?family=...&vhost=...`: only the families asked for
//!   (`queue_coarse_metrics`, `queue_consumer_count`, `queue_metrics`,
//!   `connection_churn_metrics`, `vhost_status`), per object, `rabbitmq_detailed_*`.
//!
//! Departure from RabbitMQ: the last two name vhosts and queues, so they need basic auth by a
//! user tagged `monitoring` or `administrator` (the users who may see every vhost's totals);
//! RabbitMQ serves them to anyone who reaches the port. A Prometheus scrape config gives the
//! credentials with `basic_auth`.

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::rabbitmq_metrics::{self, Shape};
use super::{ApiError, Caller, Ctx};

/// `/metrics` (no authentication, like `rabbitmq_prometheus`).
pub(super) fn routes() -> Router<Ctx> {
    Router::new().route("/metrics", get(metrics))
}

/// `/metrics/per-object` and `/metrics/detailed` (behind the API's authentication layer).
pub(super) fn authenticated_routes() -> Router<Ctx> {
    Router::new()
        .route("/metrics/per-object", get(per_object))
        .route("/metrics/detailed", get(detailed))
}

fn text(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    let shape = if ctx.broker.config.prometheus_per_object {
        Shape::PerObject
    } else {
        Shape::Aggregated
    };
    text(rabbitmq_metrics::render(&ctx, &shape))
}

async fn per_object(State(ctx): State<Ctx>, Extension(me): Extension<Caller>) -> Response {
    if let Err(refused) = me.require_monitor() {
        return refused.into_response();
    }
    text(rabbitmq_metrics::render(&ctx, &Shape::PerObject))
}

/// Most `family` and `vhost` parameters one request may give.
const MAX_PARAMETERS: usize = 64;

async fn detailed(
    State(ctx): State<Ctx>,
    Extension(me): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(refused) = me.require_monitor() {
        return refused.into_response();
    }
    let pairs: Vec<(String, String)> =
        match serde_urlencoded::from_str(query.as_deref().unwrap_or("")) {
            Ok(pairs) => pairs,
            Err(e) => return ApiError::bad_request(format!("bad query: {e}")).into_response(),
        };
    if pairs.len() > MAX_PARAMETERS {
        return ApiError::bad_request("too many query parameters").into_response();
    }
    let pick = |key: &str| -> Vec<String> {
        pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let shape = Shape::Detailed {
        families: pick("family"),
        vhosts: pick("vhost"),
    };
    text(rabbitmq_metrics::render(&ctx, &shape))
}
