//! Definitions in RabbitMQ's JSON format (`rabbitmqctl export_definitions`, the management
//! API's `/api/definitions`): users with their password hashes and tags, vhosts, permissions,
//! queues with their arguments, exchanges, bindings. A file exported from RabbitMQ imports into
//! Lepus and Lepus's export imports into RabbitMQ (password hashes are in the same
//! `rabbit_password_hashing_sha256` scheme, see `access::password`).
//!
//! Export, as RabbitMQ 3.10 exports: every queue not exclusive to a connection (durable or
//! not), every exchange but the default and `amq.*` ones, every binding not from the default
//! exchange whose destination is exported.
//!
//! Import, as RabbitMQ's: additive and idempotent (objects are created or updated, none are
//! deleted), in the order users, vhosts, permissions, exchanges, queues, bindings; it stops at
//! the first object that fails (an unknown exchange type, an inequivalent queue, a binding
//! whose ends do not exist), with what came before it applied. Lepus has no policies, runtime
//! parameters or topic permissions: those sections are skipped with a warning in the log, and
//! the import answer lists what was skipped. Users may carry `password_hash` (with
//! `hashing_algorithm` `rabbit_password_hashing_sha256`, RabbitMQ's default) or a plain
//! `password`; other hashing algorithms are refused. Queue arguments Lepus does not act on
//! (`x-queue-type`, ...) are kept and exported again.
//!
//! Routes (administrators only, as in RabbitMQ): `GET`/`POST /api/definitions`, and
//! `GET`/`POST /api/definitions/{vhost}` for one vhost's queues, exchanges and bindings
//! (objects without a `vhost` field). The POST body may be up to [`MAX_BODY_BYTES`]. The
//! broker's `--definitions FILE` imports a file at boot through [`import`].

mod document;
use document::tags_of;
pub(crate) use document::DefinitionsJson;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::topology::{bind, declare_exchange, declare_queue};
use super::{field_table, ApiError, Caller, Ctx};
use crate::broker_state::BrokerShared;
use crate::exchange::Destination;

/// Largest definitions body the API accepts.
pub(crate) const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The definitions routes.
pub(super) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/api/definitions", get(export_all).post(import_all))
        .route(
            "/api/definitions/{vhost}",
            get(export_vhost).post(import_vhost),
        )
        .route_layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// The whole broker's definitions.
pub(crate) fn export(broker: &BrokerShared) -> Value {
    let access = &broker.access;
    let users: Vec<Value> = access
        .users_with_hashes()
        .into_iter()
        .map(|(name, hash, tags)| {
            json!({
                "name": name,
                "password_hash": hash,
                "hashing_algorithm": crate::access::PASSWORD_HASHING,
                "tags": tags,
                "limits": {},
            })
        })
        .collect();
    let vhosts: Vec<Value> = access
        .vhosts()
        .into_iter()
        .map(|name| json!({ "name": name }))
        .collect();
    let permissions: Vec<Value> = access
        .permissions(None, None)
        .into_iter()
        .map(|p| {
            json!({ "user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read })
        })
        .collect();
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for name in access.vhosts() {
        if let Some(vh) = broker.vhosts.get(&name) {
            topology_of(&vh, true, &mut queues, &mut exchanges, &mut bindings);
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    json!({
        "rabbit_version": version,
        "rabbitmq_version": version,
        "product_name": "Lepus",
        "product_version": version,
        "users": users,
        "vhosts": vhosts,
        "permissions": permissions,
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })
}

/// Appends the exported queues, exchanges and bindings of `vh` (with `vhost` fields when
/// `with_vhost`).
fn topology_of(
    vh: &crate::vhost::VHost,
    with_vhost: bool,
    queues: &mut Vec<Value>,
    exchanges: &mut Vec<Value>,
    bindings: &mut Vec<Value>,
) {
    let with = |mut v: Value| {
        if with_vhost {
            v["vhost"] = json!(vh.name);
        }
        v
    };
    let topo = vh.read();
    let mut qs: Vec<_> = topo
        .queues
        .values()
        .filter(|q| q.exclusive_owner.is_none())
        .collect();
    qs.sort_by(|a, b| a.name.cmp(&b.name));
    for q in &qs {
        queues.push(with(json!({
            "name": q.name,
            "durable": q.durable,
            "auto_delete": q.auto_delete,
            "arguments": field_table::to_json(&q.arguments),
        })));
    }
    let mut xs: Vec<_> = topo.exchanges.values().collect();
    xs.sort_by(|a, b| a.name.cmp(&b.name));
    for x in &xs {
        if !x.name.is_empty() && !x.name.starts_with("amq.") {
            exchanges.push(with(json!({
                "name": x.name,
                "type": x.kind.name(),
                "durable": x.durable,
                "auto_delete": x.auto_delete,
                "internal": x.internal,
                "arguments": field_table::to_json(&x.arguments),
            })));
        }
    }
    for x in &xs {
        for b in &x.bindings {
            let (dest, kind) = match &b.destination {
                Destination::Queue(q) => {
                    if !qs.iter().any(|have| &have.name == q) {
                        continue;
                    }
                    (q, "queue")
                }
                Destination::Exchange(e) => (e, "exchange"),
            };
            bindings.push(with(json!({
                "source": x.name,
                "destination": dest,
                "destination_type": kind,
                "routing_key": b.routing_key,
                "arguments": field_table::to_json(&b.arguments),
            })));
        }
    }
}

/// What an import did not apply, for the caller to see.
#[derive(Debug, Default)]
pub(crate) struct Skipped {
    /// Section name and how many items it had.
    pub(crate) sections: Vec<(&'static str, usize)>,
}

/// Imports `defs` into the broker (into `only_vhost` for a vhost-scoped document, whose
/// objects have no `vhost` field). See the module doc for the rules. Users, vhosts and
/// permissions are saved to `access.json` (an fsync each) on the blocking pool; the topology
/// waits for the store's commits without blocking a tokio worker.
pub(crate) async fn import(
    broker: &Arc<BrokerShared>,
    defs: DefinitionsJson,
    only_vhost: Option<&str>,
) -> Result<Skipped, ApiError> {
    let access = &broker.access;
    let mut skipped = Skipped::default();
    for (name, items) in [
        ("topic_permissions", defs.topic_permissions.len()),
        ("parameters", defs.parameters.len()),
        ("global_parameters", defs.global_parameters.len()),
        ("policies", defs.policies.len()),
    ] {
        if items > 0 {
            tracing::warn!(
                section = name,
                items,
                "definitions: Lepus has no {name}; skipped"
            );
            skipped.sections.push((name, items));
        }
    }
    let defs = Arc::new(defs);
    let (for_access, shared) = (defs.clone(), broker.clone());
    super::off_runtime(move || import_access(&shared, &for_access)).await?;
    let vhost_of = |given: &Option<String>,
                    what: &str|
     -> Result<Arc<crate::vhost::VHost>, ApiError> {
        let name = only_vhost
            .map(str::to_owned)
            .or_else(|| given.clone())
            .ok_or_else(|| ApiError::bad_request(format!("{what} without a vhost")))?;
        broker
            .vhosts
            .get(&name)
            .filter(|_| access.vhost_exists(&name))
            .ok_or_else(|| ApiError::bad_request(format!("{what}: vhost '{name}' does not exist")))
    };
    let table = |v: &Value| field_table::from_json(v).map_err(ApiError::bad_request);
    for x in &defs.exchanges {
        let vh = vhost_of(&x.vhost, &format!("exchange '{}'", x.name))?;
        if x.name.is_empty() || x.name.starts_with("amq.") {
            // The predeclared exchanges exist in every vhost.
            continue;
        }
        declare_exchange(
            &vh,
            &x.name,
            &x.kind,
            x.durable,
            x.auto_delete,
            x.internal,
            table(&x.arguments)?,
        )
        .await?;
    }
    for q in &defs.queues {
        let vh = vhost_of(&q.vhost, &format!("queue '{}'", q.name))?;
        declare_queue(&vh, &q.name, q.durable, q.auto_delete, table(&q.arguments)?).await?;
    }
    for b in &defs.bindings {
        let vh = vhost_of(&b.vhost, "binding")?;
        if b.source.is_empty() {
            continue;
        }
        let destination = match b.destination_type.as_str() {
            "queue" => Destination::Queue(b.destination.clone()),
            "exchange" => Destination::Exchange(b.destination.clone()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "binding with destination_type '{other}'"
                )))
            }
        };
        bind(
            &vh,
            &b.source,
            destination,
            b.routing_key.clone(),
            table(&b.arguments)?,
        )
        .await?;
    }
    Ok(skipped)
}

/// The users, vhosts and permissions of `defs`, in that order. Blocking: each change is saved
/// to `access.json` with an fsync.
fn import_access(broker: &Arc<BrokerShared>, defs: &DefinitionsJson) -> Result<(), ApiError> {
    let access = &broker.access;
    let admin = crate::admin::Admin::new(broker.clone());
    for u in &defs.users {
        let tags = tags_of(&u.tags);
        let hash = match (&u.password_hash, &u.password) {
            (Some(hash), _) => {
                let algorithm = u
                    .hashing_algorithm
                    .as_deref()
                    .unwrap_or(crate::access::PASSWORD_HASHING);
                if algorithm != crate::access::PASSWORD_HASHING {
                    return Err(ApiError::bad_request(format!(
                        "user '{}': unsupported hashing algorithm '{algorithm}' (Lepus reads {})",
                        u.name,
                        crate::access::PASSWORD_HASHING
                    )));
                }
                hash.clone()
            }
            (None, Some(password)) => {
                if access.user(&u.name).is_none() {
                    access.add_user(&u.name, password)?;
                } else {
                    access.change_password(&u.name, password)?;
                }
                access.set_user_tags(&u.name, &tags)?;
                continue;
            }
            (None, None) => String::new(),
        };
        access.put_user_hash(&u.name, &hash, &tags)?;
    }
    for v in &defs.vhosts {
        if !access.vhost_exists(&v.name) {
            admin.add_vhost(&v.name)?;
        }
    }
    for p in &defs.permissions {
        access.set_permissions(&p.vhost, &p.user, &p.configure, &p.write, &p.read)?;
    }
    Ok(())
}

/// Parses a definitions document (the file's bytes).
pub(crate) fn parse(bytes: &[u8]) -> Result<DefinitionsJson, String> {
    let bad = |e: serde_json::Error| format!("not a definitions document: {e}");
    // An object: serde would also read a struct from a JSON array.
    match serde_json::from_slice::<Value>(bytes).map_err(bad)? {
        v @ Value::Object(_) => serde_json::from_value(v).map_err(bad),
        _ => Err("not a definitions document: a JSON object expected".to_owned()),
    }
}

async fn export_all(
    State(ctx): State<Ctx>,
    Extension(me): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    me.require_administrator()?;
    Ok(Json(export(&ctx.broker)))
}

async fn export_vhost(
    State(ctx): State<Ctx>,
    Extension(me): Extension<Caller>,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    me.require_administrator()?;
    let vh = me.enter(&ctx, &vhost)?;
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    topology_of(&vh, false, &mut queues, &mut exchanges, &mut bindings);
    Ok(Json(json!({
        "rabbit_version": env!("CARGO_PKG_VERSION"),
        "parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

type Body = Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>;

/// The body of an import, which must be sent as JSON: a form on another site cannot send that
/// content type without the browser asking first (a CORS preflight, which this API never
/// grants), so credentials a browser cached cannot be used to import definitions from another
/// site.
fn json_body(headers: &HeaderMap, body: Body) -> Result<DefinitionsJson, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json {
        return Err(ApiError::unsupported_media_type(
            "definitions must be sent as application/json",
        ));
    }
    let bytes = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    parse(&bytes).map_err(ApiError::bad_request)
}

fn answer(skipped: Skipped) -> Response {
    if skipped.sections.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    // RabbitMQ answers 204; Lepus says what it could not apply.
    let sections: serde_json::Map<String, Value> = skipped
        .sections
        .into_iter()
        .map(|(name, n)| (name.to_owned(), json!(n)))
        .collect();
    Json(json!({
        "skipped": sections,
        "reason": "Lepus has no policies, runtime parameters or topic permissions",
    }))
    .into_response()
}

async fn import_all(
    State(ctx): State<Ctx>,
    Extension(me): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    me.require_administrator()?;
    let defs = json_body(&headers, body)?;
    Ok(answer(import(&ctx.broker, defs, None).await?))
}

async fn import_vhost(
    State(ctx): State<Ctx>,
    Extension(me): Extension<Caller>,
    Path(vhost): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    me.require_administrator()?;
    me.enter(&ctx, &vhost)?;
    let defs = json_body(&headers, body)?;
    if !defs.users.is_empty() || !defs.vhosts.is_empty() || !defs.permissions.is_empty() {
        return Err(ApiError::bad_request(
            "a vhost's definitions have no users, vhosts or permissions",
        ));
    }
    Ok(answer(import(&ctx.broker, defs, Some(&vhost)).await?))
}

#[cfg(test)]
mod tests;
