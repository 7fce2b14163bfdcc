//! Prometheus text exposition format 0.0.4 (`# HELP`, `# TYPE`, one sample per line, label
//! values escaped), in two forms, as `rabbitmq_prometheus` serves them:
//!
//! - `GET /metrics`, no login: totals over the whole broker, **no labels**, so no vhost or
//!   queue name leaves the broker unauthenticated (RabbitMQ's aggregated default).
//! - `GET /metrics/per-object`: the same families, per vhost (counters) and per queue
//!   (gauges). Unlike RabbitMQ, which serves it to anyone, it needs basic auth by a user
//!   tagged `monitoring` or `administrator` (the users who may see every vhost's totals). The
//!   operator can instead make `/metrics` itself per-object and open
//!   (`BrokerBuilder::prometheus_per_object`, `--prometheus-per-object`, RabbitMQ's
//!   `prometheus.return_per_object_metrics`).
//!
//! | metric                                   | type    | labels (per-object) |
//! |------------------------------------------|---------|---------------------|
//! | `lepus_messages_published_total`         | counter | vhost               |
//! | `lepus_messages_delivered_total`         | counter | vhost               |
//! | `lepus_messages_acked_total`             | counter | vhost               |
//! | `lepus_queue_messages_ready`             | gauge   | vhost, queue        |
//! | `lepus_queue_messages_unacked`           | gauge   | vhost, queue        |
//! | `lepus_queue_consumers`                  | gauge   | vhost, queue        |
//! | `lepus_queues`                           | gauge   | (never)             |
//! | `lepus_connections`                      | gauge   | (never)             |
//! | `lepus_channels`                         | gauge   | (never)             |
//! | `lepus_process_resident_memory_bytes`    | gauge   | (never; Linux only) |

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::{ApiError, Caller, Ctx};

/// `/metrics` (no authentication, like `rabbitmq_prometheus`).
pub(super) fn routes() -> Router<Ctx> {
    Router::new().route("/metrics", get(metrics))
}

/// `/metrics/per-object` (behind the API's authentication layer).
pub(super) fn authenticated_routes() -> Router<Ctx> {
    Router::new().route("/metrics/per-object", get(per_object))
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    render(&ctx, ctx.broker.config.prometheus_per_object)
}

async fn per_object(State(ctx): State<Ctx>, Extension(me): Extension<Caller>) -> Response {
    if !me.sees_everyone() {
        return ApiError::forbidden("Not monitor user").into_response();
    }
    render(&ctx, true)
}

/// One sample per vhost and per queue (`per_object`), or one total per family.
fn render(ctx: &Ctx, per_object: bool) -> Response {
    let vhosts: Vec<_> = ctx
        .broker
        .access
        .vhosts()
        .iter()
        .filter_map(|n| ctx.broker.vhosts.get(n))
        .collect();
    let mut out = String::new();
    for (i, (name, help)) in [
        ("lepus_messages_published_total", "Messages published."),
        (
            "lepus_messages_delivered_total",
            "Messages delivered to consumers or fetched with basic.get.",
        ),
        ("lepus_messages_acked_total", "Deliveries acknowledged."),
    ]
    .into_iter()
    .enumerate()
    {
        family(&mut out, name, "counter", help);
        let mut total = 0;
        for vh in &vhosts {
            let s = vh.stats.snapshot();
            let v = [s.0, s.1, s.2][i];
            total += v;
            if per_object {
                let _ = writeln!(out, "{name}{{vhost=\"{}\"}} {v}", escape(&vh.name));
            }
        }
        if !per_object {
            let _ = writeln!(out, "{name} {total}");
        }
    }
    let mut queues = Vec::new();
    for vh in &vhosts {
        let mut qs: Vec<_> = vh.read().queues.values().cloned().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        for q in qs {
            let (ready, consumers) = q.counts();
            queues.push((
                &vh.name,
                q.name.clone(),
                u64::from(ready),
                q.unacked_by_consumers(),
                u64::from(consumers),
            ));
        }
    }
    for (i, (name, help)) in [
        ("lepus_queue_messages_ready", "Messages ready for delivery."),
        (
            "lepus_queue_messages_unacked",
            "Messages delivered to consumers and not yet acknowledged.",
        ),
        ("lepus_queue_consumers", "Consumers on the queue."),
    ]
    .into_iter()
    .enumerate()
    {
        family(&mut out, name, "gauge", help);
        let mut total = 0;
        for (vh, q, ready, unacked, consumers) in &queues {
            let v = [*ready, *unacked, *consumers][i];
            total += v;
            if per_object {
                let _ = writeln!(
                    out,
                    "{name}{{vhost=\"{}\",queue=\"{}\"}} {v}",
                    escape(vh),
                    escape(q)
                );
            }
        }
        if !per_object {
            let _ = writeln!(out, "{name} {total}");
        }
    }
    family(&mut out, "lepus_queues", "gauge", "Queues.");
    let _ = writeln!(out, "lepus_queues {}", queues.len());
    family(
        &mut out,
        "lepus_connections",
        "gauge",
        "Open client connections.",
    );
    let _ = writeln!(out, "lepus_connections {}", ctx.broker.connections.count());
    family(&mut out, "lepus_channels", "gauge", "Open channels.");
    let _ = writeln!(out, "lepus_channels {}", ctx.broker.channels.count());
    if let Some(rss) = resident_memory() {
        family(
            &mut out,
            "lepus_process_resident_memory_bytes",
            "gauge",
            "Resident memory of the broker process.",
        );
        let _ = writeln!(out, "lepus_process_resident_memory_bytes {rss}");
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// VmRSS from `/proc/self/status`, in bytes (None where there is no procfs).
fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
