//! `/api/connections`, `/api/channels` and `/api/consumers`: the lists, and closing a
//! connection.

use super::*;

/// The connections the caller sees (its own, or everyone's for monitoring and administrator).
pub(super) fn visible_connections(ctx: &Ctx, me: &Caller) -> Vec<ConnectionInfo> {
    let mut list = ctx.broker.connections.list();
    list.retain(|c| me.sees_connection(c));
    list
}

/// The connection named `name` if the caller sees it; one it does not see is as missing.
pub(super) fn find_connection(
    ctx: &Ctx,
    me: &Caller,
    name: &str,
) -> Result<ConnectionInfo, ApiError> {
    visible_connections(ctx, me)
        .into_iter()
        .find(|c| c.name() == name)
        .ok_or_else(|| ApiError::not_found(format!("no connection '{name}'")))
}

pub(super) async fn connections(State(ctx): State<Ctx>, Extension(me): Me) -> ApiResult {
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
pub(super) async fn close_connection(
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
pub(super) fn all_channels(
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

pub(super) async fn channels(State(ctx): State<Ctx>, Extension(me): Me) -> ApiResult {
    Ok(Json(Value::Array(all_channels(&ctx, |c| {
        me.sees_connection(c)
    }))))
}

/// A vhost's channels: the caller must be allowed to enter the vhost, and sees its own
/// channels there (everyone's for monitoring and administrator).
pub(super) async fn vhost_channels(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path(vhost): Path<String>,
) -> ApiResult {
    me.enter(&ctx, &vhost)?;
    Ok(Json(Value::Array(all_channels(&ctx, |c| {
        c.vhost == vhost && me.sees_connection(c)
    }))))
}

pub(super) async fn connection_channels(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path(name): Path<String>,
) -> ApiResult {
    let conn = find_connection(&ctx, &me, &name)?;
    Ok(Json(Value::Array(all_channels(&ctx, |c| c.id == conn.id))))
}

/// Consumers of the connections the caller sees, on queues of every vhost (a monitoring
/// user sees every consumer, as in RabbitMQ, even on queues of vhosts it cannot enter).
pub(super) async fn consumers(State(ctx): State<Ctx>, Extension(me): Me) -> ApiResult {
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
            for info in q.consumer_list() {
                let Some(connection_name) = names.get(&info.connection) else {
                    continue;
                };
                out.push(json!({
                    "consumer_tag": info.tag,
                    "queue": { "name": q.name, "vhost": vh.name },
                    "channel_details": {
                        "number": info.channel,
                        "connection_name": connection_name,
                    },
                    "ack_required": !info.no_ack,
                    "prefetch_count": info.prefetch,
                    "exclusive": false,
                    "active": info.activity_status != "waiting",
                    "activity_status": info.activity_status,
                }));
            }
        }
    }
    Ok(Json(Value::Array(out)))
}
