//! What a channel holds for the publishes it receives: the content being assembled
//! ([`ContentAssembly`]), publisher-confirm state ([`ConfirmState`]) and the operations an open
//! transaction buffers ([`TxOp`]). Only the connection task touches these.

use super::*;
use crate::message::{Account, Held};

/// A publish whose content is still arriving.
#[derive(Debug)]
pub(crate) struct ContentAssembly {
    /// The `basic.publish` that opened it.
    pub(crate) publish: basic::Publish,
    /// The header, once received: properties and declared body size.
    pub(crate) header: Option<(basic::AMQPProperties, u64)>,
    /// The body frames so far, copied out of the read buffer. A body that comes in one frame
    /// never lands here: it stays a slice of the read buffer (see the connection's
    /// `content_body`). Copying the pieces of a longer body costs nothing more than joining
    /// them at the end did, and a frame no longer pins its read-buffer block.
    body: BytesMut,
    /// Bytes received so far.
    pub(crate) received: u64,
    /// The memory accounting's charge for `body`, made at its first copied frame (a one-frame
    /// body costs no accounting here), grown with it, and given back when the publish is
    /// complete and its message charges for itself, or when the channel drops it.
    held: Option<Held>,
}

impl ContentAssembly {
    /// The assembly opened by `publish`.
    pub(crate) fn new(publish: basic::Publish) -> Self {
        Self {
            publish,
            header: None,
            body: BytesMut::new(),
            received: 0,
            held: None,
        }
    }

    /// Appends a body frame (copied), charging it to `account`.
    pub(crate) fn push(&mut self, piece: &[u8], account: &Arc<dyn Account>) {
        let bytes = piece.len() as u64;
        match &mut self.held {
            Some(held) => held.grow(bytes),
            None => self.held = Some(Held::charge(account, bytes)),
        }
        self.body.extend_from_slice(piece);
    }

    /// The complete body, from the copied frames.
    pub(crate) fn take_body(&mut self) -> Bytes {
        std::mem::take(&mut self.body).freeze()
    }
}

/// Publisher-confirm state of a channel in confirm mode.
#[derive(Debug, Default)]
pub(crate) struct ConfirmState {
    /// The sequence number of the last publish (they start at 1).
    pub(crate) last_seq: u64,
    /// Publishes waiting for a store; while any is, acks are sent one by one.
    pub(crate) pending_store: usize,
    /// The highest publish confirmed but not yet acked on the wire (coalesced into one
    /// `basic.ack multiple=true` when the read buffer is drained).
    pub(crate) ack_upto: Option<u64>,
}

/// One operation buffered by a transaction until `tx.commit`.
#[derive(Debug)]
pub(crate) enum TxOp {
    /// A complete publish, checked and routed when it arrived.
    Publish(Box<TxPublish>),
    /// An ack.
    Ack(u64, bool),
    /// A nack or reject: tag, multiple, requeue.
    Nack(u64, bool, bool),
}

/// A publish in a transaction. As in RabbitMQ 3.10, it is routed when it arrives and keeps
/// the queues it was routed to: at `tx.commit` it goes to those of them that exist then (by
/// name, so a queue deleted and declared again gets it), whatever bindings or exchanges changed
/// in between; mandatory, it is returned at the commit when none is left.
#[derive(Debug)]
pub(crate) struct TxPublish {
    /// The method (exchange, routing key, mandatory flag).
    pub(crate) publish: basic::Publish,
    /// The message, its properties checked (and `reply_to` substituted) at the publish.
    pub(crate) message: Arc<crate::message::Message>,
    /// The queues routing found at the publish; `None` for a direct reply-to publish, handed
    /// to the waiting channel at the commit.
    pub(crate) routed: Option<Vec<Arc<Queue>>>,
}

impl TxOp {
    /// True when this buffered ack, nack or reject settles delivery `tag` at the commit.
    pub(crate) fn settles(&self, tag: u64) -> bool {
        match *self {
            TxOp::Ack(t, multiple) | TxOp::Nack(t, multiple, _) => {
                t == tag || (multiple && (t == 0 || tag <= t))
            }
            TxOp::Publish(_) => false,
        }
    }
}
