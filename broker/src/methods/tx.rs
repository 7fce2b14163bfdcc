//! The `tx` class: publishes, acks and nacks on a transactional channel are buffered and
//! applied in order on `tx.commit`, dropped on `tx.rollback`. As in RabbitMQ 3.10, a publish
//! is checked and routed when it arrives and delivered at the commit to the queues it was
//! routed to that still exist (`channel::TxPublish`): an exchange deleted or a binding changed
//! in between changes nothing.
//!
//! `tx.commit-ok` promises what a publisher confirm promises: it goes out once the store has
//! committed every record the commit handed it (the persistent messages routed to durable
//! queues, the removal of acked or rejected ones, their dead-letter copies), group-committed
//! with everything else (see `Session::reply_when_committed`). An ack in a transaction that
//! is not committed has changed nothing, on disk or off.
//!
//! Departure from the spec's letter, as in RabbitMQ: a transaction is not atomic across
//! queues (a crash during the commit's fsync may keep some of its messages and not others:
//! the client got no commit-ok, so it publishes again), and delivery tags of buffered acks
//! are checked at commit time.

use amq_protocol::protocol::{tx, AMQPClass};

use super::Session;
use crate::channel::{ChannelMode, TxOp};
use crate::error::AmqpError;

impl Session {
    /// `tx.select`.
    pub(crate) fn tx_select(&mut self, ch: u16) -> Result<(), AmqpError> {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        if channel.confirm.is_some() {
            return Err(AmqpError::precondition_failed(
                "cannot switch from confirm to tx mode",
            ));
        }
        if channel.tx.is_none() {
            channel.tx = Some(Vec::new());
            channel.shared.set_mode(ChannelMode::Transactional);
        }
        self.send(ch, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
        Ok(())
    }

    /// `tx.commit`: applies the buffered work, then answers `commit-ok`.
    pub(crate) fn tx_commit(&mut self, ch: u16) -> Result<(), AmqpError> {
        let ops = match self.channels.get_mut(&ch) {
            Some(channel) if channel.tx.is_some() => {
                channel.shared.clear_uncommitted();
                channel.tx.as_mut().map(std::mem::take).unwrap_or_default()
            }
            _ => {
                return Err(AmqpError::precondition_failed(
                    "channel is not transactional",
                ))
            }
        };
        let mut stored = false;
        for op in ops {
            stored |= match op {
                TxOp::Publish(publish) => self.commit_publish(ch, *publish),
                TxOp::Ack(tag, multiple) => self.apply_ack(ch, tag, multiple)?,
                TxOp::Nack(tag, multiple, requeue) => {
                    self.apply_nack(ch, tag, multiple, requeue)?
                }
            };
        }
        // Everything the commit appended is before the barrier: once it is committed, so is
        // the transaction.
        let commit = if stored {
            self.vhost.store.barrier()
        } else {
            None
        };
        self.reply_when_committed(
            ch,
            AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
            commit,
        );
        Ok(())
    }

    /// `tx.rollback`: drops the buffered work.
    pub(crate) fn tx_rollback(&mut self, ch: u16) -> Result<(), AmqpError> {
        match self.channels.get_mut(&ch) {
            Some(channel) if channel.tx.is_some() => {
                channel.shared.clear_uncommitted();
                if let Some(ops) = channel.tx.as_mut() {
                    ops.clear();
                }
            }
            _ => {
                return Err(AmqpError::precondition_failed(
                    "channel is not transactional",
                ))
            }
        }
        self.send(
            ch,
            AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
        );
        Ok(())
    }
}
