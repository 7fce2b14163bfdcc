//! `/api/queues`: listing, one queue with its consumers, delete and purge.

use super::*;

/// A queue in RabbitMQ's shape: its declared arguments, its counts with their rates
/// (`*_details`, from the sampler's history), and its publish and deliver_get counters.
pub(super) fn queue_json(
    ctx: &Ctx,
    vhost: &VHost,
    q: &Arc<crate::queue::Queue>,
    rq: &RateQuery,
) -> Value {
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
        // RabbitMQ's classic queues report the active consumer's tag (null without one, or
        // without `x-single-active-consumer`); its quorum queues have no such key.
        if q.config.queue_type == crate::queue::QueueType::Classic {
            map.insert(
                "single_active_consumer_tag".to_owned(),
                json!(q.single_active_consumer_tag()),
            );
        }
    }
    out
}

pub(super) fn all_queues(ctx: &Ctx, me: &Caller, only: Option<&str>, rq: &RateQuery) -> ApiResult {
    let mut out = Vec::new();
    for vh in vhosts_of(ctx, me, only)? {
        let mut qs: Vec<_> = vh.read().queues.values().cloned().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(qs.iter().map(|q| queue_json(ctx, &vh, q, rq)));
    }
    Ok(Json(Value::Array(out)))
}

/// `/api/queues` and `/api/queues/{vhost}`.
pub(super) async fn queues(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    vhost: Option<Path<String>>,
    Query(rq): Query<RateQuery>,
) -> ApiResult {
    all_queues(&ctx, &me, vhost.as_deref().map(String::as_str), &rq)
}

/// One queue, with its consumers (`consumer_details`) as RabbitMQ's queue page shows them.
pub(super) async fn queue(
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
        .filter_map(|info| {
            let c = conns.get(&info.connection)?;
            let channel = info.channel;
            Some(json!({
                "consumer_tag": info.tag,
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
                "ack_required": !info.no_ack,
                "prefetch_count": info.prefetch,
                "exclusive": false,
                "active": info.activity_status != "waiting",
                "activity_status": info.activity_status,
                "arguments": {},
            }))
        })
        .collect();
    out["consumer_details"] = Value::Array(consumers);
    Ok(Json(out))
}

/// Deleting a queue needs configure permission on it, as `queue.delete` does; as
/// `queue.delete-ok`, the 204 goes out once the deletion is durable.
pub(super) async fn delete_queue(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
) -> Done {
    let (vh, _) = find_queue(&ctx, &me, &vhost, &name)?;
    me.require_queue_access(&ctx, &vhost, Access::Configure, &name)?;
    if let Some((_, Some(commit))) = vh.delete_queue_now(&name) {
        commit.await.map_err(not_durable)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Purging a queue needs read permission on it, as `queue.purge` does; as `purge-ok`, the
/// 204 goes out once the purged messages' removals are durable.
pub(super) async fn purge_queue(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
) -> Done {
    let (vh, q) = find_queue(&ctx, &me, &vhost, &name)?;
    me.require_queue_access(&ctx, &vhost, Access::Read, &name)?;
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
