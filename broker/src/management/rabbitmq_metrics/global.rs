//! The `rabbitmq_global_*` families (messages received, routed, delivered, acknowledged,
//! confirmed, returned, dead-lettered... with RabbitMQ's labels) and the message-size histogram.

use super::*;

pub(super) fn global(ctx: &Ctx, out: &mut Out, s: &Scrape) {
    let c = &s.counters;
    let proto: &[(&str, &str)] = &[("protocol", "amqp091")];
    let classic: &[(&str, &str)] = &[
        ("protocol", "amqp091"),
        ("queue_type", "rabbit_classic_queue"),
    ];
    let publishers = ctx
        .broker
        .channels
        .list()
        .iter()
        .filter(|ch| ch.is_publisher())
        .count() as u64;
    let consumers: u64 = s.queues.iter().map(|q| q.figures.consumers).sum();
    /// (name, type, help, labels, value).
    type Family<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], u64);
    let families: [Family<'_>; 16] = [
        ("rabbitmq_global_consumers", "gauge", "Current number of consumers", proto, consumers),
        ("rabbitmq_global_publishers", "gauge", "Current number of publishers", proto, publishers),
        (
            "rabbitmq_global_messages_received_total",
            "counter",
            "Total number of messages received from publishers",
            proto,
            c.received,
        ),
        (
            "rabbitmq_global_messages_received_confirm_total",
            "counter",
            "Total number of messages received from publishers expecting confirmations",
            proto,
            c.received_confirm,
        ),
        (
            "rabbitmq_global_messages_routed_total",
            "counter",
            "Total number of messages routed to queues or streams",
            proto,
            c.routed(),
        ),
        (
            "rabbitmq_global_messages_unroutable_dropped_total",
            "counter",
            "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
            proto,
            c.unroutable_dropped,
        ),
        (
            "rabbitmq_global_messages_unroutable_returned_total",
            "counter",
            "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
            proto,
            c.unroutable_returned,
        ),
        (
            "rabbitmq_global_messages_confirmed_total",
            "counter",
            "Total number of messages confirmed to publishers",
            proto,
            c.confirmed,
        ),
        (
            "rabbitmq_global_messages_delivered_total",
            "counter",
            "Total number of messages delivered to consumers",
            classic,
            c.delivered(),
        ),
        (
            "rabbitmq_global_messages_delivered_consume_manual_ack_total",
            "counter",
            "Total number of messages delivered to consumers using basic.consume with manual acknowledgment",
            classic,
            c.delivered_consume_manual_ack,
        ),
        (
            "rabbitmq_global_messages_delivered_consume_auto_ack_total",
            "counter",
            "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment",
            classic,
            c.delivered_consume_auto_ack,
        ),
        (
            "rabbitmq_global_messages_delivered_get_manual_ack_total",
            "counter",
            "Total number of messages delivered to consumers using basic.get with manual acknowledgment",
            classic,
            c.delivered_get_manual_ack,
        ),
        (
            "rabbitmq_global_messages_delivered_get_auto_ack_total",
            "counter",
            "Total number of messages delivered to consumers using basic.get with automatic acknowledgment",
            classic,
            c.delivered_get_auto_ack,
        ),
        (
            "rabbitmq_global_messages_get_empty_total",
            "counter",
            "Total number of times basic.get operations fetched no message",
            classic,
            c.get_empty,
        ),
        (
            "rabbitmq_global_messages_redelivered_total",
            "counter",
            "Total number of messages redelivered to consumers",
            classic,
            c.redelivered,
        ),
        (
            "rabbitmq_global_messages_acknowledged_total",
            "counter",
            "Total number of messages acknowledged by consumers",
            classic,
            c.acked,
        ),
    ];
    for (name, kind, help, labels, value) in families {
        out.family(name, kind, help);
        out.sample(name, labels, value);
    }
    // The channel families RabbitMQ sums per channel, exchange and queue; Lepus counts them
    // per vhost, so they come as totals in every shape.
    let channel_totals: [(&str, &str, u64); 11] = [
        (
            "rabbitmq_channel_messages_published_total",
            "Total number of messages published into an exchange on a channel",
            c.received,
        ),
        (
            "rabbitmq_channel_messages_confirmed_total",
            "Total number of messages published into an exchange and confirmed on the channel",
            c.confirmed,
        ),
        (
            "rabbitmq_channel_messages_unroutable_returned_total",
            "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
            c.unroutable_returned,
        ),
        (
            "rabbitmq_channel_messages_unroutable_dropped_total",
            "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
            c.unroutable_dropped,
        ),
        (
            "rabbitmq_channel_get_ack_total",
            "Total number of messages fetched with basic.get in manual acknowledgement mode",
            c.delivered_get_manual_ack,
        ),
        (
            "rabbitmq_channel_get_total",
            "Total number of messages fetched with basic.get in automatic acknowledgement mode",
            c.delivered_get_auto_ack,
        ),
        (
            "rabbitmq_channel_messages_delivered_ack_total",
            "Total number of messages delivered to consumers in manual acknowledgement mode",
            c.delivered_consume_manual_ack,
        ),
        (
            "rabbitmq_channel_messages_delivered_total",
            "Total number of messages delivered to consumers in automatic acknowledgement mode",
            c.delivered_consume_auto_ack,
        ),
        (
            "rabbitmq_channel_messages_redelivered_total",
            "Total number of messages redelivered to consumers",
            c.redelivered,
        ),
        (
            "rabbitmq_channel_messages_acked_total",
            "Total number of messages acknowledged by consumers",
            c.acked,
        ),
        (
            "rabbitmq_channel_get_empty_total",
            "Total number of times basic.get operations fetched no message",
            c.get_empty,
        ),
    ];
    for (name, help, value) in channel_totals {
        out.single(name, "counter", help, value);
    }
    // The message size histogram: cumulative buckets, `le` as Prometheus normalizes floats.
    let name = "rabbitmq_message_size_bytes";
    out.family(
        name,
        "histogram",
        "Size of messages received from publishers",
    );
    let mut cumulative = 0u64;
    let bucket = format!("{name}_bucket");
    for (i, n) in c.received_by_size.iter().enumerate() {
        cumulative += n;
        let le = match SIZE_BUCKETS.get(i) {
            Some(&bound) => prometheus_float(bound),
            None => "+Inf".to_owned(),
        };
        out.sample(&bucket, &[("protocol", "amqp091"), ("le", &le)], cumulative);
    }
    out.sample(&format!("{name}_sum"), proto, c.received_bytes);
    out.sample(&format!("{name}_count"), proto, cumulative);
}

/// A bucket bound as Prometheus writes a float label (`100.0`, `1e+06`): Go's `%g`-style
/// shortest form with an exponent from 1e6 up, and `.0` on the small integers.
pub(super) fn prometheus_float(v: u64) -> String {
    if v >= 1_000_000 {
        let exponent = (v as f64).log10().floor() as i32;
        let mantissa = v as f64 / 10f64.powi(exponent);
        format!("{mantissa}e+{exponent:02}")
    } else {
        format!("{v}.0")
    }
}
