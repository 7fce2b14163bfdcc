//! The node-level families: build and identity info (which every shape starts with), object
//! totals, churn counters, and the node's resources (memory, file descriptors, alarms, disk).

use super::*;

pub(super) fn identity(out: &mut Out, shape: &Shape) {
    let version = env!("CARGO_PKG_VERSION");
    out.family(
        "rabbitmq_build_info",
        "untyped",
        "RabbitMQ & Erlang/OTP version info",
    );
    out.sample(
        "rabbitmq_build_info",
        &[
            ("rabbitmq_version", version),
            ("prometheus_plugin_version", version),
            ("prometheus_client_version", version),
            // Lepus runs no Erlang VM; the label is there for the joins that copy it.
            ("erlang_version", "none"),
            ("product_name", "Lepus"),
            ("product_version", version),
        ],
        1,
    );
    out.family(
        "rabbitmq_identity_info",
        "untyped",
        "RabbitMQ node & cluster identity info",
    );
    out.sample(
        "rabbitmq_identity_info",
        &[
            ("rabbitmq_node", NODE_NAME),
            ("rabbitmq_cluster", CLUSTER_NAME),
            ("rabbitmq_cluster_permanent_id", "lepus-cluster-id"),
            ("rabbitmq_endpoint", shape.endpoint()),
        ],
        1,
    );
}

pub(super) fn totals(ctx: &Ctx, out: &mut Out, s: &Scrape) {
    out.single(
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
        ctx.broker.connections.count(),
    );
    out.single(
        "rabbitmq_channels",
        "gauge",
        "Channels currently open",
        ctx.broker.channels.count(),
    );
    let consumers: u64 = s.queues.iter().map(|q| q.figures.consumers).sum();
    out.single(
        "rabbitmq_consumers",
        "gauge",
        "Consumers currently connected",
        consumers,
    );
    out.single(
        "rabbitmq_queues",
        "gauge",
        "Queues available",
        s.queues.len(),
    );
}

pub(super) fn churn(ctx: &Ctx, out: &mut Out, prefix: &str) {
    let (c_open, c_close) = ctx.broker.connections.churn();
    let (ch_open, ch_close) = ctx.broker.channels.churn();
    let mut q = VHostCounters::default();
    for name in ctx.broker.access.vhosts() {
        if let Some(vh) = ctx.broker.vhosts.get(&name) {
            q += vh.stats.counters();
        }
    }
    for (name, help, value) in [
        (
            "connections_opened_total",
            "Total number of connections opened",
            c_open,
        ),
        (
            "connections_closed_total",
            "Total number of connections closed or terminated",
            c_close,
        ),
        (
            "channels_opened_total",
            "Total number of channels opened",
            ch_open,
        ),
        (
            "channels_closed_total",
            "Total number of channels closed",
            ch_close,
        ),
        (
            "queues_declared_total",
            "Total number of queues declared",
            q.queues_declared,
        ),
        (
            "queues_created_total",
            "Total number of queues created",
            q.queues_created,
        ),
        (
            "queues_deleted_total",
            "Total number of queues deleted",
            q.queues_deleted,
        ),
    ] {
        out.single(&format!("{prefix}{name}"), "counter", help, value);
    }
}

pub(super) fn node(ctx: &Ctx, out: &mut Out, n: &NodeFigures) {
    let memory = &ctx.broker.vhosts.memory;
    if let Some(fds) = n.open_fds {
        out.single(
            "rabbitmq_process_open_fds",
            "gauge",
            "Open file descriptors",
            fds,
        );
    }
    if let Some(max) = n.max_fds {
        out.single(
            "rabbitmq_process_max_fds",
            "gauge",
            "Open file descriptors limit",
            max,
        );
    }
    out.single(
        "rabbitmq_process_resident_memory_bytes",
        "gauge",
        "Memory used in bytes",
        n.resident_memory.unwrap_or_else(|| memory.used()),
    );
    out.single(
        "rabbitmq_resident_memory_limit_bytes",
        "gauge",
        "Memory high watermark in bytes",
        memory.watermark(),
    );
    if let Some(free) = n.disk_free {
        out.single(
            "rabbitmq_disk_space_available_bytes",
            "gauge",
            "Disk space available in bytes",
            free,
        );
    }
    out.single(
        "rabbitmq_disk_space_available_limit_bytes",
        "gauge",
        "Free disk space low watermark in bytes",
        ctx.broker.disk_alarm.as_ref().map_or(0, |d| d.limit()),
    );
    out.single(
        "rabbitmq_erlang_uptime_seconds",
        "gauge",
        "Node uptime",
        n.uptime_ms as f64 / 1000.0,
    );
    out.single(
        "rabbitmq_alarms_memory_used_watermark",
        "untyped",
        "is 1 if VM memory watermark alarm is in effect",
        u8::from(memory.alarm_raised()),
    );
    out.single(
        "rabbitmq_alarms_free_disk_space_watermark",
        "untyped",
        "is 1 if free disk space watermark alarm is in effect",
        u8::from(ctx.broker.disk_alarm.as_ref().is_some_and(|d| d.raised())),
    );
    out.single(
        "rabbitmq_alarms_file_descriptor_limit",
        "untyped",
        "is 1 if file descriptor limit alarm is in effect (Lepus has none)",
        0,
    );
    // Distribution links of a one-node "cluster": none (see the module doc).
    out.family(
        "erlang_vm_dist_node_state",
        "gauge",
        "The current state of the distribution link (a single node has none)",
    );
}
