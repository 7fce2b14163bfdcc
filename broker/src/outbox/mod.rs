//! The per-connection outbox and its writer task: everything sent to one client goes through
//! one [`Outbox`], in order, and leaves in batches — one write syscall per batch, not per frame.
//!
//! Who writes to the socket:
//! - **The task that produced the frames**, at the end of its batch. A connection task handling
//!   a read buffer runs inside [`batch`]; every outbox it sends to (its own, or the consumer
//!   connection a publish was routed to) joins the batch, and when the batch ends each one is
//!   encoded and written with one non-blocking `try_write`. A delivery thus leaves on the
//!   publisher's thread right after routing, with no hop to another task. This path is taken
//!   only for plain TCP, and only when the writer task is not mid-write.
//! - **The writer task** (`writer`, started by [`outbox`]), for everything else: sends from outside a batch (timers,
//!   store confirmations, the handshake), TLS connections, the rest of a write the socket
//!   would not take at once, heartbeats, and the final flush and shutdown.
//!
//! Ordering: items are queued under the outbox lock in the order they were sent and encoded in
//! that order; bytes are written only by the lock holder (direct path) or by the writer task
//! while `writing` keeps everyone else out, and encoded bytes left over from a partial write
//! always go before newer items. So frames of a channel are never reordered, and a content
//! frame sequence is never interleaved with another channel's frames.
//!
//! Memory: queued items hold `Arc<Message>`s, not encoded bytes; at most [`BATCH_BYTES`] (plus
//! one message) is encoded ahead of the socket.
//!
//! Layering: the outbox sits below the broker state. Channels queue deliveries on it (an
//! [`Outbound`] through [`Outbox::send`]) and never see the connection that owns it; the
//! connection creates it with its writer task ([`outbox`]) and feeds it the socket.

mod writer;

pub(crate) use writer::{outbox, WriteSide};

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::ShortString;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use crate::frame;
use crate::message::Message;

/// Stop encoding into a batch beyond this many bytes (the rest waits for the next write).
const BATCH_BYTES: usize = 256 * 1024;

/// Something to send to the client. Senders: the connection task, and queues delivering to
/// this connection's consumers (they hold the outbox through `ChannelShared`).
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Raw bytes (the protocol header we answer a mismatch with).
    Raw(&'static [u8]),
    /// A method frame.
    Method(u16, AMQPClass),
    /// A method carrying content (deliver, get-ok, return), then header and body frames.
    Content {
        /// The channel.
        channel: u16,
        /// `basic.deliver`, `basic.get-ok` or `basic.return`.
        method: AMQPClass,
        /// The message whose properties and body follow.
        message: Arc<Message>,
    },
    /// A `basic.deliver` to a consumer, then the message's header and body frames. The method
    /// is encoded from shared parts (the consumer's tag, the message's exchange and routing
    /// key), so a delivery copies no names: one `Arc` clone per delivery instead of three
    /// string allocations (a fan-out to N queues makes N deliveries of one message).
    Deliver {
        /// The channel.
        channel: u16,
        /// The consumer's tag, shared with its `queue::Consumer`.
        consumer_tag: Arc<ShortString>,
        /// The channel's delivery tag.
        delivery_tag: u64,
        /// Delivered before.
        redelivered: bool,
        /// The message delivered.
        message: Arc<Message>,
    },
    /// Write what is queued before this, then shut the socket down and stop; later sends are
    /// refused.
    Shutdown,
    /// Negotiated tuning: body frames are cut to `frame_max`; heartbeats every `heartbeat / 2`.
    Tune {
        /// The negotiated frame_max (0 = no limit).
        frame_max: u32,
        /// The negotiated heartbeat interval (`None` = disabled).
        heartbeat: Option<Duration>,
    },
}

/// The outbox refused an item: it was shut down, or its socket failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// One connection's outgoing frames. Held in an `Arc` by the connection task, by each of its
/// channels' `ChannelShared` (so by queues delivering to its consumers), by the writer task,
/// and briefly by a thread's open [`batch`]. Dropping every holder but the writer task does
/// not stop it: only [`Outbound::Shutdown`] or a socket error does.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Queued items and encoded bytes. Locked by a sender for the time it takes to queue an
    /// item, and by a flusher for one encode-and-`try_write`.
    state: Mutex<State>,
    /// Wakes the writer task (it is the only one waiting on it): something to write that no
    /// batch will flush, a partial write to finish, a new heartbeat interval, shutdown.
    wake: Notify,
}

#[derive(Debug)]
struct State {
    /// Items not yet encoded, in send order.
    items: VecDeque<Outbound>,
    /// Encoded bytes not yet written; always written before `items`.
    out: Vec<u8>,
    /// The negotiated frame_max, for cutting bodies.
    frame_max: u32,
    /// The negotiated heartbeat interval.
    heartbeat: Option<Duration>,
    /// The writer task is writing bytes it took out of `out`; nobody else may write.
    writing: bool,
    /// This outbox is in a thread's open batch, which will flush it.
    in_batch: bool,
    /// Bytes went out since the writer's heartbeat timer last fired.
    wrote: bool,
    /// Shut down (or the socket failed): sends are refused, the writer drains and stops.
    closed: bool,
    /// Plain TCP: the write half, for non-blocking writes by whoever holds the lock (clones
    /// live only while the lock is held, and in the writer task while `writing`). `None` for
    /// other streams, and once the writer task has taken it to shut it down.
    tcp: Option<Arc<OwnedWriteHalf>>,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoning only follows a panic elsewhere; the queue is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item`. Inside a [`batch`] the outbox is written when the batch ends; otherwise
    /// the writer task is woken.
    pub(crate) fn send(self: &Arc<Self>, item: Outbound) -> Result<(), Closed> {
        let mut s = self.lock();
        if s.closed {
            return Err(Closed);
        }
        match item {
            Outbound::Tune {
                frame_max,
                heartbeat,
            } => {
                s.frame_max = frame_max;
                s.heartbeat = heartbeat;
                drop(s);
                self.wake.notify_one();
                return Ok(());
            }
            Outbound::Shutdown => {
                s.closed = true;
                drop(s);
                self.wake.notify_one();
                return Ok(());
            }
            item => s.items.push_back(item),
        }
        if s.in_batch || s.writing {
            // The batch, or the writer once its write is done, takes it from here.
            return Ok(());
        }
        if s.tcp.is_some() && join_batch(self) {
            s.in_batch = true;
            return Ok(());
        }
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    /// The end of a batch: encodes what is queued and writes it with one non-blocking write;
    /// whatever the socket does not take is left to the writer task.
    fn flush_now(&self) {
        let mut s = self.lock();
        s.in_batch = false;
        if s.writing || s.closed {
            // The writer task is mid-write or draining; it picks the items up.
            drop(s);
            self.wake.notify_one();
            return;
        }
        let Some(tcp) = s.tcp.clone() else {
            drop(s);
            self.wake.notify_one();
            return;
        };
        let st = &mut *s;
        encode_batch(&mut st.items, &mut st.out, st.frame_max);
        if st.out.is_empty() {
            return;
        }
        match tcp.try_write(&st.out) {
            Ok(n) => {
                st.wrote = true;
                st.out.drain(..n);
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            // The writer task meets the same error on its next write and stops.
            Err(_) => {}
        }
        let rest = !st.out.is_empty() || !st.items.is_empty();
        if st.out.capacity() > 4 * BATCH_BYTES && st.out.is_empty() {
            st.out.shrink_to(16 * 1024);
        }
        drop(s);
        if rest {
            self.wake.notify_one();
        }
    }
}

/// Encodes items from the front of `items` onto `out` until `out` holds a batch's worth.
fn encode_batch(items: &mut VecDeque<Outbound>, out: &mut Vec<u8>, frame_max: u32) {
    while out.len() < BATCH_BYTES {
        let Some(item) = items.pop_front() else {
            return;
        };
        match item {
            Outbound::Raw(bytes) => out.extend_from_slice(bytes),
            Outbound::Method(channel, method) => frame::encode_method(out, channel, method),
            Outbound::Content {
                channel,
                method,
                message,
            } => {
                frame::encode_method(out, channel, method);
                frame::encode_content(out, channel, &message.properties, &message.body, frame_max);
            }
            Outbound::Deliver {
                channel,
                consumer_tag,
                delivery_tag,
                redelivered,
                message,
            } => {
                let fields = frame::DeliverFields {
                    consumer_tag: &consumer_tag,
                    delivery_tag,
                    redelivered,
                    exchange: &message.exchange,
                    routing_key: &message.routing_key,
                };
                frame::encode_deliver(out, channel, &fields);
                frame::encode_content(out, channel, &message.properties, &message.body, frame_max);
            }
            // Handled when sent; never queued.
            Outbound::Tune { .. } | Outbound::Shutdown => {}
        }
    }
}

thread_local! {
    /// The outboxes the current thread's open batch will flush (`None`: no batch open).
    static BATCH: RefCell<Option<Vec<Arc<Outbox>>>> = const { RefCell::new(None) };
}

/// Adds `outbox` to this thread's open batch; false if none is open.
fn join_batch(outbox: &Arc<Outbox>) -> bool {
    BATCH.with(|b| match b.borrow_mut().as_mut() {
        Some(list) => {
            list.push(outbox.clone());
            true
        }
        None => false,
    })
}

/// Runs `work` (synchronous: it cannot yield, so the batch stays on this thread) with every
/// outbox it sends to collected, then writes each of them once. A batch opened inside another
/// one joins the outer batch.
pub(crate) fn batch<R>(work: impl FnOnce() -> R) -> R {
    let opened = BATCH.with(|b| {
        let mut b = b.borrow_mut();
        if b.is_some() {
            return false;
        }
        *b = Some(Vec::new());
        true
    });
    // Flushes on the way out, also if `work` panics: a batch left open would keep this
    // thread's later sends waiting for a flush that never comes.
    let _flush = opened.then_some(BatchEnd);
    work()
}

/// Closes this thread's open batch and writes its outboxes when dropped.
struct BatchEnd;

impl Drop for BatchEnd {
    fn drop(&mut self) {
        let list = BATCH.with(|b| b.borrow_mut().take()).unwrap_or_default();
        for outbox in list {
            outbox.flush_now();
        }
    }
}

impl Outbox {
    fn new(tcp: Option<Arc<OwnedWriteHalf>>) -> Arc<Self> {
        Arc::new(Outbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                out: Vec::with_capacity(16 * 1024),
                frame_max: 131_072,
                heartbeat: None,
                writing: false,
                in_batch: false,
                wrote: false,
                closed: false,
                tcp,
            }),
            wake: Notify::new(),
        })
    }

    /// An outbox with no socket and no writer task: what is sent to it stays queued (unit
    /// tests of structures that hold one).
    #[cfg(test)]
    pub(crate) fn detached() -> Arc<Self> {
        Self::new(None)
    }

    /// How many items wait in the queue (unit tests of what a structure sends).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.lock().items.len()
    }
}

#[cfg(test)]
mod tests;
