//! The ready list: messages waiting for a consumer, one FIFO per priority level, with their
//! expiry deadlines and the memory of their index entries (a message charges its own memory).

use super::*;

/// A ready message as the queue's index keeps it: 32 bytes, plus the message itself unless it
/// was paged out (see the module doc).
#[derive(Debug)]
pub(super) struct ReadyMessage {
    /// Position in this queue.
    pub(super) seq: u64,
    /// The message; `None` once paged out: the store holds it, and it is read back by `seq`
    /// (`persistence::Persistence::read`) when it nears the head. Only persistent messages of
    /// durable queues, once their enqueue reached the store, are paged out.
    pub(super) message: Option<Arc<Message>>,
    /// Expiry as nanoseconds after [`QueueState::epoch`], plus one; 0 = never.
    pub(super) expires: u64,
    /// Body length in bytes (saturating).
    pub(super) size: u32,
    /// Delivered before.
    pub(super) redelivered: bool,
}

#[derive(Debug)]
pub(super) struct QueueState {
    /// Ready messages per priority level (index = priority), each sorted by `seq`.
    pub(super) ready: Vec<VecDeque<ReadyMessage>>,
    pub(super) ready_count: usize,
    pub(super) ready_bytes: usize,
    /// Consumers in round-robin order: the next candidate is at the front.
    pub(super) consumers: VecDeque<Arc<Consumer>>,
    /// How many of `consumers` are out of the rotation for lack of credit
    /// ([`Consumer::blocked`]); zero spares the round robin a pass over them.
    pub(super) blocked_consumers: usize,
    /// The next message's sequence number; also the number of messages enqueued so far
    /// (published or restored), which the management API reads as the queue's publish count.
    pub(super) next_seq: u64,
    /// Messages handed to consumers or `basic.get` so far (the management API's
    /// `deliver_get` of this queue; counted under the lock the delivery already holds).
    pub(super) delivered: u64,
    pub(super) deleted: bool,
    /// For auto-delete: only a queue that once had a consumer is deleted when it has none.
    pub(super) had_consumer: bool,
    /// A quorum queue with `x-overflow = reject-publish` went over its limit: it refuses
    /// publishes until it is back at 80% of it (RabbitMQ 3.10's `rabbit_fifo`).
    pub(super) publish_blocked: bool,
    /// Last declare/consume/get/cancel, for `x-expires`.
    pub(super) last_used: Instant,
    /// The origin of [`ReadyMessage::expires`] (the queue's creation; every expiry is later).
    pub(super) epoch: Instant,
}

impl QueueState {
    pub(super) fn head_level(&self) -> Option<usize> {
        (0..self.ready.len())
            .rev()
            .find(|&l| !self.ready[l].is_empty())
    }

    /// Takes the head ready message out, accounting it gone from `memory`.
    pub(super) fn pop_head(&mut self, memory: &Memory) -> Option<ReadyMessage> {
        let level = self.head_level()?;
        let rm = self.ready[level].pop_front()?;
        self.ready_count -= 1;
        self.ready_bytes -= rm.size as usize;
        memory.sub(rm.footprint());
        Some(rm)
    }

    /// Inserts by sequence number, accounting it in `memory`.
    pub(super) fn insert(&mut self, memory: &Memory, qm: QueuedMessage) {
        let level = usize::from(qm.message.priority()).min(self.ready.len() - 1);
        let rm = ReadyMessage {
            seq: qm.seq,
            size: u32::try_from(qm.message.body.len()).unwrap_or(u32::MAX),
            message: Some(qm.message),
            expires: self.encode_expiry(qm.expires_at),
            redelivered: qm.redelivered,
        };
        self.ready_count += 1;
        self.ready_bytes += rm.size as usize;
        memory.add(rm.footprint());
        let list = &mut self.ready[level];
        if list.back().is_none_or(|last| last.seq < rm.seq) {
            list.push_back(rm);
        } else {
            let at = list.partition_point(|m| m.seq < rm.seq);
            list.insert(at, rm);
        }
    }

    /// Drops every ready message, returning them (for the store to forget).
    pub(super) fn take_all(&mut self, memory: &Memory) -> Vec<ReadyMessage> {
        let mut all = Vec::with_capacity(self.ready_count);
        for level in self.ready.iter_mut() {
            all.extend(level.drain(..));
        }
        memory.sub(all.iter().map(ReadyMessage::footprint).sum());
        self.ready_count = 0;
        self.ready_bytes = 0;
        all
    }

    pub(super) fn encode_expiry(&self, at: Option<Instant>) -> u64 {
        at.map_or(0, |at| {
            let nanos = at.saturating_duration_since(self.epoch).as_nanos();
            u64::try_from(nanos)
                .unwrap_or(u64::MAX - 1)
                .min(u64::MAX - 1)
                + 1
        })
    }

    pub(super) fn expires_at(&self, rm: &ReadyMessage) -> Option<Instant> {
        (rm.expires != 0).then(|| self.epoch + Duration::from_nanos(rm.expires - 1))
    }

    /// Whether the head of `level` has expired at `now`.
    pub(super) fn head_expired(&self, level: usize, now: Instant) -> bool {
        self.ready[level]
            .front()
            .and_then(|rm| self.expires_at(rm))
            .is_some_and(|at| at < now)
    }

    /// Earliest expiry among the heads (RabbitMQ too expires only at the head).
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.ready
            .iter()
            .filter_map(|l| self.expires_at(l.front()?))
            .min()
    }
}

impl ReadyMessage {
    /// Bytes the queue accounts for it in [`Memory`]: its index entry. The message itself
    /// is charged by the message for as long as it lives (`crate::message::Held`), in the
    /// queue or anywhere else.
    pub(super) fn footprint(&self) -> u64 {
        INDEX_ENTRY_COST
    }

    /// Paged-out messages are persistent by construction.
    pub(super) fn is_persistent(&self) -> bool {
        self.message.as_ref().is_none_or(|m| m.is_persistent())
    }
}
