//! Publishing and getting messages over HTTP, as RabbitMQ's management API does it (for
//! testing and for the dashboard's queue page): `POST /api/exchanges/{vhost}/{name}/publish`
//! and `POST /api/queues/{vhost}/{name}/get`.
//!
//! A publish is routed as `basic.publish` routes it (alternate exchanges, exchange-to-exchange
//! bindings, queue limits), counted in the vhost's counters, and a persistent message on a
//! durable queue is on disk before the answer (as a publisher confirm promises). It needs write
//! permission on the exchange; a get needs read permission on the queue, and takes messages
//! as `basic.get` does, then acks, requeues (marked redelivered) or rejects them (dead-lettered
//! where the queue says) per `ackmode`.
//!
//! Bounds: a body is at most the API's 64 KiB request limit; a get takes at most
//! [`MAX_GET_COUNT`] messages and stops early once the payloads it took reach
//! [`MAX_GET_BYTES`] (what it did not take stays in the queue); each payload is cut to
//! `truncate` bytes when given.

use std::sync::Arc;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::ShortString;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Extension, Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::caller::find_queue;
use super::shapes::exchange_name;
use super::{field_table, ApiError, Caller, Ctx};
use crate::access::{Access, ResourceKind};
use crate::message::Message;
use crate::persistence::Durability;
use crate::queue::{check_expiration, DeadLetter, EnqueueOutcome, QueuedMessage};
use crate::vhost::VHost;

/// Most messages one get takes.
pub(crate) const MAX_GET_COUNT: usize = 1000;

/// Payload bytes after which a get takes no more messages.
pub(crate) const MAX_GET_BYTES: usize = 16 * 1024 * 1024;

type Me = Extension<Caller>;
type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// The publish and get routes.
pub(super) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        .route("/api/queues/{vhost}/{name}/get", post(get))
}

/// `POST .../publish` body.
#[derive(Debug, Deserialize)]
struct Publish {
    #[serde(default)]
    properties: Map<String, Value>,
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    payload: String,
    /// `string` (default) or `base64`.
    #[serde(default)]
    payload_encoding: Option<String>,
}

/// A short-string property from JSON (at most 255 bytes).
fn short(props: &Map<String, Value>, key: &str) -> Result<Option<ShortString>, ApiError> {
    match props.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => ShortString::try_new(s.as_str())
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("property '{key}' longer than 255 bytes"))),
        Some(other) => Err(ApiError::bad_request(format!(
            "property '{key}' must be a string, not {other}"
        ))),
    }
}

/// A small integer property from JSON.
fn octet(props: &Map<String, Value>, key: &str) -> Result<Option<u8>, ApiError> {
    match props.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("property '{key}' must be 0 to 255"))),
    }
}

/// Message properties in RabbitMQ's JSON (`delivery_mode`, `headers`, `content_type`, ...).
fn properties_from_json(
    props: &Map<String, Value>,
    user: &str,
) -> Result<AMQPProperties, ApiError> {
    let mut p = AMQPProperties::default();
    if let Some(v) = short(props, "content_type")? {
        p = p.with_content_type(v);
    }
    if let Some(v) = short(props, "content_encoding")? {
        p = p.with_content_encoding(v);
    }
    if let Some(h) = props.get("headers").filter(|h| !h.is_null()) {
        p = p.with_headers(field_table::from_json(h).map_err(ApiError::bad_request)?);
    }
    if let Some(v) = octet(props, "delivery_mode")? {
        p = p.with_delivery_mode(v);
    }
    if let Some(v) = octet(props, "priority")? {
        p = p.with_priority(v);
    }
    if let Some(v) = short(props, "correlation_id")? {
        p = p.with_correlation_id(v);
    }
    if let Some(v) = short(props, "reply_to")? {
        p = p.with_reply_to(v);
    }
    if let Some(v) = short(props, "expiration")? {
        check_expiration(v.as_str()).map_err(ApiError::bad_request)?;
        p = p.with_expiration(v);
    }
    if let Some(v) = short(props, "message_id")? {
        p = p.with_message_id(v);
    }
    if let Some(v) = props.get("timestamp").and_then(Value::as_u64) {
        p = p.with_timestamp(v);
    }
    if let Some(v) = short(props, "type")? {
        p = p.with_type(v);
    }
    if let Some(v) = short(props, "user_id")? {
        // As `basic.publish`: a user_id must be the publisher's own.
        if v.as_str() != user {
            return Err(ApiError::bad_request(format!(
                "user_id property set to '{}' but authenticated user was '{user}'",
                v.as_str()
            )));
        }
        p = p.with_user_id(v);
    }
    if let Some(v) = short(props, "app_id")? {
        p = p.with_app_id(v);
    }
    Ok(p)
}

/// Message properties as RabbitMQ's JSON shows them (only those set).
fn properties_to_json(p: &AMQPProperties) -> Value {
    let mut out = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            out.insert(k.to_owned(), v);
        }
    };
    let s = |v: &Option<ShortString>| v.as_ref().map(|s| json!(s.as_str()));
    put("content_type", s(p.content_type()));
    put("content_encoding", s(p.content_encoding()));
    put("headers", p.headers().as_ref().map(field_table::to_json));
    put("delivery_mode", p.delivery_mode().map(|v| json!(v)));
    put("priority", p.priority().map(|v| json!(v)));
    put("correlation_id", s(p.correlation_id()));
    put("reply_to", s(p.reply_to()));
    put("expiration", s(p.expiration()));
    put("message_id", s(p.message_id()));
    put("timestamp", p.timestamp().map(|v| json!(v)));
    put("type", s(p.kind()));
    put("user_id", s(p.user_id()));
    put("app_id", s(p.app_id()));
    Value::Object(out)
}

async fn publish(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
    body: Body<Publish>,
) -> Result<Json<Value>, ApiError> {
    let Json(b) = body?;
    let vh = me.enter(&ctx, &vhost)?;
    let exchange = exchange_name(&name);
    me.require_access(
        &ctx,
        &vhost,
        Access::Write,
        ResourceKind::Exchange,
        exchange,
    )?;
    let payload = match b.payload_encoding.as_deref() {
        None | Some("string") => Bytes::from(b.payload.into_bytes()),
        Some("base64") => Bytes::from(
            STANDARD
                .decode(b.payload.trim())
                .map_err(|e| ApiError::bad_request(format!("payload is not base64: {e}")))?,
        ),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown payload_encoding '{other}'"
            )))
        }
    };
    let routing_key = ShortString::try_new(b.routing_key)
        .map_err(|_| ApiError::bad_request("routing key longer than 255 bytes"))?;
    let properties = properties_from_json(&b.properties, &me.user.name)?;
    let message = Arc::new(Message::new(
        &vh.account,
        ShortString::from(exchange),
        routing_key,
        properties,
        payload,
        None,
    ));
    let routed = route(&vh, message).await?;
    Ok(Json(json!({ "routed": routed })))
}

/// Routes and enqueues `message` as `basic.publish` does, waiting for the store where the
/// message is persistent; true when it reached a queue.
async fn route(vh: &Arc<VHost>, message: Arc<Message>) -> Result<bool, ApiError> {
    let exchange = message.exchange.as_str();
    {
        let topo = vh.read();
        match topo.exchanges.get(exchange) {
            None => {
                return Err(ApiError::not_found(format!(
                    "no exchange '{exchange}' in vhost '{}'",
                    vh.name
                )))
            }
            Some(x) if x.internal => {
                return Err(ApiError::forbidden(format!(
                    "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                    vh.name
                )))
            }
            Some(_) => {}
        }
    }
    // Routing takes the topology lock itself (and releases it on long routes).
    let queues = vh
        .route(
            exchange,
            message.routing_key.as_str(),
            message.properties.headers().as_ref(),
        )
        .queues;
    vh.stats.published(message.body.len() as u64);
    if queues.is_empty() {
        vh.stats.unroutable(false);
    }
    let mut pending = Vec::new();
    for queue in &queues {
        if let EnqueueOutcome::Enqueued { seq } = vh.enqueue(queue, message.clone()) {
            if queue.is_persisted() && message.is_persistent() {
                if let Durability::Pending(rx) =
                    vh.store.enqueue(&vh.name, &queue.name, seq, &message)
                {
                    pending.push(rx);
                }
                queue.page_out(seq);
            }
        }
    }
    for rx in pending {
        rx.await
            .map_err(|_| ApiError::internal("the store failed to write the message"))?;
    }
    Ok(!queues.is_empty())
}

/// `POST .../get` body.
#[derive(Debug, Deserialize)]
struct Get {
    #[serde(default = "one")]
    count: usize,
    /// `ack_requeue_true` (default), `ack_requeue_false`, `reject_requeue_true`,
    /// `reject_requeue_false`.
    #[serde(default = "requeue")]
    ackmode: String,
    /// `auto` (text when valid UTF-8, else base64) or `base64`.
    #[serde(default = "auto")]
    encoding: String,
    /// Cut each payload to this many bytes.
    #[serde(default)]
    truncate: Option<usize>,
}

fn one() -> usize {
    1
}

fn requeue() -> String {
    "ack_requeue_true".to_owned()
}

fn auto() -> String {
    "auto".to_owned()
}

async fn get(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
    body: Body<Get>,
) -> Result<Json<Value>, ApiError> {
    let Json(b) = body?;
    let (vh, queue) = find_queue(&ctx, &me, &vhost, &name)?;
    me.require_queue_access(&ctx, &vhost, Access::Read, &name)?;
    let (ack, requeue) = match b.ackmode.as_str() {
        "ack_requeue_true" => (true, true),
        "ack_requeue_false" => (true, false),
        "reject_requeue_true" => (false, true),
        "reject_requeue_false" => (false, false),
        other => return Err(ApiError::bad_request(format!("unknown ackmode '{other}'"))),
    };
    let base64_only = match b.encoding.as_str() {
        "auto" => false,
        "base64" => true,
        other => return Err(ApiError::bad_request(format!("unknown encoding '{other}'"))),
    };
    let mut taken: Vec<(QueuedMessage, u32)> = Vec::new();
    let mut bytes = 0usize;
    while taken.len() < b.count.min(MAX_GET_COUNT) && bytes < MAX_GET_BYTES {
        let Some((qm, left)) = vh.get(&queue) else {
            break;
        };
        vh.stats.fetched(false, qm.redelivered);
        bytes += qm.message.body.len();
        taken.push((qm, left));
    }
    if taken.is_empty() {
        vh.stats.get_empty();
    }
    let out: Vec<Value> = taken
        .iter()
        .map(|(qm, left)| {
            let body = &qm.message.body;
            let cut = &body[..b.truncate.map_or(body.len(), |t| t.min(body.len()))];
            let (payload, encoding) = match std::str::from_utf8(cut) {
                Ok(text) if !base64_only => (text.to_owned(), "string"),
                _ => (STANDARD.encode(cut), "base64"),
            };
            json!({
                "payload_bytes": body.len(),
                "redelivered": qm.redelivered,
                "exchange": qm.message.exchange.as_str(),
                "routing_key": qm.message.routing_key.as_str(),
                "message_count": left,
                "properties": properties_to_json(&qm.message.properties),
                "payload": payload,
                "payload_encoding": encoding,
            })
        })
        .collect();
    let messages: Vec<QueuedMessage> = taken.into_iter().map(|(qm, _)| qm).collect();
    if requeue {
        vh.requeue(&queue, messages);
    } else if ack {
        for qm in &messages {
            queue.forget(qm);
        }
        vh.stats.acked(messages.len() as u64);
    } else {
        // Each letter leaves this queue's store once its dead-letter copies are stored (see
        // `VHost::dead_letter`), as a `basic.reject` does.
        let letters = messages
            .into_iter()
            .map(|qm| DeadLetter {
                stored: Some((qm.seq, qm.message.is_persistent())),
                message: qm.message,
                reason: "rejected",
            })
            .collect();
        vh.dead_letter(&queue, letters);
    }
    Ok(Json(Value::Array(out)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_through_json() {
        let props = json!({
            "content_type": "text/plain", "delivery_mode": 2, "priority": 5,
            "headers": {"a": 1, "b": "x"}, "correlation_id": "c", "reply_to": "r",
            "expiration": "60000", "message_id": "m", "timestamp": 1_700_000_000u64,
            "type": "t", "user_id": "guest", "app_id": "app", "content_encoding": "gzip",
        });
        let map = props.as_object().unwrap();
        let p = properties_from_json(map, "guest").unwrap();
        assert_eq!(properties_to_json(&p), props);
    }

    #[test]
    fn bad_properties_are_refused() {
        let bad = |v: Value| properties_from_json(v.as_object().unwrap(), "guest").is_err();
        assert!(bad(json!({"delivery_mode": 300})));
        assert!(bad(json!({"content_type": 7})));
        assert!(bad(json!({"expiration": "-1"})));
        assert!(bad(json!({"user_id": "someone-else"})));
        assert!(bad(json!({"message_id": "x".repeat(256)})));
        assert!(bad(json!({"headers": [1]})));
    }
}
