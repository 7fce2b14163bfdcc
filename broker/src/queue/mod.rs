//! Queues: ready messages, consumers, and dispatch.
//!
//! Each queue has its own lock ([`Queue::state`]); publishing to one queue never blocks another.
//! Dispatch runs inline in whichever task changed the queue (a publisher enqueuing, a channel
//! acking, a consumer arriving, the housekeeping timer): under the queue lock it hands ready
//! messages, in order, round-robin to consumers that have prefetch credit, until the queue is
//! empty or no consumer has credit. Handing over means calling [`ConsumerChannel::deliver`]
//! (the channel, as far as a queue knows it), which takes the *channel's* delivery lock (lock order: queue, then channel — never the reverse) and
//! queues the frames on the consumer connection's writer.
//!
//! Messages carry a per-queue sequence number; a message returned by a closing channel goes
//! back to its original position (the ready list stays sorted by sequence number). With
//! `x-max-priority` there is one ready list per priority level, highest served first.
//!
//! Messages that leave by expiry, overflow or rejection are returned to the caller as
//! [`DeadLetter`]s (`enqueue`, `dispatch`, `get`, `requeue`, `expire` return them); the vhost
//! republishes them after the queue lock is released (`VHost::dead_letter`), so a dead-letter
//! cycle cannot deadlock, and a queue never calls up into its vhost.
//!
//! Paging (the memory budget, see `memory`): a ready message is a 32-byte index entry
//! (sequence number, size, redelivered flag, expiry) plus, normally, its `Arc<Message>`. Past
//! the budget, a persistent message of a durable queue drops the message once the store has
//! its record (`Queue::page_out`, called right after `persistence::Persistence::enqueue`), as
//! RabbitMQ's lazy queues and CQv2 keep only an index in memory. When a paged-out message
//! reaches the head and a consumer is there (or `basic.get`), the queue reads it back with
//! the following paged-out ones, up to 512 messages or 2 MiB, in one batch
//! (`persistence::Persistence::read`; blocking `pread`s under the queue lock, normally served by
//! the page cache). Expiry, length limits, purge and delete work on the index alone; a dead
//! letter is read back first. Delivered messages are always in memory, so requeue (reject,
//! nack, channel close) puts the whole message back in place. Every ready message is
//! accounted in the broker's `Memory`.

mod arguments;
mod consumer;
mod dead_letter;
mod figures;
mod housekeeping;
mod limits;
mod paging;
mod queue_type;
mod ready;
pub(crate) use dead_letter::DeadLetter;

pub(crate) use arguments::{check_expiration, Overflow, QueueConfig};
pub(crate) use consumer::{Consumer, ConsumerChannel};
pub(crate) use figures::QueueFigures;
pub(crate) use paging::QueuePersistence;
pub(crate) use queue_type::QueueType;
use ready::{QueueState, ReadyMessage};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::memory::{Memory, INDEX_ENTRY_COST};
use crate::message::{Account, Message};
use crate::metrics::VHostStats;
use crate::persistence::Persistence;

/// A message in a queue (ready, or unacked in a channel).
#[derive(Debug, Clone)]
pub(crate) struct QueuedMessage {
    /// Position in this queue; requeued messages go back by this number.
    pub(crate) seq: u64,
    /// The shared message.
    pub(crate) message: Arc<Message>,
    /// Delivered before (the `redelivered` flag of the next delivery).
    pub(crate) redelivered: bool,
    /// When it expires (queue TTL or per-message expiration, whichever is sooner).
    pub(crate) expires_at: Option<Instant>,
}

/// Why a queue enqueue did not keep the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnqueueOutcome {
    /// Kept (ready or already delivered); `seq` is its position.
    Enqueued {
        /// The queue's sequence number for the message.
        seq: u64,
    },
    /// Refused by `x-overflow = reject-publish`.
    Rejected,
    /// The queue was deleted meanwhile.
    Gone,
}

/// A queue.
#[derive(Debug)]
pub(crate) struct Queue {
    /// The queue name.
    pub(crate) name: String,
    /// Survives restarts (recorded for the durability work).
    pub(crate) durable: bool,
    /// Deleted after its last consumer goes away.
    pub(crate) auto_delete: bool,
    /// The connection that owns it when exclusive.
    pub(crate) exclusive_owner: Option<u64>,
    /// The parsed arguments we act on.
    pub(crate) config: QueueConfig,
    /// The declare's arguments as given, those we do not act on included (the management
    /// API, definitions and the durable topology keep them).
    pub(crate) arguments: FieldTable,
    /// Mutable state; see the module doc for the lock order.
    state: Mutex<QueueState>,
    /// Wakes the housekeeping task (new expiring message, consumer change, deletion).
    wake: Notify,
    /// Where its persistent messages are recorded: set by `VHost::insert_queue` for durable,
    /// non-exclusive queues, `None` otherwise.
    pub(crate) persistence: Option<QueuePersistence>,
    /// The broker's memory accounting (shared by every queue; set by `VHost::insert_queue`):
    /// ready messages are accounted in it, and it says when to page bodies out.
    pub(crate) memory: Arc<Memory>,
}

impl Queue {
    /// A new, empty queue. The caller inserts it into the topology and spawns
    /// `VHost::housekeeping` (its timer).
    pub(crate) fn new(
        name: String,
        durable: bool,
        auto_delete: bool,
        exclusive_owner: Option<u64>,
        config: QueueConfig,
    ) -> Self {
        let levels = config.max_priority.map_or(1, |p| usize::from(p) + 1);
        Self {
            name,
            durable,
            auto_delete,
            exclusive_owner,
            config,
            arguments: FieldTable::default(),
            state: Mutex::new(QueueState {
                ready: (0..levels).map(|_| VecDeque::new()).collect(),
                ready_count: 0,
                ready_bytes: 0,
                consumers: VecDeque::new(),
                blocked_consumers: 0,
                next_seq: 0,
                delivered: 0,
                deleted: false,
                had_consumer: false,
                publish_blocked: false,
                last_used: Instant::now(),
                epoch: Instant::now(),
            }),
            wake: Notify::new(),
            persistence: None,
            memory: Arc::new(Memory::unlimited()),
        }
    }

    /// Sets the declare arguments the queue reports (they must be those `config` was parsed
    /// from).
    pub(crate) fn with_arguments(mut self, arguments: FieldTable) -> Self {
        self.arguments = arguments;
        self
    }

    /// A ready entry leaves for good (expiry, overflow): it becomes a dead letter if the queue
    /// has a dead-letter exchange (paged-out bodies are read back only then), which the store
    /// forgets once it is stored where it goes; else the store forgets it now.
    fn drop_ready(&self, rm: ReadyMessage, reason: &'static str, dead: &mut Vec<DeadLetter>) {
        if self.config.dead_letter_exchange.is_some() {
            if let Some(message) = self.message_of(&rm) {
                dead.push(DeadLetter {
                    message,
                    reason,
                    stored: Some((rm.seq, rm.is_persistent())),
                });
                return;
            }
        }
        self.forget_seq(rm.seq, rm.is_persistent());
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A poisoned lock means a panic under it; the state is still structurally valid (every
        // mutation is a single push/pop), so keep serving rather than take the broker down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the queue used now (resets the `x-expires` clock).
    pub(crate) fn touch(&self) {
        self.lock().last_used = Instant::now();
        self.wake.notify_one();
    }

    /// Adds a message and dispatches (deliveries counted in `stats`). Returns what became of
    /// it and the dead letters of overflow and expiry, for `VHost::dead_letter`.
    #[must_use = "dead letters must be handed to VHost::dead_letter"]
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        stats: &VHostStats,
        message: Arc<Message>,
    ) -> (EnqueueOutcome, Vec<DeadLetter>) {
        let mut dead = Vec::new();
        let outcome = {
            let mut st = self.lock();
            if st.deleted {
                return (EnqueueOutcome::Gone, dead);
            }
            let len = message.body.len();
            // Would the queue be over its limits with this message added? (reject-publish)
            let full = |st: &QueueState| {
                self.config
                    .max_length
                    .is_some_and(|m| st.ready_count as u64 >= m)
                    || self
                        .config
                        .max_length_bytes
                        .is_some_and(|m| (st.ready_bytes + len) as u64 > m)
            };
            let quorum_reject = self.config.queue_type == QueueType::Quorum
                && self.config.overflow == Overflow::RejectPublish;
            let mut rejected = false;
            if quorum_reject {
                // A quorum queue takes the message that goes over the limit and refuses the
                // next ones, until it is back at 80% of the limit (rabbit_fifo's soft limit).
                if st.publish_blocked && self.below_soft_limit(&st) {
                    st.publish_blocked = false;
                }
                rejected = st.publish_blocked;
            } else if full(&st) {
                match self.config.overflow {
                    // drop-head trims after the message is in (below), as RabbitMQ does.
                    Overflow::DropHead => {}
                    Overflow::RejectPublish => rejected = true,
                    Overflow::RejectPublishDlx => {
                        rejected = true;
                        dead.push(DeadLetter {
                            message: message.clone(),
                            reason: "maxlen",
                            stored: None,
                        });
                    }
                }
            }
            if rejected {
                EnqueueOutcome::Rejected
            } else {
                let seq = st.next_seq;
                st.next_seq += 1;
                let now = Instant::now();
                let ttl = match (self.config.message_ttl, message.expiration_ms()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                // A TTL too large for the clock never expires (no overflow panic).
                let expires_at = ttl.and_then(|ms| now.checked_add(Duration::from_millis(ms)));
                st.insert(
                    &self.memory,
                    QueuedMessage {
                        seq,
                        message,
                        redelivered: false,
                        expires_at,
                    },
                );
                // Dispatch with the enqueue instant, so a message with TTL 0 still goes to a
                // consumer that is ready for it (and expires at once otherwise), as in RabbitMQ.
                self.dispatch_locked(&mut st, &mut dead, now, stats);
                if quorum_reject && self.over_limit(&st) {
                    st.publish_blocked = true;
                }
                // drop-head: what a consumer did not take is trimmed from the head until the
                // queue is within its limits, the new message included (RabbitMQ enqueues,
                // then drops from the head: with x-max-length 0, or a body over
                // x-max-length-bytes, the message itself goes).
                self.drop_head_to_limits(&mut st, &mut dead);
                // Then what has expired at the head by now, a TTL-0 message that no consumer
                // took included (RabbitMQ's drop_expired_msgs after a publish: expired when
                // now >= expiry; the dispatch above compares strictly, so that a consumer
                // ready for it still gets it).
                self.drop_expired_heads(&mut st, &mut dead, now);
                if expires_at.is_some() && st.ready_count > 0 {
                    self.wake.notify_one();
                }
                EnqueueOutcome::Enqueued { seq }
            }
        };
        (outcome, dead)
    }

    /// Hands ready messages to consumers with credit (deliveries counted in `stats`); returns
    /// the messages that expired on the way, for `VHost::dead_letter`.
    #[must_use = "dead letters must be handed to VHost::dead_letter"]
    pub(crate) fn dispatch(self: &Arc<Self>, stats: &VHostStats) -> Vec<DeadLetter> {
        let mut dead = Vec::new();
        let mut st = self.lock();
        if !st.deleted {
            self.dispatch_locked(&mut st, &mut dead, Instant::now(), stats);
        }
        dead
    }

    fn dispatch_locked(
        self: &Arc<Self>,
        st: &mut QueueState,
        dead: &mut Vec<DeadLetter>,
        now: Instant,
        stats: &VHostStats,
    ) {
        while let Some(level) = st.head_level() {
            if st.head_expired(level, now) {
                if let Some(rm) = st.pop_head(&self.memory) {
                    self.drop_ready(rm, "expired", dead);
                }
                continue;
            }
            let Some(consumer) = self.next_consumer(st) else {
                break;
            };
            if st.ready[level]
                .front()
                .is_some_and(|rm| rm.message.is_none())
            {
                self.page_in(st, level);
            }
            let Some(qm) = self.pop_loaded(st) else {
                consumer.release();
                continue;
            };
            // A no-ack delivery settles the message as it goes out: the store forgets it by
            // sequence number (no clone of the message's `Arc` per delivery just for that).
            let settled = consumer
                .no_ack
                .then(|| (qm.seq, qm.message.is_persistent()));
            let redelivered = qm.redelivered;
            match consumer.channel.deliver(&consumer, self, qm) {
                Ok(()) => {
                    st.delivered += 1;
                    stats.delivered(consumer.no_ack, redelivered);
                    if let Some((seq, persistent)) = settled {
                        self.forget_seq(seq, persistent);
                    }
                }
                Err(qm) => {
                    // The channel closed under us: forget the consumer (handing a single
                    // active consumer over, and the loop serves the successor), keep the
                    // message.
                    consumer.release();
                    st.insert(&self.memory, qm);
                    if let Some(i) = st.consumers.iter().position(|c| Arc::ptr_eq(c, &consumer)) {
                        self.remove_at(st, i);
                    }
                }
            }
        }
    }

    /// Pops the head, which the caller made sure is in memory (see [`Queue::page_in`]). A
    /// paged-out head that could not be read back is dropped (logged), returning `None`.
    fn pop_loaded(&self, st: &mut QueueState) -> Option<QueuedMessage> {
        let rm = st.pop_head(&self.memory)?;
        let expires_at = st.expires_at(&rm);
        match rm.message {
            Some(message) => Some(QueuedMessage {
                seq: rm.seq,
                message,
                redelivered: rm.redelivered,
                expires_at,
            }),
            None => {
                tracing::error!(queue = %self.name, seq = rm.seq, "a paged-out message cannot be read back from the store; dropped");
                self.forget_seq(rm.seq, true);
                None
            }
        }
    }

    /// `basic.get`: the next ready message and the count left behind, and the messages that
    /// expired on the way, for `VHost::dead_letter`.
    #[must_use = "dead letters must be handed to VHost::dead_letter"]
    pub(crate) fn get(self: &Arc<Self>) -> (Option<(QueuedMessage, u32)>, Vec<DeadLetter>) {
        let mut dead = Vec::new();
        let got = {
            let mut st = self.lock();
            st.last_used = Instant::now();
            let now = Instant::now();
            let mut got = None;
            while let Some(level) = st.head_level() {
                if st.head_expired(level, now) {
                    if let Some(rm) = st.pop_head(&self.memory) {
                        self.drop_ready(rm, "expired", &mut dead);
                    }
                    continue;
                }
                if st.ready[level]
                    .front()
                    .is_some_and(|rm| rm.message.is_none())
                {
                    self.page_in(&mut st, level);
                }
                if let Some(qm) = self.pop_loaded(&mut st) {
                    st.delivered += 1;
                    // RabbitMQ drops the expired messages this fetch brought to the head
                    // before it counts what is left (`fetch` then `drop_expired_msgs`).
                    while let Some(level) = st.head_level() {
                        if !st.head_expired(level, now) {
                            break;
                        }
                        match st.pop_head(&self.memory) {
                            Some(rm) => self.drop_ready(rm, "expired", &mut dead),
                            None => break,
                        }
                    }
                    got = Some((qm, st.ready_count as u32));
                    break;
                }
            }
            got
        };
        (got, dead)
    }

    /// Returns unacked messages to their original positions, marked redelivered, and
    /// dispatches them again (deliveries counted in `stats`); returns the messages the
    /// queue's limits or expiry dropped, for `VHost::dead_letter`.
    #[must_use = "dead letters must be handed to VHost::dead_letter"]
    pub(crate) fn requeue(
        self: &Arc<Self>,
        stats: &VHostStats,
        messages: Vec<QueuedMessage>,
    ) -> Vec<DeadLetter> {
        let mut dead = Vec::new();
        {
            let mut st = self.lock();
            if st.deleted {
                return dead;
            }
            for mut qm in messages {
                qm.redelivered = true;
                st.insert(&self.memory, qm);
            }
            // RabbitMQ's requeue_and_run: the queue's limits apply to requeued messages too,
            // before they are dispatched again (found by difftest).
            self.drop_head_to_limits(&mut st, &mut dead);
        }
        self.wake.notify_one();
        dead.extend(self.dispatch(stats));
        dead
    }

    /// Drops every ready message; returns how many there were.
    pub(crate) fn purge(&self) -> u32 {
        let mut st = self.lock();
        // One by one, not a store-wide purge: unacked messages survive `queue.purge`.
        let purged = st.take_all(&self.memory);
        for rm in &purged {
            self.forget_seq(rm.seq, rm.is_persistent());
        }
        purged.len() as u32
    }

    /// Marks the queue deleted and takes its consumers (to notify) and ready count.
    pub(crate) fn mark_deleted(&self) -> (u32, Vec<Arc<Consumer>>) {
        let mut st = self.lock();
        st.deleted = true;
        // The store forgets a deleted queue's messages as a whole (`VHost::delete_queue_now`).
        let n = st.take_all(&self.memory).len() as u32;
        let consumers = st.consumers.drain(..).collect();
        st.blocked_consumers = 0;
        drop(st);
        self.wake.notify_one();
        (n, consumers)
    }
}
