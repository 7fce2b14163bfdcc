//! Channels: the part shared with queues ([`ChannelShared`]: delivery tags, unacked messages,
//! prefetch credit, consumers) and the part only the connection task touches ([`Channel`]:
//! content assembly, confirm and tx state).
//!
//! Concurrency: queues call [`ChannelShared::deliver`] from any task while holding their own
//! lock; the channel's `delivery` lock is always taken *after* a queue lock, and the channel
//! never takes a queue lock while holding `delivery` (acks collect entries first, then call the
//! queues).

mod figures;
mod publishing;
pub(crate) mod registry;
pub(crate) use publishing::{ConfirmState, ContentAssembly, TxOp, TxPublish};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::ShortString;
use bytes::{Bytes, BytesMut};

use crate::outbox::{Outbound, Outbox};
use crate::queue::{Consumer, ConsumerChannel, Queue, QueuedMessage};
use registry::{ChannelRegistration, Channels};

/// One delivery awaiting `basic.ack`/`nack`/`reject`.
#[derive(Debug)]
pub(crate) struct Unacked {
    /// The queue it came from (and goes back to on requeue).
    pub(crate) queue: Arc<Queue>,
    /// The consumer whose credit it holds (`None` for `basic.get`).
    pub(crate) consumer: Option<Arc<Consumer>>,
    /// The message and its queue position.
    pub(crate) message: QueuedMessage,
}

#[derive(Debug, Default)]
struct DeliveryState {
    /// The last delivery tag used on this channel (tags start at 1).
    last_tag: u64,
    /// Unacked deliveries by tag.
    unacked: BTreeMap<u64, Unacked>,
    /// Set when the channel closes; later deliveries are refused back to the queue.
    closed: bool,
}

/// A consumer registered on this channel, with the queue it consumes from.
#[derive(Debug, Clone)]
pub(crate) struct ChannelConsumer {
    /// The queue.
    pub(crate) queue: Arc<Queue>,
}

/// The state of a channel that queues and other connections reach. Held in an `Arc` by the
/// owning connection's [`Channel`], by each of its consumers (`Consumer::channel`), and weakly
/// by the vhost's direct reply-to registry.
#[derive(Debug)]
pub(crate) struct ChannelShared {
    /// The channel number.
    pub(crate) id: u16,
    /// The owning connection's id.
    pub(crate) connection_id: u64,
    /// The owning connection's outbox; every holder may queue frames on it. Its writer task
    /// stops when the connection shuts it down, not when the holders drop it.
    pub(crate) outbox: Arc<Outbox>,
    /// The client understands `basic.cancel` from the broker (capability
    /// `consumer_cancel_notify`).
    pub(crate) cancel_notify: bool,
    delivery: Mutex<DeliveryState>,
    /// `channel.flow`: false pauses deliveries to this channel.
    flow_active: AtomicBool,
    /// `basic.qos` global=true prefetch count; 0 = unlimited.
    pub(crate) global_prefetch: AtomicU32,
    /// Consumer deliveries unacked on this channel (counted against `global_prefetch`).
    global_in_flight: AtomicU32,
    /// Consumers by tag. Also updated by a queue being deleted under a consumer.
    pub(crate) consumers: Mutex<HashMap<String, ChannelConsumer>>,
    /// The direct reply-to consumer tag, when the channel consumes `amq.rabbitmq.reply-to`.
    pub(crate) reply_to_consumer: Mutex<Option<ShortString>>,
    /// A copy of [`Channel::consumer_prefetch`] for the management API (`prefetch_count` of
    /// `/api/channels`); written by the connection task on `basic.qos`.
    pub(crate) consumer_prefetch: AtomicU32,
    /// [`ChannelMode`] as a `u8`, for the management API; written by the connection task on
    /// `confirm.select` and `tx.select`.
    mode: AtomicU8,
    /// Publishes whose confirm waits for the store (`messages_unconfirmed` of `/api/channels`);
    /// a copy of [`ConfirmState::pending_store`] written by the connection task.
    unconfirmed: AtomicU32,
    /// Publishes buffered by the open transaction (`messages_uncommitted`).
    uncommitted_messages: AtomicU32,
    /// Acks, nacks and rejects buffered by the open transaction (`acks_uncommitted`).
    uncommitted_acks: AtomicU32,
    /// Set by the connection task at the channel's first publish; read by the management API
    /// (RabbitMQ's `rabbitmq_global_publishers` counts such channels).
    publisher: AtomicBool,
}

/// Which publishing mode a channel is in (`confirm` and `transactional` of `/api/channels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelMode {
    /// Neither: publishes are fire-and-forget.
    Plain = 0,
    /// `confirm.select` was sent.
    Confirm = 1,
    /// `tx.select` was sent.
    Transactional = 2,
}

impl ChannelShared {
    /// A newly opened channel.
    pub(crate) fn new(
        id: u16,
        connection_id: u64,
        outbox: Arc<Outbox>,
        cancel_notify: bool,
    ) -> Self {
        Self {
            id,
            connection_id,
            outbox,
            cancel_notify,
            delivery: Mutex::new(DeliveryState::default()),
            flow_active: AtomicBool::new(true),
            global_prefetch: AtomicU32::new(0),
            global_in_flight: AtomicU32::new(0),
            consumers: Mutex::new(HashMap::new()),
            reply_to_consumer: Mutex::new(None),
            consumer_prefetch: AtomicU32::new(0),
            mode: AtomicU8::new(ChannelMode::Plain as u8),
            unconfirmed: AtomicU32::new(0),
            uncommitted_messages: AtomicU32::new(0),
            uncommitted_acks: AtomicU32::new(0),
            publisher: AtomicBool::new(false),
        }
    }

    /// Records that the channel published (the connection task, on every publish: one
    /// relaxed load, and a store the first time).
    pub(crate) fn note_publisher(&self) {
        if !self.publisher.load(Ordering::Relaxed) {
            self.publisher.store(true, Ordering::Relaxed);
        }
    }

    /// True once the channel has published.
    pub(crate) fn is_publisher(&self) -> bool {
        self.publisher.load(Ordering::Relaxed)
    }

    /// Deliveries awaiting an ack on this channel (`messages_unacknowledged`).
    pub(crate) fn unacked_count(&self) -> usize {
        self.delivery().unacked.len()
    }

    /// True once the channel released its deliveries on close (`state` "closing").
    pub(crate) fn is_closed(&self) -> bool {
        self.delivery().closed
    }

    fn delivery(&self) -> MutexGuard<'_, DeliveryState> {
        // Poisoning only follows a panic elsewhere; the map is still consistent.
        self.delivery.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The consumer map (poison-tolerant, as above).
    pub(crate) fn consumers(&self) -> MutexGuard<'_, HashMap<String, ChannelConsumer>> {
        self.consumers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The direct reply-to consumer (poison-tolerant, as above).
    pub(crate) fn reply_to(&self) -> MutexGuard<'_, Option<ShortString>> {
        self.reply_to_consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a frame on this channel.
    pub(crate) fn send(&self, method: AMQPClass) {
        // A send error means the connection is gone; its cleanup requeues what matters.
        let _ = self.outbox.send(Outbound::Method(self.id, method));
    }

    /// Sets `channel.flow`.
    pub(crate) fn set_flow(&self, active: bool) {
        self.flow_active.store(active, Ordering::Release);
    }

    /// Delivers a direct reply-to message (no ack, not from a queue); false if the channel has
    /// closed or no longer consumes replies.
    pub(crate) fn deliver_reply(&self, message: Arc<crate::message::Message>) -> bool {
        let Some(tag) = self.reply_to().clone() else {
            return false;
        };
        let mut d = self.delivery();
        if d.closed {
            return false;
        }
        d.last_tag += 1;
        let method = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: tag,
            delivery_tag: d.last_tag,
            redelivered: false,
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
        }));
        let _ = self.outbox.send(Outbound::Content {
            channel: self.id,
            method,
            message,
        });
        true
    }

    /// Answers `basic.get` with `get-ok`; records the delivery unless `no_ack`.
    pub(crate) fn deliver_get(
        &self,
        queue: &Arc<Queue>,
        qm: QueuedMessage,
        message_count: u32,
        no_ack: bool,
    ) {
        let mut d = self.delivery();
        d.last_tag += 1;
        let delivery_tag = d.last_tag;
        let method = AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
            delivery_tag,
            redelivered: qm.redelivered,
            exchange: qm.message.exchange.clone(),
            routing_key: qm.message.routing_key.clone(),
            message_count,
        }));
        let message = qm.message.clone();
        if !no_ack {
            d.unacked.insert(
                delivery_tag,
                Unacked {
                    queue: queue.clone(),
                    consumer: None,
                    message: qm,
                },
            );
        }
        let _ = self.outbox.send(Outbound::Content {
            channel: self.id,
            method,
            message,
        });
    }

    /// Removes the deliveries an ack/nack/reject names: `tag` alone, or every tag up to it
    /// with `multiple` (tag 0 with `multiple` means all). `None` if `tag` is unknown.
    ///
    /// The deliveries' prefetch credit stays taken: the caller gives it back
    /// ([`release_credit`](Self::release_credit), or around a requeue as
    /// [`release_consumer_credit`](Self::release_consumer_credit) says).
    pub(crate) fn take_unacked(&self, tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        let mut d = self.delivery();
        let taken = if multiple && tag == 0 {
            std::mem::take(&mut d.unacked).into_values().collect()
        } else if multiple {
            if !d.unacked.contains_key(&tag) {
                return None;
            }
            let rest = d.unacked.split_off(&(tag + 1));
            std::mem::replace(&mut d.unacked, rest)
                .into_values()
                .collect()
        } else {
            vec![d.unacked.remove(&tag)?]
        };
        Some(taken)
    }

    /// True when `tag` is an unacked delivery of this channel.
    pub(crate) fn is_unacked(&self, tag: u64) -> bool {
        self.delivery().unacked.contains_key(&tag)
    }

    /// Removes every unacked delivery (recover, close); their credit stays taken, as with
    /// [`take_unacked`](Self::take_unacked).
    pub(crate) fn take_all_unacked(&self, close: bool) -> Vec<Unacked> {
        let mut d = self.delivery();
        if close {
            d.closed = true;
        }
        std::mem::take(&mut d.unacked).into_values().collect()
    }

    /// Gives back the prefetch credit (consumer and channel-global) of settled deliveries.
    pub(crate) fn release_credit(&self, taken: &[Unacked]) {
        self.release_global(Self::release_consumer_credit(taken));
    }

    /// Gives back the per-consumer prefetch credit of settled deliveries `taken`; returns the
    /// channel-global units they hold, for [`ConsumerChannel::release_global`].
    ///
    /// A requeue gives the two back on either side of returning the messages, as RabbitMQ
    /// 3.10 does (measured by the differential tester): its queue frees the consumer's own
    /// prefetch before it redelivers (`subtract_acks`, then `requeue_and_run`), so a consumer
    /// with `basic.qos` per consumer may get its requeued message straight back; the channel's
    /// limiter resumes a channel blocked by its global prefetch only after the queue took the
    /// requeue, so the message goes to a consumer that had credit already.
    pub(crate) fn release_consumer_credit(taken: &[Unacked]) -> u32 {
        let mut global = 0;
        for u in taken {
            if let Some(c) = &u.consumer {
                c.in_flight.fetch_sub(1, Ordering::AcqRel);
                global += 1;
            }
        }
        global
    }
}

impl ConsumerChannel for ChannelShared {
    fn channel_id(&self) -> u16 {
        self.id
    }

    fn connection_id(&self) -> u64 {
        self.connection_id
    }

    fn can_deliver(&self) -> bool {
        self.flow_active.load(Ordering::Acquire)
    }

    fn try_reserve_global(&self) -> bool {
        let limit = self.global_prefetch.load(Ordering::Acquire);
        if limit == 0 {
            self.global_in_flight.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        self.global_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn has_global_credit(&self) -> bool {
        let limit = self.global_prefetch.load(Ordering::Acquire);
        limit == 0 || self.global_in_flight.load(Ordering::Acquire) < limit
    }

    fn release_global(&self, n: u32) {
        let _ = self
            .global_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_sub(n))
            });
    }

    fn deliver(
        &self,
        consumer: &Arc<Consumer>,
        queue: &Arc<Queue>,
        qm: QueuedMessage,
    ) -> Result<(), QueuedMessage> {
        let mut d = self.delivery();
        if d.closed {
            return Err(qm);
        }
        d.last_tag += 1;
        let delivery_tag = d.last_tag;
        let redelivered = qm.redelivered;
        let message = qm.message.clone();
        if !consumer.no_ack {
            d.unacked.insert(
                delivery_tag,
                Unacked {
                    queue: queue.clone(),
                    consumer: Some(consumer.clone()),
                    message: qm,
                },
            );
        }
        // Sent under the lock so that tags reach the wire in order.
        let _ = self.outbox.send(Outbound::Deliver {
            channel: self.id,
            consumer_tag: consumer.tag.clone(),
            delivery_tag,
            redelivered,
            message,
        });
        Ok(())
    }

    fn cancelled_by_broker(&self, consumer_tag: &ShortString) {
        self.consumers().remove(consumer_tag.as_str());
        if self.cancel_notify {
            // As in `deliver`: checked and sent under the delivery lock, so the cancel goes
            // out before the channel's close-ok (sent after `closed` is set) or not at all. A
            // queue deleted by another connection while this channel closes would otherwise
            // send `basic.cancel` on a channel the client has already forgotten (0-9-1
            // §2.2.4.3: nothing follows close-ok on that channel).
            let d = self.delivery();
            if d.closed {
                return;
            }
            self.send(AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                consumer_tag: consumer_tag.clone(),
                nowait: true,
            })));
            drop(d);
        }
    }
}

/// Whether a channel is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelState {
    /// Open.
    Open,
    /// We sent `channel.close` and drop everything until `close-ok`.
    Closing,
}

/// The connection task's view of one channel.
#[derive(Debug)]
pub(crate) struct Channel {
    /// The state queues share (see [`ChannelShared`]).
    pub(crate) shared: Arc<ChannelShared>,
    /// Open or closing.
    pub(crate) state: ChannelState,
    /// The publish whose content is arriving.
    pub(crate) content: Option<ContentAssembly>,
    /// Prefetch for consumers created from now on (`basic.qos` global=false); 0 = unlimited.
    pub(crate) consumer_prefetch: u32,
    /// Confirm mode state (`confirm.select`).
    pub(crate) confirm: Option<ConfirmState>,
    /// Transaction buffer (`tx.select`).
    pub(crate) tx: Option<Vec<TxOp>>,
    /// The queue named in this channel's latest `queue.declare-ok` (RabbitMQ's
    /// `most_recently_declared_queue`): an empty queue name in `queue.bind`, `queue.unbind`,
    /// `queue.purge`, `queue.delete`, `basic.consume` and `basic.get` means this queue (0-9-1
    /// §1.7.2.3 and §1.8.3.3).
    pub(crate) last_queue: Option<String>,
    /// Keeps the channel listed for the management API; dropping the `Channel` (close-ok,
    /// connection end) unlists it.
    _registration: ChannelRegistration,
}

impl Channel {
    /// A newly opened channel, listed in `registry` while it exists.
    pub(crate) fn new(shared: Arc<ChannelShared>, registry: &Arc<Channels>) -> Self {
        Self {
            _registration: registry.register(&shared),
            shared,
            state: ChannelState::Open,
            content: None,
            consumer_prefetch: 0,
            confirm: None,
            tx: None,
            last_queue: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_closed_channel_sends_no_broker_cancel() {
        let outbox = Outbox::detached();
        let shared = ChannelShared::new(2, 1, outbox.clone(), true);
        shared.cancelled_by_broker(&"before".into());
        assert_eq!(outbox.queued(), 1, "an open channel is told of the cancel");
        shared.take_all_unacked(true);
        shared.cancelled_by_broker(&"after".into());
        assert_eq!(
            outbox.queued(),
            1,
            "nothing is sent once the channel closed"
        );
    }
}
