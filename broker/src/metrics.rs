//! Message counters of one vhost (published, delivered, acked), read by the management API's
//! overview and the Prometheus `/metrics` endpoint.
//!
//! Concurrency: plain relaxed atomics, incremented by connection tasks (publish, ack, get) and
//! by queue dispatch (deliveries); readers only need eventually consistent totals. They are
//! monotonic for the vhost's lifetime, as Prometheus counters must be.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one vhost.
#[derive(Debug, Default)]
pub(crate) struct VHostStats {
    /// Messages accepted by `basic.publish` (routed or not).
    published: AtomicU64,
    /// Messages delivered to consumers or handed out by `basic.get`.
    delivered: AtomicU64,
    /// Deliveries acknowledged by `basic.ack`.
    acked: AtomicU64,
}

impl VHostStats {
    /// One more publish.
    pub(crate) fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// One more delivery.
    pub(crate) fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` more acks.
    pub(crate) fn acked(&self, n: u64) {
        self.acked.fetch_add(n, Ordering::Relaxed);
    }

    /// (published, delivered, acked) now.
    pub(crate) fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.published.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
        )
    }
}
