//! Topology writes over HTTP, as RabbitMQ's management API offers them: declaring and deleting
//! queues and exchanges, creating and deleting bindings, and the binding lists of one queue or
//! exchange. The operations themselves (on a vhost, with no AMQP connection) are shared with
//! definitions import.
//!
//! Each write checks what `queue.declare`, `exchange.declare`, `queue.bind`... would check: the
//! caller's AMQP permissions in the vhost (configure to declare or delete; write on the
//! destination and read on the source to bind), reserved `amq.` names (403), equivalence with
//! an existing object (400 "inequivalent arg"), and it is persisted before the answer when
//! durable. Departures from RabbitMQ 3.10: refusals are 403 where RabbitMQ says 401; a binding
//! with arguments is named by a `properties_key` whose digest part differs from RabbitMQ's
//! (clients treat it as opaque).

mod bindings;
pub(crate) use bindings::bind;
use bindings::{
    binding, bindings_between, delete_binding, destination_bindings, post_binding, queue_bindings,
    source_bindings,
};

use std::sync::Arc;

use amq_protocol::types::FieldTable;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::caller::find_queue;
use super::shapes::{binding_json, bindings_of, exchange_json, exchange_name, properties_key};
use super::{field_table, put_status, ApiError, Caller, Ctx};
use crate::access::{Access, ResourceKind};
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::persistence::TopologyChange;
use crate::queue::{Queue, QueueConfig};
use crate::store::{Commit, StoreError};
use crate::vhost::{self, VHost};

type Me = Extension<Caller>;
type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// The topology write routes and the per-object binding lists.
pub(super) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchange).put(put_exchange).delete(delete_exchange),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(source_bindings),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(destination_bindings),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(bindings_between).post(post_binding),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(binding).delete(delete_binding),
        )
}

/// The PUT-queue route (merged with `api`'s GET and DELETE on the same path).
pub(super) async fn put_queue(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
    body: Body<PutQueue>,
) -> Result<StatusCode, ApiError> {
    let Json(body) = body?;
    let vh = me.enter(&ctx, &vhost)?;
    me.require_access(&ctx, &vhost, Access::Configure, ResourceKind::Queue, &name)?;
    let arguments = field_table::from_json(&body.arguments).map_err(ApiError::bad_request)?;
    let created = declare_queue(&vh, &name, body.durable, body.auto_delete, arguments).await?;
    Ok(put_status(created))
}

/// `PUT /api/queues/{vhost}/{name}` body (RabbitMQ's defaults: not durable, not
/// auto-delete).
#[derive(Debug, Deserialize)]
pub(super) struct PutQueue {
    #[serde(default)]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    arguments: Value,
}

/// Declares queue `name` in `vh` as `queue.declare` (not passive, not exclusive) would;
/// `Ok(true)` when it was created.
pub(crate) async fn declare_queue(
    vh: &VHost,
    name: &str,
    durable: bool,
    auto_delete: bool,
    arguments: FieldTable,
) -> Result<bool, ApiError> {
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad_request(
            "queue name must be 1 to 255 bytes long",
        ));
    }
    if name.starts_with("amq.") {
        return Err(ApiError::forbidden(format!(
            "queue name '{name}' contains reserved prefix 'amq.*'"
        )));
    }
    let config = QueueConfig::from_arguments(&arguments)
        .map_err(|e| ApiError::bad_request(e.text(name, &vh.name)))?;
    let (created, commit) = {
        let mut topo = vh.write();
        match topo.queues.get(name) {
            Some(q) => {
                let inequivalent = |arg: &str| {
                    ApiError::bad_request(format!(
                        "inequivalent arg '{arg}' for queue '{name}' in vhost '{}'",
                        vh.name
                    ))
                };
                if q.exclusive_owner.is_some() {
                    return Err(ApiError::bad_request(format!(
                        "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'",
                        vh.name
                    )));
                }
                if q.durable != durable {
                    return Err(inequivalent("durable"));
                }
                if q.auto_delete != auto_delete {
                    return Err(inequivalent("auto_delete"));
                }
                if let Some(arg) = crate::methods::config_difference(&config, &q.config) {
                    return Err(inequivalent(arg));
                }
                q.touch();
                // A redeclare answers once the queue's declare is durable (it may be an AMQP
                // client's, still on its way to disk).
                let commit = if q.is_persisted() {
                    vh.record_topology(TopologyChange::QueueDeclared(q.declared()))
                } else {
                    Ok(None)
                };
                (false, commit)
            }
            None => {
                let q = Queue::new(name.to_owned(), durable, auto_delete, None, config)
                    .with_arguments(arguments);
                let q = vh.insert_queue(&mut topo, q);
                let commit = if q.is_persisted() {
                    vh.record_topology(TopologyChange::QueueDeclared(q.declared()))
                } else {
                    Ok(None)
                };
                (true, commit)
            }
        }
    };
    vh.stats.queue_declared();
    durable_after(commit).await?;
    Ok(created)
}

/// Waits until the store has committed a durable change's record, so that the API answers
/// once the change is durable, as the AMQP `-ok`s do. Call after the topology lock is
/// released. Awaited, never blocked on: the commit waits for an fsync (and the rest of its
/// batch), and a tokio worker parked that long would stall every AMQP connection scheduled on
/// it (`tests::a_held_back_commit_does_not_stall_amqp`).
async fn durable_after(commit: Result<Option<Commit>, StoreError>) -> Result<(), ApiError> {
    let failed = |e: StoreError| ApiError::internal(format!("cannot persist the topology: {e}"));
    if let Some(commit) = commit.map_err(failed)? {
        commit.await.map_err(failed)?;
    }
    Ok(())
}

async fn exchange(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vh = me.enter(&ctx, &vhost)?;
    let name = exchange_name(&name);
    let topo = vh.read();
    let x = topo
        .exchanges
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("no exchange '{name}' in vhost '{vhost}'")))?;
    Ok(Json(exchange_json(&vh, x)))
}

/// `PUT /api/exchanges/{vhost}/{name}` body (RabbitMQ's defaults: direct, not durable).
#[derive(Debug, Deserialize)]
struct PutExchange {
    #[serde(rename = "type", default = "direct")]
    kind: String,
    #[serde(default)]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    arguments: Value,
}

fn direct() -> String {
    "direct".to_owned()
}

async fn put_exchange(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
    body: Body<PutExchange>,
) -> Result<StatusCode, ApiError> {
    let Json(b) = body?;
    let vh = me.enter(&ctx, &vhost)?;
    me.require_access(
        &ctx,
        &vhost,
        Access::Configure,
        ResourceKind::Exchange,
        &name,
    )?;
    let arguments = field_table::from_json(&b.arguments).map_err(ApiError::bad_request)?;
    let created = declare_exchange(
        &vh,
        &name,
        &b.kind,
        b.durable,
        b.auto_delete,
        b.internal,
        arguments,
    )
    .await?;
    Ok(put_status(created))
}

/// Declares exchange `name` in `vh` as `exchange.declare` would; `Ok(true)` when created.
pub(crate) async fn declare_exchange(
    vh: &VHost,
    name: &str,
    kind: &str,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    arguments: FieldTable,
) -> Result<bool, ApiError> {
    let Some(kind) = ExchangeKind::parse(kind) else {
        return Err(ApiError::bad_request(format!(
            "unknown exchange type '{kind}'"
        )));
    };
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad_request(
            "exchange name must be 1 to 255 bytes long",
        ));
    }
    let (created, commit) = {
        let mut topo = vh.write();
        match topo.exchanges.get(name) {
            Some(x) => {
                let inequivalent = |arg: &str, received: &str, current: &str| {
                    ApiError::bad_request(format!(
                        "inequivalent arg '{arg}' for exchange '{name}' in vhost '{}': received '{received}' but current is '{current}'",
                        vh.name
                    ))
                };
                if x.kind != kind {
                    return Err(inequivalent("type", kind.name(), x.kind.name()));
                }
                for (arg, received, current) in [
                    ("durable", durable, x.durable),
                    ("auto_delete", auto_delete, x.auto_delete),
                    ("internal", internal, x.internal),
                ] {
                    if received != current {
                        return Err(inequivalent(
                            arg,
                            &received.to_string(),
                            &current.to_string(),
                        ));
                    }
                }
                // As `exchange.declare`: a redeclare answers once the declare is durable.
                let commit = if x.durable && !name.starts_with("amq.") {
                    vh.record_topology(TopologyChange::ExchangeDeclared(x.declared()))
                } else {
                    Ok(None)
                };
                (false, commit)
            }
            None => {
                if name.starts_with("amq.") {
                    return Err(ApiError::forbidden(format!(
                        "exchange name '{name}' contains reserved prefix 'amq.*'"
                    )));
                }
                let exchange = Exchange::new(name, kind, durable, auto_delete, internal, arguments);
                let commit = if durable {
                    vh.record_topology(TopologyChange::ExchangeDeclared(exchange.declared()))
                } else {
                    Ok(None)
                };
                topo.exchanges.insert(name.to_owned(), exchange);
                (true, commit)
            }
        }
    };
    durable_after(commit).await?;
    Ok(created)
}

/// `?if-unused=true`, as RabbitMQ's DELETE takes it.
#[derive(Debug, Default, Deserialize)]
struct DeleteExchange {
    #[serde(rename = "if-unused", default)]
    if_unused: bool,
}

async fn delete_exchange(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<DeleteExchange>,
) -> Result<StatusCode, ApiError> {
    let if_unused = query.if_unused;
    let vh = me.enter(&ctx, &vhost)?;
    let name = exchange_name(&name);
    if name.is_empty() || name.starts_with("amq.") {
        return Err(ApiError::forbidden(format!(
            "deletion of system exchange '{}' in vhost '{vhost}' is not allowed",
            if name.is_empty() { "amq.default" } else { name }
        )));
    }
    me.require_access(
        &ctx,
        &vhost,
        Access::Configure,
        ResourceKind::Exchange,
        name,
    )?;
    let commit = {
        let mut topo = vh.write();
        let Some(x) = topo.exchanges.get(name) else {
            return Err(ApiError::not_found(format!(
                "no exchange '{name}' in vhost '{vhost}'"
            )));
        };
        if if_unused && !x.bindings.is_empty() {
            return Err(ApiError::bad_request(format!(
                "exchange '{name}' in vhost '{vhost}' in use"
            )));
        }
        let deleted = vhost::delete_exchange(&mut topo, name);
        vh.record_deleted_exchanges(&deleted)
    };
    durable_after(commit).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests;
