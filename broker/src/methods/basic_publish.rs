//! `basic.publish`, the hot path: content assembly starts here; once the body is complete
//! the message is routed (`VHost::route`), enqueued on each target queue, returned
//! if mandatory and unroutable, handed to the store when persistent on a durable queue, and
//! confirmed (coalesced into one `basic.ack multiple=true` per read batch when possible).
//!
//! Direct reply-to also lives here: a publish whose `reply_to` is `amq.rabbitmq.reply-to` gets
//! the channel's reply address substituted; a publish to the default exchange with routing key
//! `amq.rabbitmq.reply-to.<token>` goes straight to the waiting channel, never to a queue, and
//! is dropped if that channel is gone (RabbitMQ does the same).

use std::sync::Arc;

use amq_protocol::protocol::{basic, AMQPClass};
use bytes::Bytes;

use super::no_exchange;
use super::Session;
use crate::channel::{ContentAssembly, TxOp, TxPublish};
use crate::connection_registry::ConnEvent;
use crate::error::AmqpError;
use crate::fairness::{self, HEAVY_WORK};
use crate::message::{Held, Message};
use crate::outbox::Outbound;
use crate::persistence::Durability;
use crate::queue::{check_expiration, EnqueueOutcome, Queue};
use crate::vhost::REPLY_TO;

/// The work (see `fairness`) counted per queue a message is enqueued on: a queue lock, a
/// dispatch, maybe a delivery.
const ENQUEUE_WORK: usize = 16;

/// The routing key prefix of a direct reply (on the default exchange).
const REPLY_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// Whether `publish` is a direct reply: to the default exchange, with a routing key of
/// [`REPLY_PREFIX`] and a token.
fn is_reply(publish: &basic::Publish) -> bool {
    publish.exchange.as_str().is_empty() && publish.routing_key.as_str().starts_with(REPLY_PREFIX)
}

impl Session {
    /// `basic.publish`: the content header and body frames follow.
    pub(crate) fn basic_publish(&mut self, ch: u16, m: basic::Publish) -> Result<(), AmqpError> {
        if m.immediate {
            // RabbitMQ 3 dropped `immediate`; a connection error, as there.
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        if let Some(channel) = self.channels.get_mut(&ch) {
            channel.content = Some(ContentAssembly::new(m));
        }
        Ok(())
    }

    /// A publish whose content is complete: buffered in a transaction, or routed now.
    pub(crate) fn publish(
        &mut self,
        ch: u16,
        publish: basic::Publish,
        properties: basic::AMQPProperties,
        body: Bytes,
        block: Option<Arc<Held>>,
    ) -> Result<(), AmqpError> {
        self.blocking.published();
        let in_tx = match self.channels.get(&ch) {
            Some(channel) => {
                channel.shared.note_publisher();
                channel.tx.is_some()
            }
            None => false,
        };
        if in_tx {
            // Everything RabbitMQ checks at the publish is checked now, so the error comes at
            // the publish, not the commit; and it is routed now, as RabbitMQ does (see
            // `TxPublish`).
            let message = self.checked_message(ch, &publish, properties, body, block)?;
            let routed = if is_reply(&publish) {
                None
            } else {
                Some(self.route_message(&publish, &message))
            };
            let Some(channel) = self.channels.get_mut(&ch) else {
                return Ok(());
            };
            let op = TxOp::Publish(Box::new(TxPublish {
                publish,
                message,
                routed,
            }));
            channel.shared.note_uncommitted(&op);
            if let Some(tx) = channel.tx.as_mut() {
                tx.push(op);
            }
            return Ok(());
        }
        self.route_publish(ch, publish, properties, body, block)
    }

    /// Routes, enqueues, returns and confirms one publish (not in a transaction).
    fn route_publish(
        &mut self,
        ch: u16,
        publish: basic::Publish,
        properties: basic::AMQPProperties,
        body: Bytes,
        block: Option<Arc<Held>>,
    ) -> Result<(), AmqpError> {
        self.vhost.stats.published(body.len() as u64);
        let message = self.checked_message(ch, &publish, properties, body, block)?;
        if is_reply(&publish) {
            self.publish_reply(ch, publish, message);
            return Ok(());
        }
        let queues = self.route_message(&publish, &message);
        self.enqueue_routed(ch, publish, message, queues);
        Ok(())
    }

    /// Checks a publish as RabbitMQ does (rabbit_channel, basic.publish), in its order: the
    /// exchange (404, 403 when internal), then the message's properties (406); and builds the
    /// message, charged to the vhost's memory account.
    #[inline]
    fn checked_message(
        &mut self,
        ch: u16,
        publish: &basic::Publish,
        mut properties: basic::AMQPProperties,
        body: Bytes,
        block: Option<Arc<Held>>,
    ) -> Result<Arc<Message>, AmqpError> {
        self.check_exchange(publish.exchange.as_str())?;
        self.check_message(ch, &mut properties)?;
        Ok(Arc::new(Message::new(
            &self.vhost.account,
            publish.exchange.clone(),
            publish.routing_key.clone(),
            properties,
            body,
            block,
        )))
    }

    /// Routes `message` as published by `publish`: the queues it goes to; the work routing
    /// took is counted against this task's budget (see `fairness`).
    #[inline]
    fn route_message(&mut self, publish: &basic::Publish, message: &Message) -> Vec<Arc<Queue>> {
        let routed = self.vhost.route(
            publish.exchange.as_str(),
            publish.routing_key.as_str(),
            message.properties.headers().as_ref(),
        );
        self.work += routed.work;
        routed.queues
    }

    /// A transaction's publish at `tx.commit`: enqueued on the queues it was routed to at the
    /// publish that still exist, looked up by name as RabbitMQ does (see `TxPublish`). True
    /// when the store was handed the message and has not committed it yet.
    pub(crate) fn commit_publish(&mut self, ch: u16, tx_publish: TxPublish) -> bool {
        let TxPublish {
            publish,
            message,
            routed,
        } = tx_publish;
        self.vhost.stats.published(message.body.len() as u64);
        let Some(routed) = routed else {
            self.publish_reply(ch, publish, message);
            return false;
        };
        let queues: Vec<Arc<Queue>> = {
            let topo = self.vhost.read();
            routed
                .iter()
                .filter_map(|q| topo.queues.get(&q.name).cloned())
                .collect()
        };
        self.enqueue_routed(ch, publish, message, queues)
    }

    /// Direct reply-to: hands the reply to the channel waiting for it (see the module doc),
    /// or returns it when mandatory and that channel is gone.
    fn publish_reply(&mut self, ch: u16, publish: basic::Publish, message: Arc<Message>) {
        let token = publish
            .routing_key
            .as_str()
            .strip_prefix(REPLY_PREFIX)
            .unwrap_or_default();
        let delivered = self
            .vhost
            .reply_to_channel(token)
            .is_some_and(|target| target.deliver_reply(message.clone()));
        if !delivered {
            self.vhost.stats.unroutable(publish.mandatory);
            if publish.mandatory {
                self.basic_return(ch, publish, message);
            }
        }
        self.confirm_publish(ch, false, Vec::new());
    }

    /// Enqueues a routed message on `queues`, returns it when mandatory and `queues` is empty,
    /// and confirms it. True when the store was handed the message and has not committed it
    /// yet (`tx.commit-ok` then waits).
    fn enqueue_routed(
        &mut self,
        ch: u16,
        publish: basic::Publish,
        message: Arc<Message>,
        queues: Vec<Arc<Queue>>,
    ) -> bool {
        let enqueue_work = queues.len().saturating_mul(ENQUEUE_WORK);
        self.work += enqueue_work;
        let mut rejected = false;
        let mut pending = Vec::new();
        let vhost = &self.vhost;
        let mut enqueue = || {
            for queue in &queues {
                match vhost.enqueue(queue, message.clone()) {
                    EnqueueOutcome::Enqueued { seq } => {
                        if queue.is_persisted() && message.is_persistent() {
                            if let Durability::Pending(rx) =
                                vhost.store.enqueue(&vhost.name, &queue.name, seq, &message)
                            {
                                pending.push(rx);
                            }
                            // Past the memory budget only the index entry stays in memory.
                            queue.page_out(seq);
                        }
                    }
                    EnqueueOutcome::Rejected => rejected = true,
                    EnqueueOutcome::Gone => {}
                }
            }
        };
        if enqueue_work > HEAVY_WORK {
            // A fan-out to thousands of queues: off this worker's other tasks.
            fairness::heavy(enqueue);
        } else {
            enqueue();
        }
        if queues.is_empty() {
            self.vhost.stats.unroutable(publish.mandatory);
            if publish.mandatory {
                self.basic_return(ch, publish, message);
            }
        }
        let stored = !pending.is_empty();
        self.confirm_publish(ch, rejected, pending);
        stored
    }

    /// 404 when the exchange a publish names does not exist, 403 when it is internal (the
    /// default exchange, the empty name, always exists).
    fn check_exchange(&self, exchange: &str) -> Result<(), AmqpError> {
        if exchange.is_empty() {
            return Ok(());
        }
        match self.vhost.read().exchanges.get(exchange) {
            None => Err(no_exchange(exchange, &self.vhost.name)),
            Some(x) if x.internal => Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.vhost.name
            ))),
            Some(_) => Ok(()),
        }
    }

    /// The checks RabbitMQ makes on a message's properties before routing it, in its order:
    /// `reply_to` of `amq.rabbitmq.reply-to` needs the channel's reply consumer (and is
    /// replaced by the channel's reply address); `user_id` must be the authenticated user
    /// unless it has the `impersonator` tag; `expiration` must be a valid TTL; `delivery_mode`
    /// must be absent, 1 or 2. Each failure is 406 PRECONDITION_FAILED with RabbitMQ's text.
    fn check_message(
        &self,
        ch: u16,
        properties: &mut basic::AMQPProperties,
    ) -> Result<(), AmqpError> {
        if properties
            .reply_to()
            .as_ref()
            .is_some_and(|r| r.as_str() == REPLY_TO)
        {
            let token = self.reply_tokens.get(&ch).ok_or_else(|| {
                AmqpError::precondition_failed("fast reply consumer does not exist")
            })?;
            *properties = properties.clone().with_reply_to(token.address.clone());
        }
        if let Some(claimed) = properties.user_id() {
            if claimed.as_str() != self.grants.user && !self.grants.may_impersonate() {
                return Err(AmqpError::precondition_failed(format!(
                    "user_id property set to '{claimed}' but authenticated user was '{}'",
                    self.grants.user
                )));
            }
        }
        if let Some(expiration) = properties.expiration() {
            check_expiration(expiration.as_str()).map_err(AmqpError::precondition_failed)?;
        }
        match properties.delivery_mode() {
            None | Some(1) | Some(2) => Ok(()),
            Some(other) => Err(AmqpError::precondition_failed(format!(
                "invalid message: {{delivery_mode_unknown,{other}}}"
            ))),
        }
    }

    /// Sends an unroutable mandatory message back with `basic.return` 312 NO_ROUTE.
    fn basic_return(&self, ch: u16, publish: basic::Publish, message: Arc<Message>) {
        let _ = self.outbox.send(Outbound::Content {
            channel: ch,
            method: AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: publish.exchange,
                routing_key: publish.routing_key,
            })),
            message,
        });
    }

    /// Confirms a publish on a confirming channel: nack if a queue rejected it, ack once the
    /// store tickets complete, else coalesce into the next `ack multiple=true`.
    fn confirm_publish(
        &mut self,
        ch: u16,
        rejected: bool,
        pending: Vec<tokio::sync::oneshot::Receiver<()>>,
    ) {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return;
        };
        let generation = Arc::downgrade(&channel.shared);
        let Some(confirm) = channel.confirm.as_mut() else {
            return;
        };
        confirm.last_seq += 1;
        let seq = confirm.last_seq;
        self.vhost.stats.received_confirm();
        let mut out = Vec::new();
        if rejected || !pending.is_empty() || confirm.pending_store > 0 {
            if let Some(upto) = confirm.ack_upto.take() {
                out.push(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: upto,
                    multiple: true,
                }));
            }
        }
        if rejected {
            out.push(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: seq,
                multiple: false,
                requeue: false,
            }));
        } else if !pending.is_empty() {
            confirm.pending_store += 1;
            channel.shared.set_unconfirmed(confirm.pending_store);
            let events = self.events.clone();
            tokio::spawn(async move {
                let mut ok = true;
                for rx in pending {
                    ok &= rx.await.is_ok();
                }
                let _ = events.send(ConnEvent::Confirm {
                    channel: ch,
                    generation,
                    seq,
                    ok,
                });
            });
        } else if confirm.pending_store > 0 {
            self.vhost.stats.confirmed();
            out.push(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: seq,
                multiple: false,
            }));
        } else {
            self.vhost.stats.confirmed();
            confirm.ack_upto = Some(seq);
        }
        for m in out {
            self.send(ch, AMQPClass::Basic(m));
        }
    }
}
