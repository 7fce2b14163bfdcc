//! The `/api` routes and their JSON, in the shapes of RabbitMQ's management API (field names
//! as RabbitMQ 3.10 returns them; fields we have no data for are left out, not invented).
//! Every handler takes the [`Caller`] and shows or does only what its tags allow (the rules
//! are in `caller`).

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

use super::field_table;
use super::node::{CLUSTER_NAME, NODE_NAME};
use super::rates::RateQuery;
use super::{ApiError, Caller, Ctx};
use crate::access::{Access, UserInfo};
use crate::connection_registry::ConnectionInfo;
use crate::exchange::Destination;
use crate::metrics::VHostCounters;
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
            get(queue)
                .put(super::topology::put_queue)
                .delete(delete_queue),
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

/// The vhosts a list endpoint covers: `only` (which the caller must be allowed to enter), or
/// every vhost the caller enters.
fn vhosts_of(ctx: &Ctx, me: &Caller, only: Option<&str>) -> Result<Vec<Arc<VHost>>, ApiError> {
    match only {
        Some(v) => Ok(vec![me.enter(ctx, v)?]),
        None => Ok(me.entered_vhosts(ctx)),
    }
}

/// A queue in RabbitMQ's shape: its declared arguments, its counts with their rates
/// (`*_details`, from the sampler's history), and its publish and deliver_get counters.
fn queue_json(ctx: &Ctx, vhost: &VHost, q: &Arc<crate::queue::Queue>, rq: &RateQuery) -> Value {
    let f = q.figures();
    let key = (vhost.name.clone(), q.name.clone());
    let (message_stats, lengths) = ctx.rates.queue_json(&key, Arc::as_ptr(q) as usize, &f, rq);
    let mut out = json!({
        "name": q.name,
        "vhost": vhost.name,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive_owner.is_some(),
        "arguments": field_table::to_json(&q.arguments),
        "messages": f.ready + f.unacked,
        "messages_ready": f.ready,
        "messages_unacknowledged": f.unacked,
        "message_bytes_ready": f.ready_bytes,
        "consumers": f.consumers,
        "message_stats": message_stats,
        "state": "running",
        "type": "classic",
        "node": NODE_NAME,
    });
    if let Value::Object(map) = &mut out {
        map.extend(lengths);
    }
    out
}

fn all_queues(ctx: &Ctx, me: &Caller, only: Option<&str>, rq: &RateQuery) -> ApiResult {
    let mut out = Vec::new();
    for vh in vhosts_of(ctx, me, only)? {
        let mut qs: Vec<_> = vh.read().queues.values().cloned().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(qs.iter().map(|q| queue_json(ctx, &vh, q, rq)));
    }
    Ok(Json(Value::Array(out)))
}

async fn queues(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Query(rq): Query<RateQuery>,
) -> ApiResult {
    all_queues(&ctx, &me, None, &rq)
}

async fn queues_in(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path(vhost): Path<String>,
    Query(rq): Query<RateQuery>,
) -> ApiResult {
    all_queues(&ctx, &me, Some(&vhost), &rq)
}

/// Queue `name` of `vhost`, which the caller must be allowed to enter.
pub(super) fn find_queue(
    ctx: &Ctx,
    me: &Caller,
    vhost: &str,
    name: &str,
) -> Result<(Arc<VHost>, Arc<crate::queue::Queue>), ApiError> {
    let vh = me.enter(ctx, vhost)?;
    let q = vh
        .queue(name)
        .ok_or_else(|| ApiError::not_found(format!("no queue '{name}' in vhost '{vhost}'")))?;
    Ok((vh, q))
}

/// One queue, with its consumers (`consumer_details`) as RabbitMQ's queue page shows them.
async fn queue(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
    Query(rq): Query<RateQuery>,
) -> ApiResult {
    let (vh, q) = find_queue(&ctx, &me, &vhost, &name)?;
    let mut out = queue_json(&ctx, &vh, &q, &rq);
    let conns: std::collections::HashMap<u64, ConnectionInfo> = visible_connections(&ctx, &me)
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    let consumers: Vec<Value> = q
        .consumer_list()
        .into_iter()
        .filter_map(|(tag, channel, conn, no_ack, prefetch)| {
            let c = conns.get(&conn)?;
            Some(json!({
                "consumer_tag": tag,
                "queue": { "name": q.name, "vhost": vh.name },
                "channel_details": {
                    "name": format!("{} ({channel})", c.name()),
                    "number": channel,
                    "connection_name": c.name(),
                    "peer_host": c.peer.ip().to_string(),
                    "peer_port": c.peer.port(),
                    "user": c.user,
                    "node": NODE_NAME,
                },
                "ack_required": !no_ack,
                "prefetch_count": prefetch,
                "exclusive": false,
                "active": true,
                "arguments": {},
            }))
        })
        .collect();
    out["consumer_details"] = Value::Array(consumers);
    Ok(Json(out))
}

/// Deleting a queue needs configure permission on it, as `queue.delete` does.
async fn delete_queue(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
) -> Done {
    let (vh, _) = find_queue(&ctx, &me, &vhost, &name)?;
    me.require_queue_access(&ctx, &vhost, Access::Configure, &name)?;
    vh.delete_queue_now(&name);
    Ok(StatusCode::NO_CONTENT)
}

/// Purging a queue needs read permission on it, as `queue.purge` does.
async fn purge_queue(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
) -> Done {
    let (_, q) = find_queue(&ctx, &me, &vhost, &name)?;
    me.require_queue_access(&ctx, &vhost, Access::Read, &name)?;
    q.purge();
    Ok(StatusCode::NO_CONTENT)
}

fn all_exchanges(ctx: &Ctx, me: &Caller, only: Option<&str>) -> ApiResult {
    let mut out = Vec::new();
    for vh in vhosts_of(ctx, me, only)? {
        let topo = vh.read();
        let mut xs: Vec<_> = topo.exchanges.values().collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(xs.into_iter().map(|x| exchange_json(&vh, x)));
    }
    Ok(Json(Value::Array(out)))
}

/// An exchange in RabbitMQ's shape (the default exchange is named `""`, as RabbitMQ lists it).
pub(super) fn exchange_json(vh: &VHost, x: &crate::exchange::Exchange) -> Value {
    json!({
        "name": x.name,
        "vhost": vh.name,
        "type": x.kind.name(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": field_table::to_json(&x.arguments),
    })
}

async fn exchanges(State(ctx): State<Ctx>, Extension(me): Me) -> ApiResult {
    all_exchanges(&ctx, &me, None)
}

async fn exchanges_in(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path(vhost): Path<String>,
) -> ApiResult {
    all_exchanges(&ctx, &me, Some(&vhost))
}

/// The key that names a binding among those between the same source and destination
/// (RabbitMQ's `properties_key`, the last segment of `/api/bindings/.../{props}`): the routing
/// key (`~` when empty), then, when the binding has arguments, `~` and a digest of them.
/// RabbitMQ's digest is another one; clients treat the key as opaque.
pub(super) fn properties_key(
    routing_key: &str,
    arguments: &amq_protocol::types::FieldTable,
) -> String {
    let base = if routing_key.is_empty() {
        "~".to_owned()
    } else {
        routing_key.to_owned()
    };
    if arguments.inner().is_empty() {
        base
    } else {
        let digest = crc32fast::hash(field_table::to_json(arguments).to_string().as_bytes());
        format!("{base}~{digest:08x}")
    }
}

/// One binding in RabbitMQ's shape.
pub(super) fn binding_json(vhost: &str, source: &str, b: &crate::exchange::Binding) -> Value {
    let (dest, kind) = match &b.destination {
        Destination::Queue(q) => (q.as_str(), "queue"),
        Destination::Exchange(e) => (e.as_str(), "exchange"),
    };
    json!({
        "source": source, "vhost": vhost, "destination": dest,
        "destination_type": kind, "routing_key": b.routing_key,
        "arguments": field_table::to_json(&b.arguments),
        "properties_key": properties_key(&b.routing_key, &b.arguments),
    })
}

/// The bindings of `vh` that `keep` accepts (given source, destination, destination type),
/// the default exchange's implicit ones first, as RabbitMQ lists them.
pub(super) fn bindings_of(vh: &VHost, keep: impl Fn(&str, &str, &str) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    let topo = vh.read();
    let mut names: Vec<_> = topo.queues.keys().cloned().collect();
    names.sort();
    for q in names {
        if keep("", &q, "queue") {
            out.push(json!({
                "source": "", "vhost": vh.name, "destination": q,
                "destination_type": "queue", "routing_key": q, "arguments": {},
                "properties_key": q,
            }));
        }
    }
    let mut xs: Vec<_> = topo.exchanges.values().collect();
    xs.sort_by(|a, b| a.name.cmp(&b.name));
    for x in xs {
        for b in &x.bindings {
            let (dest, kind) = match &b.destination {
                Destination::Queue(q) => (q.as_str(), "queue"),
                Destination::Exchange(e) => (e.as_str(), "exchange"),
            };
            if keep(&x.name, dest, kind) {
                out.push(binding_json(&vh.name, &x.name, b));
            }
        }
    }
    out
}

fn all_bindings(ctx: &Ctx, me: &Caller, only: Option<&str>) -> ApiResult {
    let mut out = Vec::new();
    for vh in vhosts_of(ctx, me, only)? {
        out.extend(bindings_of(&vh, |_, _, _| true));
    }
    Ok(Json(Value::Array(out)))
}

async fn bindings(State(ctx): State<Ctx>, Extension(me): Me) -> ApiResult {
    all_bindings(&ctx, &me, None)
}

async fn bindings_in(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path(vhost): Path<String>,
) -> ApiResult {
    all_bindings(&ctx, &me, Some(&vhost))
}

/// The connections the caller sees (its own, or everyone's for monitoring and administrator).
fn visible_connections(ctx: &Ctx, me: &Caller) -> Vec<ConnectionInfo> {
    let mut list = ctx.broker.connections.list();
    list.retain(|c| me.sees_connection(c));
    list
}

/// The connection named `name` if the caller sees it; one it does not see is as missing.
fn find_connection(ctx: &Ctx, me: &Caller, name: &str) -> Result<ConnectionInfo, ApiError> {
    visible_connections(ctx, me)
        .into_iter()
        .find(|c| c.name() == name)
        .ok_or_else(|| ApiError::not_found(format!("no connection '{name}'")))
}

async fn connections(State(ctx): State<Ctx>, Extension(me): Me) -> ApiResult {
    let mut channel_counts: std::collections::HashMap<u64, usize> = Default::default();
    for ch in ctx.broker.channels.list() {
        *channel_counts.entry(ch.connection_id).or_default() += 1;
    }
    let out = visible_connections(&ctx, &me)
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
                "type": "network",
                "channels": channel_counts.get(&c.id).copied().unwrap_or(0),
                "node": NODE_NAME,
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// Administrators close any connection, everyone else only their own (another user's
/// connection answers 404 to them, as a missing one: monitoring users see it listed but may
/// not close it, and get 403).
async fn close_connection(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path(name): Path<String>,
) -> Done {
    let conn = find_connection(&ctx, &me, &name)?;
    if !me.may_close(&conn) {
        return Err(ApiError::forbidden(format!(
            "user '{}' may not close another user's connection",
            me.user.name
        )));
    }
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
            "node": NODE_NAME,
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

async fn channels(State(ctx): State<Ctx>, Extension(me): Me) -> ApiResult {
    Ok(Json(Value::Array(all_channels(&ctx, |c| {
        me.sees_connection(c)
    }))))
}

/// A vhost's channels: the caller must be allowed to enter the vhost, and sees its own
/// channels there (everyone's for monitoring and administrator).
async fn vhost_channels(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path(vhost): Path<String>,
) -> ApiResult {
    me.enter(&ctx, &vhost)?;
    Ok(Json(Value::Array(all_channels(&ctx, |c| {
        c.vhost == vhost && me.sees_connection(c)
    }))))
}

async fn connection_channels(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path(name): Path<String>,
) -> ApiResult {
    let conn = find_connection(&ctx, &me, &name)?;
    Ok(Json(Value::Array(all_channels(&ctx, |c| c.id == conn.id))))
}

/// Consumers of the connections the caller sees, on queues of every vhost (a monitoring
/// user sees every consumer, as in RabbitMQ, even on queues of vhosts it cannot enter).
async fn consumers(State(ctx): State<Ctx>, Extension(me): Me) -> ApiResult {
    let names: std::collections::HashMap<u64, String> = visible_connections(&ctx, &me)
        .into_iter()
        .map(|c| (c.id, c.name()))
        .collect();
    let vhosts: Vec<Arc<VHost>> = ctx
        .broker
        .access
        .vhosts()
        .iter()
        .filter_map(|v| ctx.broker.vhosts.get(v))
        .collect();
    let mut out = Vec::new();
    for vh in vhosts {
        let mut qs: Vec<_> = vh.read().queues.values().cloned().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        for q in qs {
            for (tag, channel, conn, no_ack, prefetch) in q.consumer_list() {
                let Some(connection_name) = names.get(&conn) else {
                    continue;
                };
                out.push(json!({
                    "consumer_tag": tag,
                    "queue": { "name": q.name, "vhost": vh.name },
                    "channel_details": {
                        "number": channel,
                        "connection_name": connection_name,
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

async fn whoami(Extension(me): Me) -> ApiResult {
    Ok(Json(json!({ "name": me.user.name, "tags": me.user.tags })))
}

async fn users(State(ctx): State<Ctx>, Extension(me): Me) -> ApiResult {
    me.require_administrator()?;
    Ok(Json(Value::Array(
        ctx.broker.access.users().iter().map(user_json).collect(),
    )))
}

async fn user(State(ctx): State<Ctx>, Extension(me): Me, Path(name): Path<String>) -> ApiResult {
    me.require_administrator()?;
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
    Extension(me): Me,
    Path(name): Path<String>,
    body: Result<Json<PutUser>, axum::extract::rejection::JsonRejection>,
) -> Done {
    me.require_administrator()?;
    let Json(body) = body?;
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

async fn delete_user(State(ctx): State<Ctx>, Extension(me): Me, Path(name): Path<String>) -> Done {
    me.require_administrator()?;
    ctx.broker.access.delete_user(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The vhosts the caller may list (see `caller`), with their message totals.
async fn vhosts(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Query(rq): Query<RateQuery>,
) -> ApiResult {
    let out = me
        .listed_vhosts(&ctx)
        .iter()
        .map(|vh| {
            let qs: Vec<_> = vh.read().queues.values().cloned().collect();
            let (ready, unacked) = qs.iter().fold((0u64, 0u64), |acc, q| {
                let f = q.figures();
                (acc.0 + f.ready, acc.1 + f.unacked)
            });
            let (message_stats, lengths) =
                ctx.rates
                    .vhosts_json(std::slice::from_ref(&vh.name), &vh.stats.counters(), &rq);
            let mut v = json!({
                "name": vh.name,
                "messages_ready": ready,
                "messages_unacknowledged": unacked,
                "messages": ready + unacked,
                "message_stats": message_stats,
            });
            if let Value::Object(map) = &mut v {
                map.extend(lengths);
            }
            v
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// One vhost: administrators only, as in RabbitMQ 3.10 (others read `/api/vhosts`).
async fn vhost(State(ctx): State<Ctx>, Extension(me): Me, Path(name): Path<String>) -> ApiResult {
    me.require_administrator()?;
    me.enter(&ctx, &name)?;
    Ok(Json(json!({ "name": name })))
}

async fn put_vhost(State(ctx): State<Ctx>, Extension(me): Me, Path(name): Path<String>) -> Done {
    me.require_administrator()?;
    if ctx.broker.access.vhost_exists(&name) {
        return Ok(StatusCode::NO_CONTENT);
    }
    crate::admin::Admin::new(ctx.broker.clone()).add_vhost(&name)?;
    Ok(StatusCode::CREATED)
}

async fn delete_vhost(State(ctx): State<Ctx>, Extension(me): Me, Path(name): Path<String>) -> Done {
    me.require_administrator()?;
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

async fn permissions(State(ctx): State<Ctx>, Extension(me): Me) -> ApiResult {
    me.require_administrator()?;
    Ok(Json(permissions_json(
        ctx.broker.access.permissions(None, None),
    )))
}

async fn vhost_permissions(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path(vhost): Path<String>,
) -> ApiResult {
    me.require_administrator()?;
    me.enter(&ctx, &vhost)?;
    Ok(Json(permissions_json(
        ctx.broker.access.permissions(Some(&vhost), None),
    )))
}

async fn user_permissions(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path(user): Path<String>,
) -> ApiResult {
    me.require_administrator()?;
    if ctx.broker.access.user(&user).is_none() {
        return Err(ApiError::not_found(format!("user '{user}' does not exist")));
    }
    Ok(Json(permissions_json(
        ctx.broker.access.permissions(None, Some(&user)),
    )))
}

async fn permission(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    me.require_administrator()?;
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
    Extension(me): Me,
    Path((vhost, user)): Path<(String, String)>,
    body: Result<Json<PutPermission>, axum::extract::rejection::JsonRejection>,
) -> Done {
    me.require_administrator()?;
    let Json(p) = body?;
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
    Extension(me): Me,
    Path((vhost, user)): Path<(String, String)>,
) -> Done {
    me.require_administrator()?;
    ctx.broker.access.clear_permissions(&vhost, &user)?;
    Ok(StatusCode::NO_CONTENT)
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
