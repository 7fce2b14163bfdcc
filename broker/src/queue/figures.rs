//! What a queue reports of itself: the counts `queue.declare-ok` carries and the figures the
//! management API shows, each read under one lock.

use super::*;

/// A queue's counts and counters at one moment ([`Queue::figures`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct QueueFigures {
    /// Ready messages.
    pub(crate) ready: u64,
    /// Body bytes of the ready messages.
    pub(crate) ready_bytes: u64,
    /// Deliveries to consumers awaiting an ack.
    pub(crate) unacked: u64,
    /// Consumers.
    pub(crate) consumers: u64,
    /// Messages enqueued so far.
    pub(crate) published: u64,
    /// Messages delivered or fetched so far.
    pub(crate) delivered: u64,
}

impl Queue {
    /// Ready messages and consumers, as `queue.declare-ok` reports them. A quorum queue with
    /// a single active consumer counts only the active one, as RabbitMQ 3.10 does (its waiting
    /// consumers are not in rabbit_fifo's consumer map).
    pub(crate) fn counts(&self) -> (u32, u32) {
        let st = self.lock();
        let mut consumers = st.consumers.len();
        if self.config.single_active_consumer && self.config.queue_type == QueueType::Quorum {
            consumers = consumers.min(1);
        }
        (st.ready_count as u32, consumers as u32)
    }

    /// What the management API shows of the queue, read under one lock.
    pub(crate) fn figures(&self) -> QueueFigures {
        let st = self.lock();
        QueueFigures {
            ready: st.ready_count as u64,
            ready_bytes: st.ready_bytes as u64,
            unacked: st
                .consumers
                .iter()
                .map(|c| u64::from(c.in_flight.load(std::sync::atomic::Ordering::Relaxed)))
                .sum(),
            consumers: st.consumers.len() as u64,
            published: st.next_seq,
            delivered: st.delivered,
        }
    }
}
