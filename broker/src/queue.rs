//! Queues: ready messages, consumers, and dispatch.
//!
//! Each queue has its own lock ([`Queue::state`]); publishing to one queue never blocks another.
//! Dispatch runs inline in whichever task changed the queue (a publisher enqueuing, a channel
//! acking, a consumer arriving, the housekeeping timer): under the queue lock it hands ready
//! messages, in order, round-robin to consumers that have prefetch credit, until the queue is
//! empty or no consumer has credit. Handing over means calling [`ChannelShared::deliver`], which
//! takes the *channel's* delivery lock (lock order: queue, then channel — never the reverse) and
//! queues the frames on the consumer connection's writer.
//!
//! Messages carry a per-queue sequence number; a message returned by a closing channel goes
//! back to its original position (the ready list stays sorted by sequence number). With
//! `x-max-priority` there is one ready list per priority level, highest served first.
//!
//! Messages that leave by expiry, overflow or rejection are dead-lettered after the lock is
//! released (`VHost::dead_letter`), so a dead-letter cycle cannot deadlock.
//!
//! Paging (the memory budget, see `memory`): a ready message is a 32-byte index entry
//! (sequence number, size, redelivered flag, expiry) plus, normally, its `Arc<Message>`. Past
//! the budget, a persistent message of a durable queue drops the message once the store has
//! its record (`Queue::page_out`, called right after `persistence::Store::enqueue`), as
//! RabbitMQ's lazy queues and CQv2 keep only an index in memory. When a paged-out message
//! reaches the head and a consumer is there (or `basic.get`), the queue reads it back with
//! the following paged-out ones, up to 512 messages or 2 MiB, in one batch
//! (`persistence::Store::read`; blocking `pread`s under the queue lock, normally served by
//! the page cache). Expiry, length limits, purge and delete work on the index alone; a dead
//! letter is read back first. Delivered messages are always in memory, so requeue (reject,
//! nack, channel close) puts the whole message back in place. Every ready message is
//! accounted in the broker's `Memory`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::channel::ChannelShared;
use crate::memory::{Memory, INDEX_ENTRY_COST};
use crate::message::Message;
use crate::persistence::Store;
use crate::vhost::VHost;

/// Most paged-out messages read back from the store in one batch.
const READ_AHEAD_MESSAGES: usize = 512;

/// Body bytes after which a read-back batch stops growing (one message at least).
const READ_AHEAD_BYTES: u64 = 2 * 1024 * 1024;

/// What `x-overflow` says to do when `x-max-length`/`x-max-length-bytes` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Drop (dead-letter) the oldest messages to make room (the default).
    DropHead,
    /// Refuse the new message; a confirming publisher gets `basic.nack`.
    RejectPublish,
    /// Like `RejectPublish`, and dead-letter the refused message.
    RejectPublishDlx,
}

/// The queue arguments we act on, parsed from `queue.declare` arguments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueueConfig {
    /// `x-message-ttl`: milliseconds a message may stay ready.
    pub(crate) message_ttl: Option<u64>,
    /// `x-expires`: milliseconds of disuse after which the queue is deleted.
    pub(crate) expires: Option<u64>,
    /// `x-max-length`: most ready messages.
    pub(crate) max_length: Option<u64>,
    /// `x-max-length-bytes`: most ready body bytes.
    pub(crate) max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub(crate) overflow: Overflow,
    /// `x-dead-letter-exchange`.
    pub(crate) dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub(crate) dead_letter_routing_key: Option<String>,
    /// `x-max-priority` (capped at 255 levels as in RabbitMQ).
    pub(crate) max_priority: Option<u8>,
}

impl QueueConfig {
    /// Parses and validates declare arguments; the error is the 406 detail text.
    pub(crate) fn from_arguments(args: &FieldTable) -> Result<Self, String> {
        let int = |key: &str, min: i64| -> Result<Option<u64>, String> {
            match args.inner().get(key) {
                None => Ok(None),
                Some(v) => match as_i64(v) {
                    Some(n) if n >= min => Ok(Some(n as u64)),
                    _ => Err(format!("invalid arg '{key}' for queue")),
                },
            }
        };
        let string = |key: &str| -> Result<Option<String>, String> {
            match args.inner().get(key) {
                None => Ok(None),
                Some(v) => as_string(v)
                    .map(Some)
                    .ok_or_else(|| format!("invalid arg '{key}' for queue")),
            }
        };
        let overflow = match string("x-overflow")?.as_deref() {
            None | Some("drop-head") => Overflow::DropHead,
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            Some(other) => return Err(format!("invalid arg 'x-overflow' for queue: '{other}'")),
        };
        Ok(Self {
            message_ttl: capped(int("x-message-ttl", 0)?, "x-message-ttl")?,
            expires: capped(int("x-expires", 1)?, "x-expires")?,
            max_length: int("x-max-length", 0)?,
            max_length_bytes: int("x-max-length-bytes", 0)?,
            overflow,
            dead_letter_exchange: string("x-dead-letter-exchange")?,
            dead_letter_routing_key: string("x-dead-letter-routing-key")?,
            max_priority: int("x-max-priority", 0)?.map(|p| p.min(255) as u8),
        })
    }
}

/// The longest TTL or expiry RabbitMQ accepts: ten years, in milliseconds.
pub(crate) const MAX_EXPIRY_MS: u64 = 315_360_000_000;

fn capped(value: Option<u64>, key: &str) -> Result<Option<u64>, String> {
    match value {
        Some(n) if n > MAX_EXPIRY_MS => Err(format!(
            "invalid arg '{key}' for queue: {{value_too_large,{n}}}"
        )),
        other => Ok(other),
    }
}

/// Checks a per-message `expiration` property as RabbitMQ does; the error is the 406 text.
pub(crate) fn check_expiration(expiration: &str) -> Result<(), String> {
    match expiration.parse::<i128>() {
        Err(_) => Err(format!("invalid expiration '{expiration}': no_integer")),
        Ok(n) if n < 0 => Err(format!(
            "invalid expiration '{expiration}': {{value_negative,{n}}}"
        )),
        Ok(n) if n > i128::from(MAX_EXPIRY_MS) => Err(format!(
            "invalid expiration '{expiration}': {{value_too_large,{n}}}"
        )),
        Ok(_) => Ok(()),
    }
}

/// An integer field value of any width.
pub(crate) fn as_i64(v: &AMQPValue) -> Option<i64> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok()?,
        _ => return None,
    })
}

/// A string field value, short or long.
pub(crate) fn as_string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

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

/// A consumer of a queue (`basic.consume`). Held by the queue's consumer list and by its
/// channel's consumer map; dropped from both on cancel, channel close or queue delete.
#[derive(Debug)]
pub(crate) struct Consumer {
    /// The consumer tag, unique within its channel.
    pub(crate) tag: ShortString,
    /// The channel deliveries go to.
    pub(crate) channel: Arc<ChannelShared>,
    /// Deliveries need no ack (and count against no prefetch).
    pub(crate) no_ack: bool,
    /// Asked for exclusive access to the queue.
    pub(crate) exclusive: bool,
    /// Per-consumer prefetch (`basic.qos` global=false before consume); 0 = unlimited.
    pub(crate) prefetch: u32,
    /// `x-priority`: higher-priority consumers with credit are served first.
    pub(crate) priority: i64,
    /// Deliveries not yet acked. Incremented under the queue lock on delivery, decremented by
    /// the channel on ack/nack/reject/requeue.
    pub(crate) in_flight: AtomicU32,
}

impl Consumer {
    /// Takes one unit of prefetch credit (consumer and channel-global) if available.
    fn try_reserve(&self) -> bool {
        if !self.channel.can_deliver() {
            return false;
        }
        if self.no_ack {
            return true;
        }
        if self.prefetch != 0
            && self
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.prefetch).then_some(n + 1)
                })
                .is_err()
        {
            return false;
        }
        if self.prefetch == 0 {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        if !self.channel.try_reserve_global() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back one unit of credit taken by [`Consumer::try_reserve`].
    pub(crate) fn release(&self) {
        if !self.no_ack {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.channel.release_global(1);
        }
    }
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

/// A dead letter waiting to be republished once the queue lock is released.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    /// The message.
    pub(crate) message: Arc<Message>,
    /// `expired`, `rejected` or `maxlen` (the `reason` in `x-death`).
    pub(crate) reason: &'static str,
    /// The letter's sequence number in its queue and whether it is persistent, while its
    /// queue's store still holds it: forgotten by [`DeadLetter::leave`] once the letter is
    /// stored where it goes. `None` when the queue never held it (`reject-publish-dlx`).
    pub(crate) stored: Option<(u64, bool)>,
}

impl DeadLetter {
    /// The letter has been routed (or dropped): `queue`, where it died, forgets it.
    pub(crate) fn leave(self, queue: &Queue) {
        if let Some((seq, persistent)) = self.stored {
            queue.forget_seq(seq, persistent);
        }
    }
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

/// The store a durable queue reports to, and the vhost it is named in there.
#[derive(Debug)]
pub(crate) struct QueuePersistence {
    /// The vhost's store (shared by all its queues).
    pub(crate) store: Arc<dyn Store>,
    /// The vhost's name.
    pub(crate) vhost: String,
}

/// A ready message as the queue's index keeps it: 32 bytes, plus the message itself unless it
/// was paged out (see the module doc).
#[derive(Debug)]
struct ReadyMessage {
    /// Position in this queue.
    seq: u64,
    /// The message; `None` once paged out: the store holds it, and it is read back by `seq`
    /// (`persistence::Store::read`) when it nears the head. Only persistent messages of
    /// durable queues, once their enqueue reached the store, are paged out.
    message: Option<Arc<Message>>,
    /// Expiry as nanoseconds after [`QueueState::epoch`], plus one; 0 = never.
    expires: u64,
    /// Body length in bytes (saturating).
    size: u32,
    /// Delivered before.
    redelivered: bool,
}

#[derive(Debug)]
struct QueueState {
    /// Ready messages per priority level (index = priority), each sorted by `seq`.
    ready: Vec<VecDeque<ReadyMessage>>,
    ready_count: usize,
    ready_bytes: usize,
    /// Consumers in round-robin order: the next candidate is at the front.
    consumers: VecDeque<Arc<Consumer>>,
    /// The next message's sequence number; also the number of messages enqueued so far
    /// (published or restored), which the management API reads as the queue's publish count.
    next_seq: u64,
    /// Messages handed to consumers or `basic.get` so far (the management API's
    /// `deliver_get` of this queue; counted under the lock the delivery already holds).
    delivered: u64,
    deleted: bool,
    /// For auto-delete: only a queue that once had a consumer is deleted when it has none.
    had_consumer: bool,
    /// Last declare/consume/get/cancel, for `x-expires`.
    last_used: Instant,
    /// The origin of [`ReadyMessage::expires`] (the queue's creation; every expiry is later).
    epoch: Instant,
}

impl QueueState {
    fn head_level(&self) -> Option<usize> {
        (0..self.ready.len())
            .rev()
            .find(|&l| !self.ready[l].is_empty())
    }

    /// Takes the head ready message out, accounting it gone from `memory`.
    fn pop_head(&mut self, memory: &Memory) -> Option<ReadyMessage> {
        let level = self.head_level()?;
        let rm = self.ready[level].pop_front()?;
        self.ready_count -= 1;
        self.ready_bytes -= rm.size as usize;
        memory.sub(rm.footprint());
        Some(rm)
    }

    /// Inserts by sequence number, accounting it in `memory`.
    fn insert(&mut self, memory: &Memory, qm: QueuedMessage) {
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
    fn take_all(&mut self, memory: &Memory) -> Vec<ReadyMessage> {
        let mut all = Vec::with_capacity(self.ready_count);
        for level in self.ready.iter_mut() {
            all.extend(level.drain(..));
        }
        memory.sub(all.iter().map(ReadyMessage::footprint).sum());
        self.ready_count = 0;
        self.ready_bytes = 0;
        all
    }

    fn encode_expiry(&self, at: Option<Instant>) -> u64 {
        at.map_or(0, |at| {
            let nanos = at.saturating_duration_since(self.epoch).as_nanos();
            u64::try_from(nanos)
                .unwrap_or(u64::MAX - 1)
                .min(u64::MAX - 1)
                + 1
        })
    }

    fn expires_at(&self, rm: &ReadyMessage) -> Option<Instant> {
        (rm.expires != 0).then(|| self.epoch + Duration::from_nanos(rm.expires - 1))
    }

    /// Whether the head of `level` has expired at `now`.
    fn head_expired(&self, level: usize, now: Instant) -> bool {
        self.ready[level]
            .front()
            .and_then(|rm| self.expires_at(rm))
            .is_some_and(|at| at < now)
    }

    /// Earliest expiry among the heads (RabbitMQ too expires only at the head).
    fn next_expiry(&self) -> Option<Instant> {
        self.ready
            .iter()
            .filter_map(|l| self.expires_at(l.front()?))
            .min()
    }
}

/// What a message held in memory costs besides its index entry: the body, the decoded
/// `Message` (properties, names) and the frame headers that share the body's read buffer.
fn in_memory_cost(size: u32) -> u64 {
    const MESSAGE: u64 = std::mem::size_of::<Message>() as u64 + 128;
    u64::from(size) + MESSAGE
}

impl ReadyMessage {
    /// Bytes it accounts for in [`Memory`]: its index entry, plus the message while in memory
    /// (see [`in_memory_cost`]).
    fn footprint(&self) -> u64 {
        INDEX_ENTRY_COST
            + self
                .message
                .as_ref()
                .map_or(0, |_| in_memory_cost(self.size))
    }

    /// Paged-out messages are persistent by construction.
    fn is_persistent(&self) -> bool {
        self.message.as_ref().is_none_or(|m| m.is_persistent())
    }
}

impl Queue {
    /// A new, empty queue. The caller inserts it into the topology and spawns
    /// [`Queue::housekeeping`].
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
                next_seq: 0,
                delivered: 0,
                deleted: false,
                had_consumer: false,
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

    /// True when persistent messages routed here go to the store.
    pub(crate) fn is_persisted(&self) -> bool {
        self.persistence.is_some()
    }

    /// `qm` left this queue for good (acked, consumed without ack, rejected without requeue,
    /// expired, dropped by a length limit): the store forgets it.
    pub(crate) fn forget(&self, qm: &QueuedMessage) {
        self.forget_seq(qm.seq, qm.message.is_persistent());
    }

    pub(crate) fn forget_seq(&self, seq: u64, persistent: bool) {
        if let Some(p) = &self.persistence {
            if persistent {
                p.store.remove(&p.vhost, &self.name, seq);
            }
        }
    }

    /// True when this queue's persistent bodies can be paged out (durable, with a store that
    /// reads them back).
    fn can_page(&self) -> bool {
        self.persistence
            .as_ref()
            .is_some_and(|p| p.store.can_page())
    }

    /// Drops the body of ready message `seq` from memory if the memory budget says so; its
    /// index entry stays. Call only once the message's enqueue has reached the store (after
    /// `persistence::Store::enqueue`), so that it can be read back.
    pub(crate) fn page_out(&self, seq: u64) {
        if !self.can_page() || !self.memory.should_page() {
            return;
        }
        let mut st = self.lock();
        for list in st.ready.iter_mut() {
            // Almost always the newest message of its level.
            let index = match list.back() {
                Some(last) if last.seq == seq => Some(list.len() - 1),
                _ => list.binary_search_by_key(&seq, |m| m.seq).ok(),
            };
            if let Some(index) = index {
                let rm = &mut list[index];
                if rm.message.as_ref().is_some_and(|m| m.is_persistent()) {
                    rm.message = None;
                    self.memory.sub(in_memory_cost(rm.size));
                }
                return;
            }
        }
    }

    /// Reads paged-out messages at the head of `level` back from the store: a run of up to
    /// [`READ_AHEAD_MESSAGES`] messages or [`READ_AHEAD_BYTES`] bytes, in one batch, so that
    /// draining a paged backlog costs one store read per batch, not per message. Blocking
    /// (`pread`s, normally served by the page cache) under the queue lock.
    fn page_in(&self, st: &mut QueueState, level: usize) {
        let Some(p) = &self.persistence else { return };
        let mut seqs = Vec::new();
        let mut bytes = 0u64;
        for rm in st.ready[level].iter() {
            if rm.message.is_some()
                || seqs.len() >= READ_AHEAD_MESSAGES
                || (bytes >= READ_AHEAD_BYTES && !seqs.is_empty())
            {
                break;
            }
            seqs.push(rm.seq);
            bytes += u64::from(rm.size);
        }
        if seqs.is_empty() {
            return;
        }
        let loaded = p.store.read(&p.vhost, &self.name, &seqs);
        for (rm, message) in st.ready[level].iter_mut().zip(loaded) {
            if let Some(message) = message {
                self.memory.add(in_memory_cost(rm.size));
                rm.message = Some(message);
            }
        }
    }

    /// The message of a ready entry taken out of the queue, read back from the store if it
    /// was paged out. `None` (logged) if the store cannot produce it.
    fn message_of(&self, rm: &ReadyMessage) -> Option<Arc<Message>> {
        if let Some(message) = &rm.message {
            return Some(message.clone());
        }
        let p = self.persistence.as_ref()?;
        let message = p
            .store
            .read(&p.vhost, &self.name, &[rm.seq])
            .pop()
            .flatten();
        if message.is_none() {
            tracing::error!(queue = %self.name, seq = rm.seq, "a paged-out message cannot be read back from the store");
        }
        message
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

    /// Puts a message recovered from the store back at the tail, marked redelivered (it may
    /// have reached a consumer before the restart). Returns its new sequence number. TTLs
    /// restart from now.
    pub(crate) fn restore(&self, message: Arc<Message>) -> u64 {
        let mut st = self.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let ttl = match (self.config.message_ttl, message.expiration_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A TTL too large for the clock never expires (no overflow panic).
        let expires_at = ttl.and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)));
        st.insert(
            &self.memory,
            QueuedMessage {
                seq,
                message,
                redelivered: true,
                expires_at,
            },
        );
        if expires_at.is_some() {
            self.wake.notify_one();
        }
        seq
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A poisoned lock means a panic under it; the state is still structurally valid (every
        // mutation is a single push/pop), so keep serving rather than take the broker down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ready messages and consumers, as `queue.declare-ok` reports them.
    pub(crate) fn counts(&self) -> (u32, u32) {
        let st = self.lock();
        (st.ready_count as u32, st.consumers.len() as u32)
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

    /// Consumers as (consumer tag, channel number, connection id, no_ack, prefetch).
    pub(crate) fn consumer_list(&self) -> Vec<(String, u16, u64, bool, u32)> {
        self.lock()
            .consumers
            .iter()
            .map(|c| {
                (
                    c.tag.as_str().to_owned(),
                    c.channel.id,
                    c.channel.connection_id,
                    c.no_ack,
                    c.prefetch,
                )
            })
            .collect()
    }

    /// Marks the queue used now (resets the `x-expires` clock).
    pub(crate) fn touch(&self) {
        self.lock().last_used = Instant::now();
        self.wake.notify_one();
    }

    /// Adds a message and dispatches. Dead letters from overflow go to `vhost`.
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        vhost: &VHost,
        message: Arc<Message>,
    ) -> EnqueueOutcome {
        let mut dead = Vec::new();
        let outcome = {
            let mut st = self.lock();
            if st.deleted {
                return EnqueueOutcome::Gone;
            }
            let len = message.body.len();
            let full = |st: &QueueState| {
                self.config
                    .max_length
                    .is_some_and(|m| st.ready_count as u64 >= m)
                    || self
                        .config
                        .max_length_bytes
                        .is_some_and(|m| (st.ready_bytes + len) as u64 > m)
            };
            let mut rejected = false;
            if full(&st) {
                match self.config.overflow {
                    Overflow::DropHead => {
                        while full(&st) {
                            match st.pop_head(&self.memory) {
                                Some(rm) => self.drop_ready(rm, "maxlen", &mut dead),
                                None => break,
                            }
                        }
                    }
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
                self.dispatch_locked(&mut st, &mut dead, now, vhost);
                if expires_at.is_some() && st.ready_count > 0 {
                    self.wake.notify_one();
                }
                EnqueueOutcome::Enqueued { seq }
            }
        };
        vhost.dead_letter(self, dead);
        outcome
    }

    /// Hands ready messages to consumers with credit.
    pub(crate) fn dispatch(self: &Arc<Self>, vhost: &VHost) {
        let mut dead = Vec::new();
        {
            let mut st = self.lock();
            if !st.deleted {
                self.dispatch_locked(&mut st, &mut dead, Instant::now(), vhost);
            }
        }
        vhost.dead_letter(self, dead);
    }

    fn dispatch_locked(
        self: &Arc<Self>,
        st: &mut QueueState,
        dead: &mut Vec<DeadLetter>,
        now: Instant,
        vhost: &VHost,
    ) {
        while let Some(level) = st.head_level() {
            if st.head_expired(level, now) {
                if let Some(rm) = st.pop_head(&self.memory) {
                    self.drop_ready(rm, "expired", dead);
                }
                continue;
            }
            let Some(consumer) = Self::next_consumer(st) else {
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
            // A no-ack delivery settles the message as it goes out.
            let settled = consumer.no_ack.then(|| QueuedMessage {
                seq: qm.seq,
                message: qm.message.clone(),
                redelivered: qm.redelivered,
                expires_at: None,
            });
            let redelivered = qm.redelivered;
            match consumer.channel.deliver(&consumer, self, qm) {
                Ok(()) => {
                    st.delivered += 1;
                    vhost.stats.delivered(consumer.no_ack, redelivered);
                    if let Some(qm) = settled {
                        self.forget(&qm);
                    }
                }
                Err(qm) => {
                    // The channel closed under us: forget the consumer, keep the message.
                    consumer.release();
                    st.insert(&self.memory, qm);
                    st.consumers.retain(|c| !Arc::ptr_eq(c, &consumer));
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

    /// Picks the next consumer with credit: the highest priority first, round-robin within it.
    fn next_consumer(st: &mut QueueState) -> Option<Arc<Consumer>> {
        let n = st.consumers.len();
        let top = st.consumers.iter().map(|c| c.priority).max()?;
        let mut fallback_levels = false;
        for _ in 0..n {
            let c = st.consumers.pop_front()?;
            st.consumers.push_back(c.clone());
            if c.priority != top {
                fallback_levels = true;
                continue;
            }
            if c.try_reserve() {
                return Some(c);
            }
        }
        if fallback_levels {
            // Top-priority consumers are all blocked: lower priorities may take it.
            let mut by_priority: Vec<Arc<Consumer>> = st.consumers.iter().cloned().collect();
            by_priority.sort_by_key(|c| std::cmp::Reverse(c.priority));
            for c in by_priority {
                if c.priority != top && c.try_reserve() {
                    if let Some(pos) = st.consumers.iter().position(|x| Arc::ptr_eq(x, &c)) {
                        if let Some(moved) = st.consumers.remove(pos) {
                            st.consumers.push_back(moved);
                        }
                    }
                    return Some(c);
                }
            }
        }
        None
    }

    /// `basic.get`: the next ready message and the count left behind.
    pub(crate) fn get(self: &Arc<Self>, vhost: &VHost) -> Option<(QueuedMessage, u32)> {
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
                    got = Some((qm, st.ready_count as u32));
                    break;
                }
            }
            got
        };
        vhost.dead_letter(self, dead);
        got
    }

    /// Returns unacked messages to their original positions, marked redelivered, and
    /// dispatches them again.
    pub(crate) fn requeue(self: &Arc<Self>, vhost: &VHost, messages: Vec<QueuedMessage>) {
        {
            let mut st = self.lock();
            if st.deleted {
                return;
            }
            for mut qm in messages {
                qm.redelivered = true;
                st.insert(&self.memory, qm);
            }
        }
        self.wake.notify_one();
        self.dispatch(vhost);
    }

    /// Adds a consumer without dispatching to it yet (the caller sends `consume-ok` first,
    /// then calls [`Queue::dispatch`]). Fails with the 403 text when exclusivity forbids it.
    pub(crate) fn add_consumer(
        &self,
        vhost: &VHost,
        consumer: Arc<Consumer>,
    ) -> Result<(), String> {
        {
            let mut st = self.lock();
            if st.deleted {
                return Err(format!("queue '{}' was deleted", self.name));
            }
            if st.consumers.iter().any(|c| c.exclusive)
                || (consumer.exclusive && !st.consumers.is_empty())
            {
                return Err(format!(
                    "queue '{}' in vhost '{}' in exclusive use",
                    self.name, vhost.name
                ));
            }
            st.consumers.push_back(consumer);
            st.had_consumer = true;
            st.last_used = Instant::now();
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Removes a consumer; true when the queue should now be auto-deleted.
    pub(crate) fn remove_consumer(&self, tag: &str, channel: &Arc<ChannelShared>) -> bool {
        let mut st = self.lock();
        st.consumers
            .retain(|c| !(c.tag.as_str() == tag && Arc::ptr_eq(&c.channel, channel)));
        st.last_used = Instant::now();
        self.wake.notify_one();
        self.auto_delete && st.had_consumer && st.consumers.is_empty() && !st.deleted
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
        drop(st);
        self.wake.notify_one();
        (n, consumers)
    }

    /// The queue's timer: expires messages at the head when their TTL passes (even with no
    /// consumer), and deletes the queue after `x-expires` of disuse. Ends when the queue is
    /// deleted. Holds only weak references between wake-ups' work.
    pub(crate) async fn housekeeping(queue: Weak<Queue>, vhost: Weak<VHost>) {
        loop {
            let (Some(q), Some(vh)) = (queue.upgrade(), vhost.upgrade()) else {
                return;
            };
            let now = Instant::now();
            let mut dead = Vec::new();
            let (deadline, expire_queue) = {
                let mut st = q.lock();
                if st.deleted {
                    return;
                }
                while let Some(level) = st.head_level() {
                    let expired = st.ready[level]
                        .front()
                        .and_then(|m| st.expires_at(m))
                        .is_some_and(|at| at <= now);
                    if !expired {
                        break;
                    }
                    if let Some(rm) = st.pop_head(&q.memory) {
                        q.drop_ready(rm, "expired", &mut dead);
                    }
                }
                let idle_deadline = q
                    .config
                    .expires
                    .filter(|_| st.consumers.is_empty())
                    .and_then(|ms| st.last_used.checked_add(Duration::from_millis(ms)));
                let expire_queue = idle_deadline.is_some_and(|at| at <= now);
                let deadline = match (st.next_expiry(), idle_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                (deadline, expire_queue)
            };
            vh.dead_letter(&q, dead);
            if expire_queue {
                vh.delete_queue_now(&q.name);
                return;
            }
            let wake = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            // Keep the strong references only while waiting on this queue's own Notify; the
            // vhost reference is dropped so a vhost could go away.
            drop(vh);
            tokio::select! {
                _ = wake => {}
                _ = q.wake.notified() => {}
            }
        }
    }
}
