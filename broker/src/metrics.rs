//! Message counters of one vhost (received, routed, confirmed, delivered by kind, acked, queue
//! lifecycle), read by the management API's overview, the dashboard's rate sampler and the
//! Prometheus endpoints, which sum them into RabbitMQ's `rabbitmq_global_*` families.
//!
//! Concurrency: plain relaxed atomics, incremented by connection tasks (publish, confirm, get,
//! ack) and by queue dispatch (deliveries); readers only need eventually consistent totals.
//! They are monotonic for the vhost's lifetime, as Prometheus counters must be. A publish
//! touches two counters (its size bucket and the byte sum), a delivery one; the publish-side
//! and delivery-side counters live on separate cache lines, so publisher and consumer cores do
//! not bounce one line between them.

use std::ops::AddAssign;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (inclusive, bytes) of the message size histogram, RabbitMQ's
/// `rabbitmq_message_size_bytes` buckets (`rabbit_msg_size_metrics`); the last bucket is
/// `+Inf`.
pub(crate) const SIZE_BUCKETS: [u64; 8] = [
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
];

/// The histogram bucket of a body of `size` bytes (index into `[.., +Inf]`).
fn size_bucket(size: u64) -> usize {
    SIZE_BUCKETS
        .iter()
        .position(|&le| size <= le)
        .unwrap_or(SIZE_BUCKETS.len())
}

/// Counters written by publishing connections.
#[derive(Debug, Default)]
#[repr(align(64))]
struct PublishSide {
    /// Body bytes received (`rabbitmq_message_size_bytes_sum`).
    bytes: AtomicU64,
    /// Publishes per size bucket (not cumulative; the last one is `+Inf`). Their sum is the
    /// number of messages received.
    by_size: [AtomicU64; SIZE_BUCKETS.len() + 1],
    /// Publishes on channels in confirm mode.
    received_confirm: AtomicU64,
    /// Publishes confirmed with `basic.ack`.
    confirmed: AtomicU64,
    /// Unroutable publishes dropped (not mandatory).
    unroutable_dropped: AtomicU64,
    /// Unroutable mandatory publishes returned with `basic.return`.
    unroutable_returned: AtomicU64,
}

/// Counters written by queue dispatch and consuming connections.
#[derive(Debug, Default)]
#[repr(align(64))]
struct DeliverySide {
    /// Deliveries to `basic.consume` consumers with no-ack.
    consume_auto_ack: AtomicU64,
    /// Deliveries to consumers that ack.
    consume_manual_ack: AtomicU64,
    /// `basic.get` with no-ack that returned a message.
    get_auto_ack: AtomicU64,
    /// `basic.get` with ack that returned a message.
    get_manual_ack: AtomicU64,
    /// Deliveries (of any kind) with the redelivered flag set.
    redelivered: AtomicU64,
    /// `basic.get` that found the queue empty.
    get_empty: AtomicU64,
    /// Deliveries acknowledged by `basic.ack`.
    acked: AtomicU64,
}

/// Counters of queue lifecycle events (rare).
#[derive(Debug, Default)]
struct QueueLifecycle {
    /// `queue.declare` calls that succeeded (new or existing queue, not passive).
    declared: AtomicU64,
    /// Queues created.
    created: AtomicU64,
    /// Queues deleted (by any path).
    deleted: AtomicU64,
}

/// Counters of one vhost.
#[derive(Debug, Default)]
pub(crate) struct VHostStats {
    publish: PublishSide,
    delivery: DeliverySide,
    queues: QueueLifecycle,
}

/// A copy of the counters at one moment (summable over vhosts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VHostCounters {
    /// Messages received from publishers.
    pub(crate) received: u64,
    /// Their body bytes.
    pub(crate) received_bytes: u64,
    /// Messages received per size bucket (not cumulative; the last is `+Inf`).
    pub(crate) received_by_size: [u64; SIZE_BUCKETS.len() + 1],
    /// Messages received on confirming channels.
    pub(crate) received_confirm: u64,
    /// Messages confirmed to publishers.
    pub(crate) confirmed: u64,
    /// Unroutable messages dropped.
    pub(crate) unroutable_dropped: u64,
    /// Unroutable messages returned.
    pub(crate) unroutable_returned: u64,
    /// Deliveries to no-ack consumers.
    pub(crate) delivered_consume_auto_ack: u64,
    /// Deliveries to acking consumers.
    pub(crate) delivered_consume_manual_ack: u64,
    /// Messages fetched by no-ack `basic.get`.
    pub(crate) delivered_get_auto_ack: u64,
    /// Messages fetched by acking `basic.get`.
    pub(crate) delivered_get_manual_ack: u64,
    /// Redeliveries.
    pub(crate) redelivered: u64,
    /// Empty `basic.get`s.
    pub(crate) get_empty: u64,
    /// Acknowledged deliveries.
    pub(crate) acked: u64,
    /// Queue declarations.
    pub(crate) queues_declared: u64,
    /// Queues created.
    pub(crate) queues_created: u64,
    /// Queues deleted.
    pub(crate) queues_deleted: u64,
}

impl VHostCounters {
    /// Every delivery: consumed and fetched, with or without ack (RabbitMQ's `deliver_get`).
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered_consume_auto_ack
            + self.delivered_consume_manual_ack
            + self.delivered_get_auto_ack
            + self.delivered_get_manual_ack
    }

    /// Messages routed to at least one queue (or to a direct reply-to consumer).
    pub(crate) fn routed(&self) -> u64 {
        self.received
            .saturating_sub(self.unroutable_dropped + self.unroutable_returned)
    }
}

impl AddAssign for VHostCounters {
    fn add_assign(&mut self, o: Self) {
        self.received += o.received;
        self.received_bytes += o.received_bytes;
        for (a, b) in self.received_by_size.iter_mut().zip(o.received_by_size) {
            *a += b;
        }
        self.received_confirm += o.received_confirm;
        self.confirmed += o.confirmed;
        self.unroutable_dropped += o.unroutable_dropped;
        self.unroutable_returned += o.unroutable_returned;
        self.delivered_consume_auto_ack += o.delivered_consume_auto_ack;
        self.delivered_consume_manual_ack += o.delivered_consume_manual_ack;
        self.delivered_get_auto_ack += o.delivered_get_auto_ack;
        self.delivered_get_manual_ack += o.delivered_get_manual_ack;
        self.redelivered += o.redelivered;
        self.get_empty += o.get_empty;
        self.acked += o.acked;
        self.queues_declared += o.queues_declared;
        self.queues_created += o.queues_created;
        self.queues_deleted += o.queues_deleted;
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl VHostStats {
    /// One more message received from a publisher, with a body of `size` bytes.
    pub(crate) fn published(&self, size: u64) {
        bump(&self.publish.by_size[size_bucket(size)]);
        self.publish.bytes.fetch_add(size, Ordering::Relaxed);
    }

    /// One more publish on a confirming channel.
    pub(crate) fn received_confirm(&self) {
        bump(&self.publish.received_confirm);
    }

    /// One more publish confirmed with `basic.ack`.
    pub(crate) fn confirmed(&self) {
        bump(&self.publish.confirmed);
    }

    /// One more unroutable publish: returned (`mandatory`) or dropped.
    pub(crate) fn unroutable(&self, returned: bool) {
        bump(if returned {
            &self.publish.unroutable_returned
        } else {
            &self.publish.unroutable_dropped
        });
    }

    /// One more delivery to a consumer.
    pub(crate) fn delivered(&self, no_ack: bool, redelivered: bool) {
        bump(if no_ack {
            &self.delivery.consume_auto_ack
        } else {
            &self.delivery.consume_manual_ack
        });
        if redelivered {
            bump(&self.delivery.redelivered);
        }
    }

    /// One more message handed out by `basic.get`.
    pub(crate) fn fetched(&self, no_ack: bool, redelivered: bool) {
        bump(if no_ack {
            &self.delivery.get_auto_ack
        } else {
            &self.delivery.get_manual_ack
        });
        if redelivered {
            bump(&self.delivery.redelivered);
        }
    }

    /// One more `basic.get` on an empty queue.
    pub(crate) fn get_empty(&self) {
        bump(&self.delivery.get_empty);
    }

    /// `n` more acks.
    pub(crate) fn acked(&self, n: u64) {
        self.delivery.acked.fetch_add(n, Ordering::Relaxed);
    }

    /// One more successful `queue.declare`.
    pub(crate) fn queue_declared(&self) {
        bump(&self.queues.declared);
    }

    /// One more queue created.
    pub(crate) fn queue_created(&self) {
        bump(&self.queues.created);
    }

    /// One more queue deleted.
    pub(crate) fn queue_deleted(&self) {
        bump(&self.queues.deleted);
    }

    /// Every counter now.
    pub(crate) fn counters(&self) -> VHostCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let received_by_size = std::array::from_fn(|i| get(&self.publish.by_size[i]));
        VHostCounters {
            received: received_by_size.iter().sum(),
            received_bytes: get(&self.publish.bytes),
            received_by_size,
            received_confirm: get(&self.publish.received_confirm),
            confirmed: get(&self.publish.confirmed),
            unroutable_dropped: get(&self.publish.unroutable_dropped),
            unroutable_returned: get(&self.publish.unroutable_returned),
            delivered_consume_auto_ack: get(&self.delivery.consume_auto_ack),
            delivered_consume_manual_ack: get(&self.delivery.consume_manual_ack),
            delivered_get_auto_ack: get(&self.delivery.get_auto_ack),
            delivered_get_manual_ack: get(&self.delivery.get_manual_ack),
            redelivered: get(&self.delivery.redelivered),
            get_empty: get(&self.delivery.get_empty),
            acked: get(&self.delivery.acked),
            queues_declared: get(&self.queues.declared),
            queues_created: get(&self.queues.created),
            queues_deleted: get(&self.queues.deleted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fall_in_rabbitmq_buckets_upper_bound_inclusive() {
        assert_eq!(size_bucket(0), 0);
        assert_eq!(size_bucket(100), 0);
        assert_eq!(size_bucket(101), 1);
        assert_eq!(size_bucket(1_000_000), 4);
        assert_eq!(size_bucket(50_000_001), 7);
        assert_eq!(size_bucket(100_000_001), 8);
        assert_eq!(size_bucket(u64::MAX), 8);
    }

    #[test]
    fn counters_add_up() {
        let s = VHostStats::default();
        s.published(10);
        s.published(2_000);
        s.unroutable(true);
        s.delivered(false, false);
        s.delivered(true, true);
        s.fetched(false, true);
        s.acked(2);
        let c = s.counters();
        assert_eq!(c.received, 2);
        assert_eq!(c.received_bytes, 2_010);
        assert_eq!(c.received_by_size[..3], [1, 0, 1]);
        assert_eq!(c.routed(), 1);
        assert_eq!(c.delivered(), 3);
        assert_eq!(c.redelivered, 2);
        let mut sum = c;
        sum += c;
        assert_eq!(sum.delivered(), 6);
        assert_eq!(sum.received_by_size[2], 2);
    }
}
