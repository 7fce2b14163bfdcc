//! The state of one open connection that the method handlers act on ([`Session`]): its
//! channels, vhost, outbox, permissions, events and held reply. The connection task
//! (`connection`) owns it and hands it each method through [`super::dispatch`]; methods see
//! nothing of the socket, the handshake or the read loop.

use std::collections::HashMap;
use std::sync::Arc;

use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::ShortString;
use tokio::sync::mpsc;

use crate::broker_state::BrokerShared;
use crate::channel::{Channel, ChannelConsumer, ChannelShared};
use crate::connection_registry::ConnEvent;
use crate::outbox::{Outbound, Outbox};
use crate::queue::{ConsumerChannel, Queue};
use crate::vhost::VHost;

/// One connection's state as the method handlers see it.
#[derive(Debug)]
pub(crate) struct Session {
    /// Broker-unique id (exclusive-queue owner, log field).
    pub(crate) id: u64,
    /// The vhost opened with `connection.open`.
    pub(crate) vhost: Arc<VHost>,
    /// Frames to the client (shared with this connection's channels and the writer task).
    pub(crate) outbox: Arc<Outbox>,
    /// Events for this task (held by store-confirm waiters).
    pub(crate) events: mpsc::UnboundedSender<ConnEvent>,
    /// Open (or closing) channels.
    pub(crate) channels: HashMap<u16, Channel>,
    /// The client handles broker-sent `basic.cancel`.
    pub(crate) cancel_notify: bool,
    /// Exclusive queues this connection declared (deleted when it closes).
    pub(crate) exclusive_queues: Vec<String>,
    /// Direct reply-to tokens by channel.
    pub(crate) reply_tokens: HashMap<u16, ReplyToken>,
    /// The authenticated user and its cached permissions in `vhost` (checked per method).
    pub(crate) grants: crate::access::Grants,
    /// The broker: its limits (`config`) and the channel registry this connection's channels
    /// join while open.
    pub(crate) broker: Arc<BrokerShared>,
    /// The memory alarm as it applies to this connection (`connection.blocked`).
    pub(crate) blocking: crate::connection_blocked::Blocking,
    /// Work done since this task last yielded (see `fairness`); methods add what they cost
    /// beyond one unit per frame.
    pub(crate) work: usize,
    /// A reply waiting for the store (see [`Session::reply_when_committed`]); while it
    /// waits, no further frame of this connection is handled.
    pub(crate) held: Option<HeldReply>,
}

/// A reply that must not go out before the store has committed what it reports: a durable
/// topology change's `-ok`, `tx.commit-ok`, `purge-ok`.
#[derive(Debug)]
pub(crate) struct HeldReply {
    /// The channel to reply on.
    pub(crate) channel: u16,
    /// The reply.
    pub(crate) method: AMQPClass,
    /// Resolves once the change is committed (or failed).
    pub(crate) commit: crate::store::Commit,
}

/// A channel's direct reply-to registration: the token the vhost knows it by, and the
/// `reply-to` address its requests carry, built once (not per publish).
#[derive(Debug)]
pub(crate) struct ReplyToken {
    /// The vhost's key for the consuming channel.
    pub(crate) token: String,
    /// `amq.rabbitmq.reply-to.<token>`, what a request's `reply-to` is rewritten to.
    pub(crate) address: ShortString,
}

impl Session {
    /// Queues a method frame to the client.
    pub(crate) fn send(&self, channel: u16, method: AMQPClass) {
        let _ = self.outbox.send(Outbound::Method(channel, method));
    }

    /// Sends `method` on `channel` once `commit` resolves (at once when there is none): the
    /// reply to a change the store must make durable first. Until then this connection
    /// handles no further frame, so later replies cannot overtake it; other connections are
    /// not held up, and the store's group commit serves them all with one fsync. If the commit
    /// fails the connection is closed with 541 INTERNAL_ERROR instead.
    pub(crate) fn reply_when_committed(
        &mut self,
        channel: u16,
        method: AMQPClass,
        commit: Option<crate::store::Commit>,
    ) {
        match commit {
            None => self.send(channel, method),
            Some(commit) => {
                self.held = Some(HeldReply {
                    channel,
                    method,
                    commit,
                });
            }
        }
    }

    /// The `-ok` of a method the client may send with `nowait`: nothing when `nowait` is set,
    /// else [`reply_when_committed`](Self::reply_when_committed).
    pub(crate) fn reply_unless_nowait(
        &mut self,
        channel: u16,
        nowait: bool,
        method: AMQPClass,
        commit: Option<crate::store::Commit>,
    ) {
        if !nowait {
            self.reply_when_committed(channel, method, commit);
        }
    }

    /// Releases what a channel holds: cancels its consumers, returns its unacked messages to
    /// their queues (original order, redelivered), drops its reply-to registration.
    pub(crate) fn release_channel(&mut self, ch: u16) {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return;
        };
        channel.content = None;
        let shared = channel.shared.clone();
        if let Some(token) = self.reply_tokens.remove(&ch) {
            self.vhost.unregister_reply_to(&token.token);
        }
        *shared.reply_to() = None;
        let consumers: Vec<_> = shared.consumers().drain().collect();
        let unacked = shared.take_all_unacked(true);
        let global = ChannelShared::release_consumer_credit(&unacked);
        let handed_over: Vec<_> = consumers
            .into_iter()
            .filter_map(|(tag, c)| self.detach_consumer(&tag, c, &shared))
            .collect();
        self.requeue(unacked);
        shared.release_global(global);
        // A single active consumer's successor is served once the messages are back.
        for queue in handed_over {
            self.vhost.dispatch(&queue);
        }
    }

    /// Takes consumer `tag` of channel `shared` off its queue, deleting an auto-delete queue
    /// it leaves without consumers. Returns the queue when a single active consumer was
    /// handed over to another consumer: the caller dispatches it (after returning the
    /// channel's unacked messages, when the channel closes).
    pub(crate) fn detach_consumer(
        &self,
        tag: &str,
        consumer: ChannelConsumer,
        shared: &ChannelShared,
    ) -> Option<Arc<Queue>> {
        let removed = consumer.queue.remove_consumer(tag, shared);
        if removed.auto_delete {
            self.vhost.delete_queue_now(&consumer.queue.name);
        }
        removed.handed_over.then_some(consumer.queue)
    }

    /// Returns unacked deliveries to their queues, grouped per queue in tag order.
    pub(crate) fn requeue(&self, unacked: Vec<crate::channel::Unacked>) {
        let mut groups: Vec<(Arc<crate::queue::Queue>, Vec<crate::queue::QueuedMessage>)> =
            Vec::new();
        for u in unacked {
            match groups.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
                Some((_, list)) => list.push(u.message),
                None => groups.push((u.queue, vec![u.message])),
            }
        }
        for (queue, messages) in groups {
            self.vhost.requeue(&queue, messages);
        }
    }
}
