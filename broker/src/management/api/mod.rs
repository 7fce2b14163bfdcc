//! The `/api` routes and their JSON, in the shapes of RabbitMQ's management API (field names
//! as RabbitMQ 3.10 returns them; fields we have no data for are left out, not invented).
//! Every handler takes the [`Caller`] and shows or does only what its tags allow (the rules
//! are in `caller`); the administrator-only routes are checked once, by a middleware
//! (`administrator_routes`).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};

/// The caller, as the authentication middleware put it in the request.
type Me = Extension<Caller>;
use serde::Deserialize;
use serde_json::{json, Value};

use super::caller::find_queue;
use super::field_table;
use super::node::{CLUSTER_NAME, NODE_NAME};
use super::rates::RateQuery;
use super::shapes::{bindings_of, exchange_json};
use super::{put_status, ApiError, Caller, Ctx};
use crate::access::{Access, UserInfo};
use crate::connection_registry::ConnectionInfo;
use crate::metrics::VHostCounters;
use crate::vhost::VHost;

mod access;
mod connections;
mod exchanges;
mod queues;

use access::*;
use connections::*;
use exchanges::*;
use queues::*;

type ApiResult = Result<Json<Value>, ApiError>;
type Done = Result<StatusCode, ApiError>;

/// The `/api` router (authentication is layered on by the caller).
pub(super) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/whoami", get(whoami))
        .route("/api/vhosts", get(vhosts))
        .merge(administrator_routes())
        .route("/api/queues", get(queues))
        .route("/api/queues/{vhost}", get(queues))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queue)
                .put(super::topology::put_queue)
                .delete(delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(purge_queue),
        )
        .route("/api/exchanges", get(exchanges))
        .route("/api/exchanges/{vhost}", get(exchanges))
        .route("/api/bindings", get(bindings))
        .route("/api/bindings/{vhost}", get(bindings))
        .route("/api/connections", get(connections))
        .route(
            "/api/connections/{name}",
            axum::routing::delete(close_connection),
        )
        .route("/api/consumers", get(consumers))
        .route("/api/channels", get(channels))
        .route("/api/vhosts/{vhost}/channels", get(vhost_channels))
        .route("/api/connections/{name}/channels", get(connection_channels))
}

/// The routes for administrators only: users, permissions and vhost administration (as
/// RabbitMQ 3.10; other callers read `/api/vhosts`).
fn administrator_routes() -> Router<Ctx> {
    Router::new()
        .route(
            "/api/vhosts/{vhost}",
            get(vhost).put(put_vhost).delete(delete_vhost),
        )
        .route("/api/vhosts/{vhost}/permissions", get(vhost_permissions))
        .route("/api/users", get(users))
        .route(
            "/api/users/{user}",
            get(user).put(put_user).delete(delete_user),
        )
        .route("/api/users/{user}/permissions", get(user_permissions))
        .route("/api/permissions", get(permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .route_layer(axum::middleware::from_fn(administrators_only))
}

/// The vhosts a list endpoint covers: `only` (which the caller must be allowed to enter), or
/// every vhost the caller enters.
fn vhosts_of(ctx: &Ctx, me: &Caller, only: Option<&str>) -> Result<Vec<Arc<VHost>>, ApiError> {
    match only {
        Some(v) => Ok(vec![me.enter(ctx, v)?]),
        None => Ok(me.entered_vhosts(ctx)),
    }
}

/// Totals: over every vhost, connection and channel for monitoring and administrator; over
/// the caller's vhosts and its own connections and channels for the others, who are given no
/// consumer total (as RabbitMQ 3.10).
async fn overview(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Query(rq): Query<RateQuery>,
) -> ApiResult {
    let mut counters = VHostCounters::default();
    let (mut ready, mut unacked, mut queues, mut exchanges, mut consumers) =
        (0u64, 0u64, 0, 0, 0u64);
    let listed = me.listed_vhosts(&ctx);
    for vh in &listed {
        counters += vh.stats.counters();
        let qs: Vec<_> = {
            let topo = vh.read();
            exchanges += topo.exchanges.len();
            topo.queues.values().cloned().collect()
        };
        queues += qs.len();
        for q in qs {
            let f = q.figures();
            ready += f.ready;
            consumers += f.consumers;
            unacked += f.unacked;
        }
    }
    let names: Vec<String> = listed.iter().map(|v| v.name.clone()).collect();
    let (message_stats, lengths) = ctx.rates.vhosts_json(&names, &counters, &rq);
    let mut queue_totals = json!({
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    });
    if let Value::Object(map) = &mut queue_totals {
        map.extend(lengths);
    }
    let mut object_totals = json!({ "exchanges": exchanges, "queues": queues });
    if me.sees_everyone() {
        object_totals["connections"] = json!(ctx.broker.connections.count());
        object_totals["channels"] = json!(ctx.broker.channels.count());
        object_totals["consumers"] = json!(consumers);
    } else {
        let own: std::collections::HashSet<u64> = visible_connections(&ctx, &me)
            .iter()
            .map(|c| c.id)
            .collect();
        let channels = ctx
            .broker
            .channels
            .list()
            .iter()
            .filter(|ch| own.contains(&ch.connection_id))
            .count();
        object_totals["connections"] = json!(own.len());
        object_totals["channels"] = json!(channels);
    }
    let exchange_types: Vec<Value> = ["direct", "fanout", "headers", "topic"]
        .iter()
        .map(|t| {
            json!({
                "name": t,
                "description": format!("AMQP {t} exchange, as per the AMQP specification"),
                "enabled": true,
            })
        })
        .collect();
    let mut out = json!({
        "management_version": env!("CARGO_PKG_VERSION"),
        "rates_mode": "basic",
        "product_name": "Lepus",
        "product_version": env!("CARGO_PKG_VERSION"),
        "node": NODE_NAME,
        "cluster_name": CLUSTER_NAME,
        "exchange_types": exchange_types,
        "message_stats": message_stats,
        "queue_totals": queue_totals,
        "object_totals": object_totals,
        "listeners": super::health::listeners_json(&ctx),
    });
    if me.sees_everyone() {
        // Connection and channel churn is broker-wide: RabbitMQ shows it to everyone, Lepus
        // only to those who see every connection.
        let (churn, _) = ctx.rates.node_json(&rq);
        out["churn_rates"] = churn;
    }
    Ok(Json(out))
}
