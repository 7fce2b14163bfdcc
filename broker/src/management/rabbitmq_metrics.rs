//! RabbitMQ's Prometheus families (`rabbitmq_prometheus`'s names, types and labels), so that
//! RabbitMQ's Grafana dashboards and alert rules work on Lepus unchanged, plus Lepus's own
//! figures under `lepus_*`.
//!
//! Three shapes, as the plugin serves them:
//! - **aggregated** (`/metrics` by default): one sample per family, summed over every vhost,
//!   queue, channel; no object names.
//! - **per-object** (`/metrics/per-object`, or `/metrics` with `--prometheus-per-object`): the
//!   queue families per queue (`vhost`, `queue` labels), the channel families per channel
//!   (`channel` label: its name, as `/api/channels` shows it; RabbitMQ's label is an Erlang
//!   pid). The message counters RabbitMQ keeps per channel and exchange
//!   (`rabbitmq_channel_messages_published_total`, `..._unroutable_dropped_total`, ...) Lepus
//!   keeps per vhost: they are totals in every shape.
//! - **detailed** (`/metrics/detailed?family=...&vhost=...`): only the families asked for,
//!   per object, named `rabbitmq_detailed_*`.
//!
//! Every shape starts with `rabbitmq_build_info` and `rabbitmq_identity_info` (its
//! `rabbitmq_endpoint` label says which shape), which the dashboards join on.
//!
//! What Lepus has no equivalent for is left out rather than invented (Erlang VM, Raft, stream
//! and per-process reduction families), except where RabbitMQ's own single node reports a
//! constant: `rabbitmq_alarms_file_descriptor_limit` is 0 (Lepus has no such alarm);
//! `rabbitmq_alarms_free_disk_space_watermark` and `rabbitmq_disk_space_available_limit_bytes`
//! are the disk alarm's (0 without a data directory). `erlang_vm_dist_node_state`
//! is served with no sample: a single node has no distribution links, so RabbitMQ's
//! "insufficient distribution links" rule compares nothing, as on a one-node RabbitMQ.
//! Labels: `rabbitmq_global_*` carry `protocol="amqp091"` (and `queue_type=
//! "rabbit_classic_queue"` where RabbitMQ has it); `rabbitmq_message_size_bytes` is a
//! histogram with RabbitMQ's buckets and `le` values as Prometheus normalizes them.
//!
//! The `lepus_*` families before this module (`lepus_messages_published_total`,
//! `lepus_queue_messages_ready`, ...) became their RabbitMQ names:
//! `rabbitmq_global_messages_received_total`, `rabbitmq_global_messages_delivered_total`,
//! `rabbitmq_global_messages_acknowledged_total`, `rabbitmq_queue_messages_ready`,
//! `rabbitmq_queue_messages_unacked`, `rabbitmq_queue_consumers`, `rabbitmq_queues`,
//! `rabbitmq_connections`, `rabbitmq_channels`, `rabbitmq_process_resident_memory_bytes`.
//! Lepus-only: `lepus_build_info`, `lepus_memory_budget_bytes`, `lepus_memory_accounted_bytes`,
//! `lepus_memory_paging`, and with a data directory `lepus_store_*` (fsyncs, write batches,
//! records and bytes written, segments, live messages).

mod global;
mod node_families;
use global::*;
use node_families::*;

use std::fmt::{Display, Write};
use std::sync::Arc;

use super::node::{NodeFigures, CLUSTER_NAME, NODE_NAME};
use super::Ctx;
use crate::metrics::{VHostCounters, SIZE_BUCKETS};
use crate::queue::QueueFigures;

/// Which shape to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Totals only.
    Aggregated,
    /// Per queue and per channel.
    PerObject,
    /// The named families only, per object, for the named vhosts (all when empty).
    Detailed {
        /// RabbitMQ's family names (`queue_coarse_metrics`, `queue_consumer_count`, ...).
        families: Vec<String>,
        /// Only queues of these vhosts (`vhost=` parameters); every vhost when empty.
        vhosts: Vec<String>,
    },
}

impl Shape {
    fn endpoint(&self) -> &'static str {
        match self {
            Self::Aggregated => "aggregated",
            Self::PerObject => "per-object",
            Self::Detailed { .. } => "detailed",
        }
    }
}

/// Prometheus text format 0.0.4 being written.
struct Out {
    text: String,
}

/// Escapes a label value: backslash, double quote and newline.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        let _ = writeln!(self.text, "# HELP {name} {help}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// One queue, as the queue families report it.
struct QueueRow {
    vhost: String,
    name: String,
    figures: QueueFigures,
}

/// Everything a scrape reports, read once.
struct Scrape {
    counters: VHostCounters,
    queues: Vec<QueueRow>,
    node: NodeFigures,
}

fn scrape(ctx: &Ctx, vhosts_filter: &[String]) -> Scrape {
    let mut counters = VHostCounters::default();
    let mut queues = Vec::new();
    for name in ctx.broker.access.vhosts() {
        let Some(vh) = ctx.broker.vhosts.get(&name) else {
            continue;
        };
        counters += vh.stats.counters();
        if !vhosts_filter.is_empty() && !vhosts_filter.contains(&name) {
            continue;
        }
        let mut qs: Vec<_> = vh.read().queues.values().cloned().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        for q in qs {
            queues.push(QueueRow {
                vhost: name.clone(),
                name: q.name.clone(),
                figures: q.figures(),
            });
        }
    }
    Scrape {
        counters,
        queues,
        node: NodeFigures::read(ctx),
    }
}

/// The queue families: (name, type, help, value), RabbitMQ's family group each belongs to.
type QueueFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&QueueFigures) -> u64,
);

const QUEUE_COARSE: [QueueFamily; 3] = [
    (
        "queue_messages_ready",
        "gauge",
        "Messages ready to be delivered to consumers",
        |f| f.ready,
    ),
    (
        "queue_messages_unacked",
        "gauge",
        "Messages delivered to consumers but not yet acknowledged",
        |f| f.unacked,
    ),
    (
        "queue_messages",
        "gauge",
        "Sum of ready and unacknowledged messages - total queue depth",
        |f| f.ready + f.unacked,
    ),
];

const QUEUE_CONSUMERS: [QueueFamily; 1] =
    [("queue_consumers", "gauge", "Consumers on a queue", |f| {
        f.consumers
    })];

const QUEUE_METRICS: [QueueFamily; 3] = [
    (
        "queue_messages_ready_bytes",
        "gauge",
        "Size in bytes of ready messages",
        |f| f.ready_bytes,
    ),
    (
        "queue_messages_published_total",
        "counter",
        "Total number of messages published into a queue",
        |f| f.published,
    ),
    (
        "queue_messages_delivered_total",
        "counter",
        "Total number of messages delivered or fetched from a queue",
        |f| f.delivered,
    ),
];

fn queue_families(
    out: &mut Out,
    prefix: &str,
    families: &[QueueFamily],
    rows: &[QueueRow],
    per_object: bool,
) {
    for (name, kind, help, value) in families {
        let name = format!("{prefix}{name}");
        out.family(&name, kind, help);
        if per_object {
            for r in rows {
                out.sample(
                    &name,
                    &[("vhost", &r.vhost), ("queue", &r.name)],
                    value(&r.figures),
                );
            }
        } else {
            out.sample(
                &name,
                &[],
                rows.iter().map(|r| value(&r.figures)).sum::<u64>(),
            );
        }
    }
}

/// Renders `shape` (RabbitMQ's families, then Lepus's own unless detailed).
pub(crate) fn render(ctx: &Ctx, shape: &Shape) -> String {
    let mut out = Out {
        text: String::with_capacity(16 * 1024),
    };
    identity(&mut out, shape);
    match shape {
        Shape::Detailed { families, vhosts } => {
            let s = scrape(ctx, vhosts);
            let has = |f: &str| families.iter().any(|x| x == f);
            let p = "rabbitmq_detailed_";
            if has("queue_coarse_metrics") {
                queue_families(&mut out, p, &QUEUE_COARSE, &s.queues, true);
            }
            if has("queue_consumer_count") || has("queue_metrics") {
                queue_families(&mut out, p, &QUEUE_CONSUMERS, &s.queues, true);
            }
            if has("queue_metrics") {
                queue_families(&mut out, p, &QUEUE_METRICS, &s.queues, true);
            }
            if has("connection_churn_metrics") {
                churn(ctx, &mut out, p);
            }
            if has("vhost_status") {
                let name = "rabbitmq_cluster_vhost_status";
                out.family(name, "gauge", "Whether a given vhost is running");
                for v in ctx.broker.access.vhosts() {
                    if vhosts.is_empty() || vhosts.contains(&v) {
                        let up = u8::from(ctx.broker.vhosts.get(&v).is_some());
                        out.sample(name, &[("vhost", &v)], up);
                    }
                }
            }
        }
        Shape::Aggregated | Shape::PerObject => {
            let per_object = *shape == Shape::PerObject;
            let s = scrape(ctx, &[]);
            totals(ctx, &mut out, &s);
            churn(ctx, &mut out, "rabbitmq_");
            node(ctx, &mut out, &s.node);
            global(ctx, &mut out, &s);
            queue_families(&mut out, "rabbitmq_", &QUEUE_COARSE, &s.queues, per_object);
            queue_families(
                &mut out,
                "rabbitmq_",
                &QUEUE_CONSUMERS,
                &s.queues,
                per_object,
            );
            queue_families(&mut out, "rabbitmq_", &QUEUE_METRICS, &s.queues, per_object);
            channels(ctx, &mut out, per_object);
            lepus(ctx, &mut out);
        }
    }
    out.text
}

fn channels(ctx: &Ctx, out: &mut Out, per_object: bool) {
    let conns: std::collections::HashMap<u64, String> = ctx
        .broker
        .connections
        .list()
        .into_iter()
        .map(|c| (c.id, c.name()))
        .collect();
    let list: Vec<(String, Arc<crate::channel::ChannelShared>)> = ctx
        .broker
        .channels
        .list()
        .into_iter()
        .filter_map(|ch| {
            let conn = conns.get(&ch.connection_id)?;
            Some((format!("{conn} ({})", ch.id), ch))
        })
        .collect();
    type ChannelFamily = (
        &'static str,
        &'static str,
        fn(&crate::channel::ChannelShared) -> u64,
    );
    let families: [ChannelFamily; 7] = [
        (
            "rabbitmq_channel_consumers",
            "Consumers on a channel",
            |c| c.consumers().len() as u64,
        ),
        (
            "rabbitmq_channel_messages_unacked",
            "Delivered but not yet acknowledged messages",
            |c| c.unacked_count() as u64,
        ),
        (
            "rabbitmq_channel_messages_unconfirmed",
            "Published but not yet confirmed messages",
            |c| u64::from(c.unconfirmed()),
        ),
        (
            "rabbitmq_channel_messages_uncommitted",
            "Messages received in a transaction but not yet committed",
            |c| u64::from(c.uncommitted().0),
        ),
        (
            "rabbitmq_channel_acks_uncommitted",
            "Message acknowledgements in a transaction not yet committed",
            |c| u64::from(c.uncommitted().1),
        ),
        (
            "rabbitmq_consumer_prefetch",
            "Limit of unacknowledged messages for each consumer",
            |c| {
                u64::from(
                    c.consumer_prefetch
                        .load(std::sync::atomic::Ordering::Relaxed),
                )
            },
        ),
        (
            "rabbitmq_channel_prefetch",
            "Total limit of unacknowledged messages for all consumers on a channel",
            |c| u64::from(c.global_prefetch.load(std::sync::atomic::Ordering::Relaxed)),
        ),
    ];
    for (name, help, value) in families {
        out.family(name, "gauge", help);
        if per_object {
            for (label, ch) in &list {
                out.sample(name, &[("channel", label)], value(ch));
            }
        } else {
            out.sample(name, &[], list.iter().map(|(_, ch)| value(ch)).sum::<u64>());
        }
    }
}

fn lepus(ctx: &Ctx, out: &mut Out) {
    let memory = &ctx.broker.vhosts.memory;
    out.family("lepus_build_info", "gauge", "Lepus version");
    out.sample(
        "lepus_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    out.single(
        "lepus_memory_budget_bytes",
        "gauge",
        "Memory budget (--memory-budget); persistent bodies are paged out past a quarter of it",
        memory.budget(),
    );
    out.single(
        "lepus_memory_accounted_bytes",
        "gauge",
        "Memory accounted to queued messages (bodies in memory and index entries)",
        memory.used(),
    );
    out.single(
        "lepus_memory_paging",
        "gauge",
        "1 while newly queued persistent bodies are paged out to the store",
        u8::from(memory.should_page()),
    );
    if let Some(s) = ctx.broker.vhosts.store.stats() {
        out.single(
            "lepus_store_fsyncs_total",
            "counter",
            "fdatasync calls on store segments",
            s.fsyncs,
        );
        out.single(
            "lepus_store_write_batches_total",
            "counter",
            "Batches written to the store (group commit)",
            s.batches,
        );
        out.single(
            "lepus_store_records_written_total",
            "counter",
            "Records written to the store",
            s.records,
        );
        out.single(
            "lepus_store_written_bytes_total",
            "counter",
            "Bytes written to store segments",
            s.bytes,
        );
        out.single(
            "lepus_store_segments",
            "gauge",
            "Segment files on disk",
            s.segments,
        );
        out.single(
            "lepus_store_segments_deleted_total",
            "counter",
            "Segment files deleted by compaction",
            s.segments_deleted,
        );
        out.single(
            "lepus_store_messages",
            "gauge",
            "Persistent messages stored and not yet removed",
            s.live_messages,
        );
    }
}

#[cfg(test)]
mod tests;
