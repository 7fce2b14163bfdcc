//! The `/api` routes and their JSON, in the shapes of RabbitMQ's management API (field names
//! as RabbitMQ 3.10 returns them; fields we have no data for are left out, not invented).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, Ctx};
use crate::access::UserInfo;
use crate::exchange::Destination;
use crate::vhost::VHost;

type ApiResult = Result<Json<Value>, ApiError>;
type Done = Result<StatusCode, ApiError>;

/// The `/api` router (authentication is layered on by the caller).
pub(super) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/whoami", get(whoami))
        .route("/api/vhosts", get(vhosts))
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
        .route("/api/queues", get(queues))
        .route("/api/queues/{vhost}", get(queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queue).delete(delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(purge_queue),
        )
        .route("/api/exchanges", get(exchanges))
        .route("/api/exchanges/{vhost}", get(exchanges_in))
        .route("/api/bindings", get(bindings))
        .route("/api/bindings/{vhost}", get(bindings_in))
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

fn vhosts_of(ctx: &Ctx, only: Option<&str>) -> Result<Vec<Arc<VHost>>, ApiError> {
    let names = match only {
        Some(v) => {
            if !ctx.broker.access.vhost_exists(v) {
                return Err(ApiError::not_found(format!("vhost '{v}' does not exist")));
            }
            vec![v.to_owned()]
        }
        None => ctx.broker.access.vhosts(),
    };
    Ok(names
        .iter()
        .filter_map(|n| ctx.broker.vhosts.get(n))
        .collect())
}

fn queue_json(vhost: &VHost, q: &crate::queue::Queue) -> Value {
    let (ready, consumers) = q.counts();
    let unacked = q.unacked_by_consumers();
    json!({
        "name": q.name,
        "vhost": vhost.name,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive_owner.is_some(),
        "arguments": {},
        "messages": u64::from(ready) + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "consumers": consumers,
        "state": "running",
        "type": "classic",
        "node": "lepus@localhost",
    })
}

fn all_queues(ctx: &Ctx, only: Option<&str>) -> ApiResult {
    let mut out = Vec::new();
    for vh in vhosts_of(ctx, only)? {
        let mut qs: Vec<_> = vh.read().queues.values().cloned().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(qs.iter().map(|q| queue_json(&vh, q)));
    }
    Ok(Json(Value::Array(out)))
}

async fn queues(State(ctx): State<Ctx>) -> ApiResult {
    all_queues(&ctx, None)
}

async fn queues_in(State(ctx): State<Ctx>, Path(vhost): Path<String>) -> ApiResult {
    all_queues(&ctx, Some(&vhost))
}

fn find_queue(
    ctx: &Ctx,
    vhost: &str,
    name: &str,
) -> Result<(Arc<VHost>, Arc<crate::queue::Queue>), ApiError> {
    let vh = vhosts_of(ctx, Some(vhost))?
        .pop()
        .ok_or_else(|| ApiError::not_found(format!("vhost '{vhost}' does not exist")))?;
    let q = vh
        .queue(name)
        .ok_or_else(|| ApiError::not_found(format!("no queue '{name}' in vhost '{vhost}'")))?;
    Ok((vh, q))
}

async fn queue(State(ctx): State<Ctx>, Path((vhost, name)): Path<(String, String)>) -> ApiResult {
    let (vh, q) = find_queue(&ctx, &vhost, &name)?;
    Ok(Json(queue_json(&vh, &q)))
}

async fn delete_queue(State(ctx): State<Ctx>, Path((vhost, name)): Path<(String, String)>) -> Done {
    let (vh, _) = find_queue(&ctx, &vhost, &name)?;
    // As `queue.delete-ok`: 204 once the deletion is durable.
    if let Some((_, Some(commit))) = vh.delete_queue_now(&name) {
        commit.await.map_err(not_durable)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn purge_queue(State(ctx): State<Ctx>, Path((vhost, name)): Path<(String, String)>) -> Done {
    let (vh, q) = find_queue(&ctx, &vhost, &name)?;
    // As `purge-ok`: 204 once the purged messages' removals are durable.
    if q.purge() > 0 && q.is_persisted() {
        if let Some(commit) = vh.store.barrier() {
            commit.await.map_err(not_durable)?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A change the store could not make durable: 500.
fn not_durable(err: crate::store::StoreError) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        reason: format!("cannot make the change durable: {err}"),
    }
}

fn all_exchanges(ctx: &Ctx, only: Option<&str>) -> ApiResult {
    let mut out = Vec::new();
    for vh in vhosts_of(ctx, only)? {
        let topo = vh.read();
        let mut xs: Vec<_> = topo.exchanges.values().collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        for x in xs {
            let mut arguments = serde_json::Map::new();
            if let Some(ae) = &x.alternate {
                arguments.insert("alternate-exchange".into(), json!(ae));
            }
            out.push(json!({
                "name": x.name,
                "vhost": vh.name,
                "type": x.kind.name(),
                "durable": x.durable,
                "auto_delete": x.auto_delete,
                "internal": x.internal,
                "arguments": arguments,
            }));
        }
    }
    Ok(Json(Value::Array(out)))
}

async fn exchanges(State(ctx): State<Ctx>) -> ApiResult {
    all_exchanges(&ctx, None)
}

async fn exchanges_in(State(ctx): State<Ctx>, Path(vhost): Path<String>) -> ApiResult {
    all_exchanges(&ctx, Some(&vhost))
}

fn all_bindings(ctx: &Ctx, only: Option<&str>) -> ApiResult {
    let mut out = Vec::new();
    for vh in vhosts_of(ctx, only)? {
        let topo = vh.read();
        // The default exchange's implicit binding of every queue, as RabbitMQ lists it.
        let mut names: Vec<_> = topo.queues.keys().cloned().collect();
        names.sort();
        for q in names {
            out.push(json!({
                "source": "", "vhost": vh.name, "destination": q,
                "destination_type": "queue", "routing_key": q, "arguments": {},
                "properties_key": q,
            }));
        }
        let mut xs: Vec<_> = topo.exchanges.values().collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        for x in xs {
            for b in &x.bindings {
                let (dest, kind) = match &b.destination {
                    Destination::Queue(q) => (q.clone(), "queue"),
                    Destination::Exchange(e) => (e.clone(), "exchange"),
                };
                out.push(json!({
                    "source": x.name, "vhost": vh.name, "destination": dest,
                    "destination_type": kind, "routing_key": b.routing_key, "arguments": {},
                    "properties_key": if b.routing_key.is_empty() { "~".to_owned() } else { b.routing_key.clone() },
                }));
            }
        }
    }
    Ok(Json(Value::Array(out)))
}

async fn bindings(State(ctx): State<Ctx>) -> ApiResult {
    all_bindings(&ctx, None)
}

async fn bindings_in(State(ctx): State<Ctx>, Path(vhost): Path<String>) -> ApiResult {
    all_bindings(&ctx, Some(&vhost))
}

async fn connections(State(ctx): State<Ctx>) -> ApiResult {
    let out = ctx
        .broker
        .connections
        .list()
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name(),
                "user": c.user,
                "vhost": c.vhost,
                "peer_host": c.peer.ip().to_string(),
                "peer_port": c.peer.port(),
                "host": c.local.map(|l| l.ip().to_string()),
                "port": c.local.map(|l| l.port()),
                "connected_at": c.connected_at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
                "state": "running",
                "protocol": "AMQP 0-9-1",
                "node": "lepus@localhost",
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

async fn close_connection(State(ctx): State<Ctx>, Path(name): Path<String>) -> Done {
    if ctx
        .broker
        .connections
        .close(&name, "Closed via management plugin")
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no connection '{name}'")))
    }
}

/// Open channels as RabbitMQ 3.10 lists them, those of connections `keep` accepts.
/// `messages_unconfirmed` and `messages_uncommitted` are left out (only the connection task
/// knows them).
fn all_channels(
    ctx: &Ctx,
    keep: impl Fn(&crate::connection_registry::ConnectionInfo) -> bool,
) -> Vec<Value> {
    let conns: std::collections::HashMap<u64, crate::connection_registry::ConnectionInfo> = ctx
        .broker
        .connections
        .list()
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    let mut out = Vec::new();
    for ch in ctx.broker.channels.list() {
        // A channel opened between the two snapshots, or of a connection still finishing:
        // listed with the next request.
        let Some(conn) = conns.get(&ch.connection_id).filter(|c| keep(c)) else {
            continue;
        };
        let mode = ch.mode();
        let (uncommitted_messages, uncommitted_acks) = ch.uncommitted();
        out.push(json!({
            "name": format!("{} ({})", conn.name(), ch.id),
            "number": ch.id,
            "connection_details": {
                "name": conn.name(),
                "peer_host": conn.peer.ip().to_string(),
                "peer_port": conn.peer.port(),
            },
            "user": conn.user,
            "vhost": conn.vhost,
            "node": "lepus@localhost",
            "consumer_count": ch.consumers().len(),
            "messages_unacknowledged": ch.unacked_count(),
            "messages_unconfirmed": ch.unconfirmed(),
            "messages_uncommitted": uncommitted_messages,
            "acks_uncommitted": uncommitted_acks,
            "prefetch_count": ch.consumer_prefetch.load(std::sync::atomic::Ordering::Acquire),
            "global_prefetch_count": ch.global_prefetch.load(std::sync::atomic::Ordering::Acquire),
            "confirm": mode == crate::channel::ChannelMode::Confirm,
            "transactional": mode == crate::channel::ChannelMode::Transactional,
            "state": if ch.is_closed() { "closing" } else { "running" },
        }));
    }
    out
}

async fn channels(State(ctx): State<Ctx>) -> ApiResult {
    Ok(Json(Value::Array(all_channels(&ctx, |_| true))))
}

async fn vhost_channels(State(ctx): State<Ctx>, Path(vhost): Path<String>) -> ApiResult {
    vhosts_of(&ctx, Some(&vhost))?;
    Ok(Json(Value::Array(all_channels(&ctx, |c| c.vhost == vhost))))
}

async fn connection_channels(State(ctx): State<Ctx>, Path(name): Path<String>) -> ApiResult {
    if !ctx
        .broker
        .connections
        .list()
        .iter()
        .any(|c| c.name() == name)
    {
        return Err(ApiError::not_found(format!("no connection '{name}'")));
    }
    Ok(Json(Value::Array(all_channels(&ctx, |c| c.name() == name))))
}

async fn consumers(State(ctx): State<Ctx>) -> ApiResult {
    let names: std::collections::HashMap<u64, String> = ctx
        .broker
        .connections
        .list()
        .into_iter()
        .map(|c| (c.id, c.name()))
        .collect();
    let mut out = Vec::new();
    for vh in vhosts_of(&ctx, None)? {
        let mut qs: Vec<_> = vh.read().queues.values().cloned().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        for q in qs {
            for (tag, channel, conn, no_ack, prefetch) in q.consumer_list() {
                out.push(json!({
                    "consumer_tag": tag,
                    "queue": { "name": q.name, "vhost": vh.name },
                    "channel_details": {
                        "number": channel,
                        "connection_name": names.get(&conn).cloned().unwrap_or_default(),
                    },
                    "ack_required": !no_ack,
                    "prefetch_count": prefetch,
                    "exclusive": false,
                    "active": true,
                }));
            }
        }
    }
    Ok(Json(Value::Array(out)))
}

fn user_json(u: &UserInfo) -> Value {
    json!({ "name": u.name, "tags": u.tags, "hashing_algorithm": "rabbit_password_hashing_sha256" })
}

async fn whoami(Extension(me): Extension<UserInfo>) -> ApiResult {
    Ok(Json(json!({ "name": me.name, "tags": me.tags })))
}

async fn users(State(ctx): State<Ctx>) -> ApiResult {
    Ok(Json(Value::Array(
        ctx.broker.access.users().iter().map(user_json).collect(),
    )))
}

async fn user(State(ctx): State<Ctx>, Path(name): Path<String>) -> ApiResult {
    let u = ctx
        .broker
        .access
        .user(&name)
        .ok_or_else(|| ApiError::not_found(format!("user '{name}' does not exist")))?;
    Ok(Json(user_json(&u)))
}

/// `PUT /api/users/{user}` body: `{"password": "...", "tags": "administrator,monitoring"}`
/// (tags also accepted as a list, as RabbitMQ 3.10 accepts both).
#[derive(Debug, Deserialize)]
struct PutUser {
    password: Option<String>,
    #[serde(default)]
    tags: Option<Value>,
}

async fn put_user(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    Json(body): Json<PutUser>,
) -> Done {
    let access = &ctx.broker.access;
    let exists = access.user(&name).is_some();
    let status = match (&body.password, exists) {
        (Some(pw), false) => {
            access.add_user(&name, pw)?;
            StatusCode::CREATED
        }
        (Some(pw), true) => {
            access.change_password(&name, pw)?;
            StatusCode::NO_CONTENT
        }
        (None, true) => StatusCode::NO_CONTENT,
        (None, false) => return Err(ApiError::bad_request("password is required")),
    };
    if let Some(tags) = body.tags {
        let tags: Vec<String> = match tags {
            Value::String(s) => s.split(',').map(|t| t.trim().to_owned()).collect(),
            Value::Array(a) => a
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => return Err(ApiError::bad_request("tags must be a string or a list")),
        };
        access.set_user_tags(&name, &tags)?;
    }
    Ok(status)
}

async fn delete_user(State(ctx): State<Ctx>, Path(name): Path<String>) -> Done {
    ctx.broker.access.delete_user(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn vhosts(State(ctx): State<Ctx>) -> ApiResult {
    let out = vhosts_of(&ctx, None)?
        .iter()
        .map(|vh| {
            let (messages, unacked) = vh.read().queues.values().fold((0u64, 0u64), |acc, q| {
                (acc.0 + u64::from(q.counts().0), acc.1 + q.unacked_by_consumers())
            });
            json!({ "name": vh.name, "messages_ready": messages, "messages_unacknowledged": unacked, "messages": messages + unacked })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

async fn vhost(State(ctx): State<Ctx>, Path(name): Path<String>) -> ApiResult {
    vhosts_of(&ctx, Some(&name))?;
    Ok(Json(json!({ "name": name })))
}

async fn put_vhost(State(ctx): State<Ctx>, Path(name): Path<String>) -> Done {
    if ctx.broker.access.vhost_exists(&name) {
        return Ok(StatusCode::NO_CONTENT);
    }
    crate::admin::Admin::new(ctx.broker.clone()).add_vhost(&name)?;
    Ok(StatusCode::CREATED)
}

async fn delete_vhost(State(ctx): State<Ctx>, Path(name): Path<String>) -> Done {
    crate::admin::Admin::new(ctx.broker.clone()).delete_vhost(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

fn permissions_json(list: Vec<crate::access::PermissionInfo>) -> Value {
    Value::Array(
        list.into_iter()
            .map(|p| {
                json!({ "user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read })
            })
            .collect(),
    )
}

async fn permissions(State(ctx): State<Ctx>) -> ApiResult {
    Ok(Json(permissions_json(
        ctx.broker.access.permissions(None, None),
    )))
}

async fn vhost_permissions(State(ctx): State<Ctx>, Path(vhost): Path<String>) -> ApiResult {
    vhosts_of(&ctx, Some(&vhost))?;
    Ok(Json(permissions_json(
        ctx.broker.access.permissions(Some(&vhost), None),
    )))
}

async fn user_permissions(State(ctx): State<Ctx>, Path(user): Path<String>) -> ApiResult {
    if ctx.broker.access.user(&user).is_none() {
        return Err(ApiError::not_found(format!("user '{user}' does not exist")));
    }
    Ok(Json(permissions_json(
        ctx.broker.access.permissions(None, Some(&user)),
    )))
}

async fn permission(
    State(ctx): State<Ctx>,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    let mut list = ctx.broker.access.permissions(Some(&vhost), Some(&user));
    let p = list
        .pop()
        .ok_or_else(|| ApiError::not_found("no permissions"))?;
    Ok(Json(permissions_json(vec![p])[0].clone()))
}

/// `PUT /api/permissions/{vhost}/{user}` body.
#[derive(Debug, Deserialize)]
struct PutPermission {
    configure: String,
    write: String,
    read: String,
}

async fn put_permission(
    State(ctx): State<Ctx>,
    Path((vhost, user)): Path<(String, String)>,
    Json(p): Json<PutPermission>,
) -> Done {
    let existed = !ctx
        .broker
        .access
        .permissions(Some(&vhost), Some(&user))
        .is_empty();
    ctx.broker
        .access
        .set_permissions(&vhost, &user, &p.configure, &p.write, &p.read)?;
    Ok(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

async fn delete_permission(
    State(ctx): State<Ctx>,
    Path((vhost, user)): Path<(String, String)>,
) -> Done {
    ctx.broker.access.clear_permissions(&vhost, &user)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn overview(State(ctx): State<Ctx>) -> ApiResult {
    let (mut published, mut delivered, mut acked) = (0u64, 0u64, 0u64);
    let (mut ready, mut unacked, mut queues, mut exchanges, mut consumers) =
        (0u64, 0u64, 0, 0, 0u64);
    for vh in vhosts_of(&ctx, None)? {
        let (p, d, a) = vh.stats.snapshot();
        published += p;
        delivered += d;
        acked += a;
        let topo = vh.read();
        exchanges += topo.exchanges.len();
        queues += topo.queues.len();
        for q in topo.queues.values() {
            let (r, c) = q.counts();
            ready += u64::from(r);
            consumers += u64::from(c);
            unacked += q.unacked_by_consumers();
        }
    }
    Ok(Json(json!({
        "management_version": env!("CARGO_PKG_VERSION"),
        "product_name": "Lepus",
        "product_version": env!("CARGO_PKG_VERSION"),
        "node": "lepus@localhost",
        "cluster_name": "lepus",
        "message_stats": { "publish": published, "deliver_get": delivered, "ack": acked },
        "queue_totals": { "messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked },
        "object_totals": {
            "connections": ctx.broker.connections.count(),
            "channels": ctx.broker.channels.count(),
            "exchanges": exchanges,
            "queues": queues,
            "consumers": consumers,
        },
    })))
}
