//! RabbitMQ's health checks (`/api/health/checks/...`), the node endpoints (`/api/nodes`) and
//! the listener list the overview shows.
//!
//! A check answers 200 `{"status":"ok"}` when it passes and 503
//! `{"status":"failed","reason":...}` (with what failed) when it does not, as RabbitMQ 3.10's
//! `rabbit_mgmt_wm_health_check_*` do; like there, any management user may run them. Lepus is
//! one node, so the local and cluster-wide alarm checks agree, and the quorum and mirror
//! checks always pass. Alarms: the memory alarm (`--memory-high-watermark`) and the disk
//! alarm (`--disk-free-limit`); Lepus has no file-descriptor alarm.
//!
//! `/api/nodes` (monitoring and administrator, as in RabbitMQ) has RabbitMQ's node fields
//! with the process's figures, and a `lepus` object of Lepus's own: the memory budget and
//! accounted memory, and the store's counters (fsyncs, bytes, segments).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use super::node::{NodeFigures, NODE_NAME};
use super::rates::RateQuery;
use super::{ApiError, Caller, Ctx};
use crate::store::FsyncPolicy;

/// The health and node routes (behind the API's authentication).
pub(super) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/api/health/checks/alarms", get(alarms))
        .route("/api/health/checks/local-alarms", get(alarms))
        .route(
            "/api/health/checks/port-listener/{port}",
            get(port_listener),
        )
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            get(protocol_listener),
        )
        .route("/api/health/checks/virtual-hosts", get(virtual_hosts))
        .route(
            "/api/health/checks/node-is-quorum-critical",
            get(single_node),
        )
        .route(
            "/api/health/checks/node-is-mirror-sync-critical",
            get(single_node),
        )
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{name}", get(node))
}

/// `listeners` of `/api/overview`, in RabbitMQ's shape.
pub(super) fn listeners_json(ctx: &Ctx) -> Value {
    let list = ctx.broker.listeners.get().map_or(&[][..], Vec::as_slice);
    Value::Array(
        list.iter()
            .map(|l| {
                json!({
                    "node": NODE_NAME,
                    "protocol": l.protocol,
                    "ip_address": l.addr.ip().to_string(),
                    "port": l.addr.port(),
                })
            })
            .collect(),
    )
}

fn passed() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

fn failed(body: Value) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// A check over a list of problems: passed when `problems` is empty, else failed for `reason`,
/// with the problems under `key`.
fn passed_unless(problems: Vec<impl Serialize>, reason: &str, key: &str) -> Response {
    if problems.is_empty() {
        passed()
    } else {
        failed(json!({ "status": "failed", "reason": reason, key: problems }))
    }
}

/// A listener check that failed: no listener for `missing`; the listeners there are (their
/// ports or protocols) under `key`.
fn no_listener(missing: impl Serialize, key: &str, present: impl Serialize) -> Response {
    failed(json!({
        "status": "failed",
        "reason": "No active listener",
        "missing": missing,
        key: present,
    }))
}

/// A check about other nodes, which a single node always passes (RabbitMQ's answer).
async fn single_node() -> Response {
    Json(json!({ "status": "ok", "reason": "single node cluster" })).into_response()
}

/// The alarms in effect: the memory alarm, when raised.
fn active_alarms(ctx: &Ctx) -> Vec<Value> {
    let mut alarms = Vec::new();
    let raised = ctx.broker.vhosts.memory.alarms().current();
    for (on, resource) in [(raised.memory, "memory"), (raised.disk, "disk")] {
        if on {
            alarms.push(json!({ "node": NODE_NAME, "resource": resource }));
        }
    }
    alarms
}

async fn alarms(State(ctx): State<Ctx>) -> Response {
    passed_unless(
        active_alarms(&ctx),
        "resource alarm(s) in effect in the cluster",
        "alarms",
    )
}

fn ports(ctx: &Ctx) -> Vec<u16> {
    ctx.broker
        .listeners
        .get()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|l| l.addr.port())
        .collect()
}

async fn port_listener(State(ctx): State<Ctx>, Path(port): Path<String>) -> Response {
    let Ok(port) = port.parse::<u16>() else {
        return ApiError::bad_request(format!("invalid port '{port}'")).into_response();
    };
    let ports = ports(&ctx);
    if ports.contains(&port) {
        Json(json!({ "status": "ok", "port": port })).into_response()
    } else {
        no_listener(port, "ports", ports)
    }
}

async fn protocol_listener(State(ctx): State<Ctx>, Path(protocol): Path<String>) -> Response {
    let list = ctx.broker.listeners.get().map_or(&[][..], Vec::as_slice);
    // RabbitMQ accepts `amqp091` and `https`-style spellings too.
    let wanted = match protocol.as_str() {
        "amqp091" | "amqp0-9-1" | "amqp" => "amqp",
        "amqps" | "amqp/ssl" => "amqp/ssl",
        "http" | "management" => "http",
        other => other,
    };
    if list.iter().any(|l| l.protocol == wanted) {
        Json(json!({ "status": "ok", "protocol": protocol })).into_response()
    } else {
        let protocols: Vec<&str> = list.iter().map(|l| l.protocol).collect();
        no_listener(protocol, "protocols", protocols)
    }
}

/// Every vhost has its topology running (a vhost whose definitions exist but whose topology
/// does not would fail).
async fn virtual_hosts(State(ctx): State<Ctx>) -> Response {
    let down: Vec<String> = ctx
        .broker
        .access
        .vhosts()
        .into_iter()
        .filter(|v| ctx.broker.vhosts.get(v).is_none())
        .collect();
    passed_unless(down, "Some virtual hosts are down", "virtual-hosts")
}

/// This node in RabbitMQ's `/api/nodes` shape, plus Lepus's own figures under `lepus`.
fn node_json(ctx: &Ctx, rq: &RateQuery) -> Value {
    let f = NodeFigures::read(ctx);
    let memory = &ctx.broker.vhosts.memory;
    let disk = ctx.broker.disk_alarm.as_deref();
    let store = ctx.broker.vhosts.store.stats();
    let (_, history) = ctx.rates.node_json(rq);
    let mut lepus = json!({
        "memory_budget": memory.budget(),
        "memory_accounted": memory.used(),
        "memory_high_watermark": memory.watermark(),
        "data_dir": ctx.broker.config.data_dir.as_ref().map(|d| d.display().to_string()),
        "fsync": match ctx.broker.config.fsync {
            FsyncPolicy::Always => "always".to_owned(),
            FsyncPolicy::Never => "never".to_owned(),
            FsyncPolicy::Interval(every) => format!("{}ms", every.as_millis()),
        },
        "history": history,
    });
    if let Some(s) = store {
        lepus["store"] = json!({
            "fsyncs": s.fsyncs,
            "batches": s.batches,
            "records": s.records,
            "bytes_written": s.bytes,
            "segments": s.segments,
            "segments_deleted": s.segments_deleted,
            "live_messages": s.live_messages,
        });
    }
    let mut node = json!({
        "name": NODE_NAME,
        "type": "disc",
        "running": true,
        "os_pid": std::process::id().to_string(),
        "uptime": f.uptime_ms,
        "processors": f.processors,
        "mem_used": f.resident_memory.unwrap_or_else(|| memory.used()),
        "mem_limit": memory.watermark(),
        "mem_alarm": memory.alarm_raised(),
        "mem_calculation_strategy": if f.resident_memory.is_some() { "rss" } else { "allocated" },
        "disk_free_alarm": disk.is_some_and(|d| d.raised()),
        "disk_free_limit": disk.map_or(0, |d| d.limit()),
        // Every socket the listeners hold (this request's too), against the socket budget.
        "sockets_used": ctx.broker.sockets.in_use(),
        "sockets_total": ctx.broker.sockets.limit(),
        "partitions": [],
        "rates_mode": "basic",
        "lepus": lepus,
    });
    if let Some(free) = f.disk_free {
        node["disk_free"] = json!(free);
    }
    if let (Some(used), Some(total)) = (f.open_fds, f.max_fds) {
        node["fd_used"] = json!(used);
        node["fd_total"] = json!(total);
    }
    node
}

async fn nodes(
    State(ctx): State<Ctx>,
    Extension(me): Extension<Caller>,
    Query(rq): Query<RateQuery>,
) -> Result<Json<Value>, ApiError> {
    me.require_monitor()?;
    Ok(Json(Value::Array(vec![node_json(&ctx, &rq)])))
}

async fn node(
    State(ctx): State<Ctx>,
    Extension(me): Extension<Caller>,
    Path(name): Path<String>,
    Query(rq): Query<RateQuery>,
) -> Result<Json<Value>, ApiError> {
    me.require_monitor()?;
    if name != NODE_NAME {
        return Err(ApiError::not_found(format!("node '{name}' does not exist")));
    }
    Ok(Json(node_json(&ctx, &rq)))
}
