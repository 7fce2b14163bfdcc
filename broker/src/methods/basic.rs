//! The `basic` class except publishing: qos, consume, cancel, get, ack, nack/reject, recover.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::ShortString;

use super::queue::generated_name;
use super::Session;
use crate::channel::{ChannelConsumer, ChannelShared, TxOp, Unacked};
use crate::error::AmqpError;
use crate::field_value::as_i64;
use crate::queue::{Consumer, ConsumerChannel, DeadLetter, Queue, QueueType};
use crate::vhost::REPLY_TO;

impl Session {
    fn shared(&self, ch: u16) -> Result<Arc<ChannelShared>, AmqpError> {
        self.channels
            .get(&ch)
            .map(|c| c.shared.clone())
            .ok_or_else(|| AmqpError::channel_error(format!("channel {ch} is not open")))
    }

    /// `basic.qos`: prefetch per consumer (global=false) or per channel (global=true).
    pub(crate) fn basic_qos(&mut self, ch: u16, m: basic::Qos) -> Result<(), AmqpError> {
        // amq-protocol drops prefetch_size while parsing, so the 540 RabbitMQ sends for a
        // non-zero prefetch_size cannot be reproduced; it is ignored instead.
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        let count = u32::from(m.prefetch_count);
        if m.global {
            channel
                .shared
                .global_prefetch
                .store(count, Ordering::Release);
        } else {
            channel.consumer_prefetch = count;
            channel
                .shared
                .consumer_prefetch
                .store(count, Ordering::Release);
        }
        let shared = channel.shared.clone();
        self.send(
            ch,
            AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        );
        // A raised limit may let queued messages flow.
        self.poke_consumed_queues(&shared);
        Ok(())
    }

    /// Dispatches every queue `shared`'s consumers consume from (credit came back, or flow
    /// resumed).
    pub(super) fn poke_consumed_queues(&self, shared: &crate::channel::ChannelShared) {
        let queues: Vec<Arc<Queue>> = shared
            .consumers()
            .values()
            .map(|c| c.queue.clone())
            .collect();
        for q in queues {
            self.vhost.dispatch(&q);
        }
    }

    /// `basic.consume`, including the direct reply-to pseudo-queue.
    pub(crate) fn basic_consume(&mut self, ch: u16, m: basic::Consume) -> Result<(), AmqpError> {
        let shared = self.shared(ch)?;
        let tag = if m.consumer_tag.as_str().is_empty() {
            generated_name("amq.ctag-")
        } else {
            m.consumer_tag.as_str().to_owned()
        };
        let reuse = shared.consumers().contains_key(&tag)
            || shared
                .reply_to()
                .as_ref()
                .is_some_and(|t| t.as_str() == tag);
        if reuse {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        // As RabbitMQ's `consumer_max_per_channel` (deps/rabbit/src/rabbit_channel.erl,
        // handle_method 'basic.consume', added in 2024 by commit d7374cb "Add consumers per
        // channel limit"; 3.10 has no such limit): `error when CurrentConsumers >=
        // MaxConsumers -> rabbit_misc:protocol_error(not_allowed, "reached maximum (~B) of
        // consumers per channel", [MaxConsumers])`, a hard error, so the connection closes
        // with 530. The direct reply-to consumer is not counted, as there (it is not in
        // `consumer_mapping`).
        if let Some(max) = self.broker.config.consumer_max_per_channel {
            if shared.consumers().len() >= max {
                return Err(AmqpError::not_allowed(format!(
                    "reached maximum ({max}) of consumers per channel"
                )));
            }
        }
        let tag_ss = ShortString::try_new(tag.clone()).unwrap_or_default();
        if m.queue.as_str() == REPLY_TO {
            if !m.no_ack {
                return Err(AmqpError::precondition_failed(
                    "reply consumer cannot acknowledge",
                ));
            }
            if shared.reply_to().is_some() {
                return Err(AmqpError::precondition_failed("reply consumer already set"));
            }
            *shared.reply_to() = Some(tag_ss.clone());
            let token = self.vhost.register_reply_to(&shared);
            let address = ShortString::try_new(format!("{REPLY_TO}.{token}")).unwrap_or_default();
            self.reply_tokens
                .insert(ch, super::session::ReplyToken { token, address });
            if !m.nowait {
                self.send(ch, consume_ok(tag_ss));
            }
            return Ok(());
        }
        let queue = self.usable_queue(m.queue.as_str())?;
        // A quorum queue as RabbitMQ 3.10 has it: no consumer under a global prefetch limit
        // (540, closing the connection), and `exclusive` is ignored (any number of consumers,
        // exclusive or not, share it).
        let quorum = queue.config.queue_type == QueueType::Quorum;
        if quorum && shared.global_prefetch.load(Ordering::Acquire) != 0 {
            return Err(AmqpError::not_implemented(format!(
                "queue '{}' in vhost '{}' does not support global qos",
                queue.name, self.vhost.name
            )));
        }
        let priority = m
            .arguments
            .inner()
            .get("x-priority")
            .and_then(as_i64)
            .unwrap_or(0);
        let prefetch = self.channels.get(&ch).map_or(0, |c| c.consumer_prefetch);
        let consumer = Arc::new(Consumer {
            tag: Arc::new(tag_ss.clone()),
            channel: shared.clone(),
            no_ack: m.no_ack,
            exclusive: m.exclusive && !quorum,
            prefetch,
            priority,
            in_flight: AtomicU32::new(0),
            blocked: AtomicBool::new(false),
        });
        queue
            .add_consumer(&self.vhost.name, consumer)
            .map_err(AmqpError::access_refused)?;
        shared.consumers().insert(
            tag.clone(),
            ChannelConsumer {
                queue: queue.clone(),
            },
        );
        // consume-ok must reach the client before the first delivery, so it is queued on the
        // writer before the queue dispatches to the new consumer.
        if !m.nowait {
            self.send(ch, consume_ok(tag_ss));
        }
        self.vhost.dispatch(&queue);
        Ok(())
    }

    /// `basic.cancel` (a no-op for an unknown tag, as in RabbitMQ).
    pub(crate) fn basic_cancel(&mut self, ch: u16, m: basic::Cancel) -> Result<(), AmqpError> {
        let shared = self.shared(ch)?;
        let tag = m.consumer_tag.as_str();
        let is_reply = shared
            .reply_to()
            .as_ref()
            .is_some_and(|t| t.as_str() == tag);
        if is_reply {
            *shared.reply_to() = None;
            if let Some(token) = self.reply_tokens.remove(&ch) {
                self.vhost.unregister_reply_to(&token.token);
            }
        }
        let removed = shared.consumers().remove(tag);
        let handed_over = removed.and_then(|c| self.detach_consumer(tag, c, &shared));
        if !m.nowait {
            self.send(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                    consumer_tag: m.consumer_tag,
                })),
            );
        }
        // The next consumer of a single-active-consumer queue takes over at once (the
        // cancelled one's unacked messages stay with its channel until acked or returned).
        // RabbitMQ 3.10's classic queue makes it active without serving it, and its queue
        // process crashes on the next publish (deliberate difference D1, difftest).
        if let Some(queue) = handed_over {
            self.vhost.dispatch(&queue);
        }
        Ok(())
    }

    /// `basic.get`: one message, or `get-empty`.
    pub(crate) fn basic_get(&mut self, ch: u16, m: basic::Get) -> Result<(), AmqpError> {
        let shared = self.shared(ch)?;
        let queue = self.usable_queue(m.queue.as_str())?;
        if queue.config.single_active_consumer && queue.config.queue_type == QueueType::Quorum {
            // RabbitMQ 3.10's text (measured); a classic one serves basic.get as usual.
            return Err(AmqpError::resource_locked(format!(
                "cannot obtain access to locked queue '{}' in vhost '{}'. basic.get operations are not supported by quorum queues with single active consumer",
                queue.name, self.vhost.name
            )));
        }
        match self.vhost.get(&queue) {
            Some((qm, count)) => {
                self.vhost.stats.fetched(m.no_ack, qm.redelivered);
                if m.no_ack {
                    queue.forget(&qm);
                }
                shared.deliver_get(&queue, qm, count, m.no_ack)
            }
            None => {
                self.vhost.stats.get_empty();
                self.send(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
                );
            }
        }
        Ok(())
    }

    /// `basic.ack`. Inside a transaction the ack waits for `tx.commit`.
    pub(crate) fn basic_ack(&mut self, ch: u16, tag: u64, multiple: bool) -> Result<(), AmqpError> {
        if self.buffer_tx_settle(ch, tag, multiple, TxOp::Ack(tag, multiple))? {
            return Ok(());
        }
        self.apply_ack(ch, tag, multiple).map(|_| ())
    }

    /// Buffers `op`, an ack or nack settling `tag` (`multiple`), when channel `ch` is in a
    /// transaction, checked now (see [`check_tx_settle`]). True when buffered (it applies at
    /// `tx.commit`); false when there is no transaction and it applies now.
    fn buffer_tx_settle(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
        op: TxOp,
    ) -> Result<bool, AmqpError> {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(false);
        };
        let Some(tx) = channel.tx.as_mut() else {
            return Ok(false);
        };
        check_tx_settle(&channel.shared, tx, tag, multiple)?;
        channel.shared.note_uncommitted(&op);
        tx.push(op);
        Ok(true)
    }

    /// The channel's shared state and the unacked deliveries an ack or nack of `tag`
    /// (`multiple`) settles, taken off it; 406 for an unknown tag.
    fn take_settled(
        &self,
        ch: u16,
        tag: u64,
        multiple: bool,
    ) -> Result<(Arc<ChannelShared>, Vec<Unacked>), AmqpError> {
        let shared = self.shared(ch)?;
        let taken = shared
            .take_unacked(tag, multiple)
            .ok_or_else(|| AmqpError::precondition_failed(format!("unknown delivery tag {tag}")))?;
        Ok((shared, taken))
    }

    /// Settles acked deliveries and lets their queues dispatch again. True when one of them
    /// was in the store (which now has a removal to commit).
    pub(crate) fn apply_ack(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
    ) -> Result<bool, AmqpError> {
        let (shared, taken) = self.take_settled(ch, tag, multiple)?;
        let mut stored = false;
        for u in &taken {
            stored |= u.queue.is_persisted() && u.message.message.is_persistent();
            u.queue.forget(&u.message);
        }
        shared.release_credit(&taken);
        self.vhost.stats.acked(taken.len() as u64);
        self.after_settle(&shared, taken.iter().map(|u| u.queue.clone()).collect());
        Ok(stored)
    }

    /// `basic.nack` / `basic.reject`: requeue, or dead-letter (drop without a DLX).
    pub(crate) fn basic_nack(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), AmqpError> {
        if self.buffer_tx_settle(ch, tag, multiple, TxOp::Nack(tag, multiple, requeue))? {
            return Ok(());
        }
        self.apply_nack(ch, tag, multiple, requeue).map(|_| ())
    }

    /// Applies a nack/reject now. True when it may have handed the store records (a
    /// persistent message removed, or dead-lettered to a durable queue).
    pub(crate) fn apply_nack(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> Result<bool, AmqpError> {
        let (shared, taken) = self.take_settled(ch, tag, multiple)?;
        let queues: Vec<Arc<Queue>> = taken.iter().map(|u| u.queue.clone()).collect();
        let stored = !requeue && taken.iter().any(|u| u.message.message.is_persistent());
        let global = ChannelShared::release_consumer_credit(&taken);
        if requeue {
            self.requeue(taken);
        } else {
            self.dead_letter_all(taken);
        }
        shared.release_global(global);
        self.after_settle(&shared, queues);
        Ok(stored)
    }

    /// Dead-letters rejected deliveries; each leaves its queue's store once its dead-letter
    /// copies are stored (see `VHost::dead_letter`).
    fn dead_letter_all(&self, taken: Vec<Unacked>) {
        for u in taken {
            let stored = Some((u.message.seq, u.message.message.is_persistent()));
            self.vhost.dead_letter(
                &u.queue,
                vec![DeadLetter {
                    message: u.message.message,
                    reason: "rejected",
                    stored,
                }],
            );
        }
    }

    fn after_settle(&self, shared: &crate::channel::ChannelShared, mut queues: Vec<Arc<Queue>>) {
        queues.dedup_by(|a, b| Arc::ptr_eq(a, b));
        if shared.global_prefetch.load(Ordering::Acquire) != 0 {
            self.poke_consumed_queues(shared);
        } else {
            let mut seen: Vec<Arc<Queue>> = Vec::new();
            for q in queues {
                if !seen.iter().any(|s| Arc::ptr_eq(s, &q)) {
                    self.vhost.dispatch(&q);
                    seen.push(q);
                }
            }
        }
    }

    /// `basic.recover` / `recover-async` with requeue: every unacked delivery goes back to its
    /// queue. Without requeue it is 540 NOT_IMPLEMENTED, as in RabbitMQ.
    pub(crate) fn basic_recover(
        &mut self,
        ch: u16,
        requeue: bool,
        reply: bool,
    ) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        let shared = self.shared(ch)?;
        let taken = shared.take_all_unacked(false);
        let global = ChannelShared::release_consumer_credit(&taken);
        // recover-ok goes first: clients (lapin) drop prefetched deliveries when it arrives,
        // so the redeliveries must follow it.
        if reply {
            self.send(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
            );
        }
        self.requeue(taken);
        shared.release_global(global);
        self.poke_consumed_queues(&shared);
        Ok(())
    }
}

fn consume_ok(consumer_tag: ShortString) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
        consumer_tag,
    }))
}

/// Inside a transaction an ack, nack or reject is applied at the commit, but checked when it
/// arrives, as RabbitMQ does (it takes the deliveries then, and gives them back on rollback):
/// the tag must be unacked and not settled already by an earlier one of the transaction, or
/// 406 "unknown delivery tag" now. Tag 0 with `multiple` (everything) is always fine.
fn check_tx_settle(
    shared: &ChannelShared,
    tx: &[TxOp],
    tag: u64,
    multiple: bool,
) -> Result<(), AmqpError> {
    if (multiple && tag == 0) || (shared.is_unacked(tag) && !tx.iter().any(|op| op.settles(tag))) {
        Ok(())
    } else {
        Err(AmqpError::precondition_failed(format!(
            "unknown delivery tag {tag}"
        )))
    }
}
